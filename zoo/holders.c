/* zoo_holders: extra references to objects that someone else made, never given back.
 *
 * It stands in for real extensions that hold on to what they are given: the argument, a
 * borrowed list item, a kwargs dict, the args tuple of tp_init, an object they made once at
 * import. The object's own creation site is where Python (or the import) made it; the leak
 * is the line that takes the reference that is never released.
 *
 * Each leaking line carries a marker comment `zoo_holders:NAME` on the line that takes that
 * reference. The controls take references too and give every one back; their lines carry
 * `zoo_holders:control_NAME` for reference. Tests find the lines by their markers, so lines
 * can move freely.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030A0000
/* Py_NewRef is new in 3.10. */
static inline PyObject *Py_NewRef(PyObject *obj) {
    Py_INCREF(obj);
    return obj;
}
#endif

/* One reference too many on the argument. */
static PyObject *keep_arg(PyObject *module, PyObject *obj) {
    Py_INCREF(obj); /* zoo_holders:incref_arg */
    Py_RETURN_NONE;
}

/* Checks that `lst` is a non-empty list, for keep_item and borrow_ok. */
static int check_nonempty_list(const char *name, PyObject *lst) {
    if (!PyList_Check(lst)) {
        PyErr_Format(PyExc_TypeError, "%s takes a list, not %.200s", name, Py_TYPE(lst)->tp_name);
        return -1;
    }
    if (PyList_GET_SIZE(lst) == 0) {
        PyErr_Format(PyExc_TypeError, "%s takes a non-empty list", name);
        return -1;
    }
    return 0;
}

/* A borrowed item made into an owned one, and then forgotten. */
static PyObject *keep_item(PyObject *module, PyObject *lst) {
    if (check_nonempty_list("keep_item", lst) < 0) {
        return NULL;
    }
    PyObject *item = PyList_GetItem(lst, 0); /* borrowed */
    if (item == NULL) {
        return NULL;
    }
    Py_INCREF(item); /* zoo_holders:borrowed_item */
    /* forgot Py_DECREF(item) */
    Py_RETURN_NONE;
}

/* A tuple made once at import and kept in a C static (not immortal on 3.12+). */
static PyObject *singleton_obj = NULL;

/* Hands the singleton out with one reference too many. */
static PyObject *singleton(PyObject *module, PyObject *unused) {
    return Py_NewRef(Py_NewRef(singleton_obj)); /* zoo_holders:singleton */
}

/* Store: set(**kwargs) keeps the kwargs dict and drops the one it kept before. */
typedef struct {
    PyObject_HEAD
    PyObject *kw;
} StoreObject;

static PyObject *store_set(StoreObject *self, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0) {
        return PyErr_Format(PyExc_TypeError, "Store.set takes keyword arguments only");
    }
    Py_XINCREF(kwargs); /* zoo_holders:kwargs */
    self->kw = kwargs;  /* forgot Py_XDECREF of the previous self->kw */
    Py_RETURN_NONE;
}

static void store_dealloc(StoreObject *self) {
    Py_XDECREF(self->kw); /* the current one is released: only the replaced ones leak */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef store_methods[] = {
    {"set", (PyCFunction)(void (*)(void))store_set, METH_VARARGS | METH_KEYWORDS,
     "set(**kwargs): keep the kwargs dict, leaking the one kept before."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zoo_holders.Store",
    .tp_basicsize = sizeof(StoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)store_dealloc,
    .tp_methods = store_methods,
    .tp_doc = "Store(): set(**kwargs) keeps the kwargs dict and leaks the one it replaces.",
};

/* Keeper: tp_init keeps its args tuple, and tp_dealloc forgets it. */
typedef struct {
    PyObject_HEAD
    PyObject *args;
} KeeperObject;

static int keeper_init(KeeperObject *self, PyObject *args, PyObject *kwds) {
    Py_INCREF(args); /* zoo_holders:init_args */
    self->args = args;
    return 0;
}

static void keeper_dealloc(KeeperObject *self) {
    /* forgot Py_XDECREF(self->args) */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject KeeperType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zoo_holders.Keeper",
    .tp_basicsize = sizeof(KeeperObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)keeper_init,
    .tp_dealloc = (destructor)keeper_dealloc,
    .tp_doc = "Keeper(*args, **kwargs): keeps its args tuple and forgets it when deallocated.",
};

/* Box: the getter `value` makes a new 1-tuple on each access, caches it, and returns it with
 * one reference too many. */
typedef struct {
    PyObject_HEAD
    long n;
    PyObject *cache;
} BoxObject;

static PyObject *box_get_value(BoxObject *self, void *closure) {
    self->n += 1;
    PyObject *result = Py_BuildValue("(l)", self->n); /* the caller's reference */
    if (result == NULL) {
        return NULL;
    }
    Py_INCREF(result); /* the cache's reference */
    Py_XSETREF(self->cache, result);
    Py_INCREF(result); /* zoo_holders:getter */
    /* that last one is one too many: the caller's and the cache's are already taken */
    return result;
}

static void box_dealloc(BoxObject *self) {
    Py_XDECREF(self->cache);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyGetSetDef box_getset[] = {
    {"value", (getter)box_get_value, NULL,
     "A new (n,) on each access, n counting the accesses; each leaks one reference.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BoxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zoo_holders.Box",
    .tp_basicsize = sizeof(BoxObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)box_dealloc,
    .tp_getset = box_getset,
    .tp_doc = "Box(): the `value` getter returns a new cached (n,) with one reference too many.",
};

/* Controls: none of these may ever be reported as a leak. */

/* Cache: put(obj) replaces the held object and releases the old one. */
typedef struct {
    PyObject_HEAD
    PyObject *held;
} CacheObject;

static PyObject *cache_put(CacheObject *self, PyObject *obj) {
    Py_INCREF(obj); /* zoo_holders:control_cache */
    Py_XSETREF(self->held, obj);
    Py_RETURN_NONE;
}

static void cache_dealloc(CacheObject *self) {
    Py_XDECREF(self->held);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef cache_methods[] = {
    {"put", (PyCFunction)cache_put, METH_O, "put(obj): hold obj, releasing what was held (control)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zoo_holders.Cache",
    .tp_basicsize = sizeof(CacheObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)cache_dealloc,
    .tp_methods = cache_methods,
    .tp_doc = "Cache(): put(obj) holds one object, replacing and releasing the last (control).",
};

/* A borrowed item made into an owned one, used, and released. */
static PyObject *borrow_ok(PyObject *module, PyObject *lst) {
    if (check_nonempty_list("borrow_ok", lst) < 0) {
        return NULL;
    }
    PyObject *item = PyList_GetItem(lst, 0); /* borrowed */
    if (item == NULL) {
        return NULL;
    }
    Py_INCREF(item); /* zoo_holders:control_borrow */
    Py_hash_t hash = PyObject_Hash(item);
    Py_DECREF(item);
    if (hash == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Pair: tp_init takes the reference and tp_dealloc releases it, one balance in two functions. */
typedef struct {
    PyObject_HEAD
    PyObject *first;
} PairObject;

static int pair_init(PairObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"first", NULL};
    PyObject *first;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &first)) {
        return -1;
    }
    Py_INCREF(first); /* zoo_holders:control_pair */
    Py_XSETREF(self->first, first);
    return 0;
}

static void pair_dealloc(PairObject *self) {
    Py_XDECREF(self->first);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zoo_holders.Pair",
    .tp_basicsize = sizeof(PairObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)pair_init,
    .tp_dealloc = (destructor)pair_dealloc,
    .tp_doc = "Pair(first): holds first from tp_init to tp_dealloc (control).",
};

static PyMethodDef holders_methods[] = {
    {"keep_arg", keep_arg, METH_O, "keep_arg(obj): take one extra reference to obj."},
    {"keep_item", keep_item, METH_O,
     "keep_item(lst): take a reference to the borrowed lst[0] and forget it (lst: a non-empty list)."},
    {"singleton", singleton, METH_NOARGS,
     "singleton(): the tuple made at import, returned with one reference too many."},
    {"borrow_ok", borrow_ok, METH_O,
     "borrow_ok(lst): take, hash and release a reference to the borrowed lst[0] (control)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef holders_module = {
    PyModuleDef_HEAD_INIT, "zoo_holders",
    "Extra references to objects made elsewhere, never released, for refhunt's tests.", 0,
    holders_methods,
};

static int add_type(PyObject *module, const char *name, PyTypeObject *type) {
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit_zoo_holders(void) {
    if (PyType_Ready(&StoreType) < 0 || PyType_Ready(&KeeperType) < 0 ||
        PyType_Ready(&BoxType) < 0 || PyType_Ready(&CacheType) < 0 ||
        PyType_Ready(&PairType) < 0) {
        return NULL;
    }
    if (singleton_obj == NULL) {
        singleton_obj = Py_BuildValue("(si)", "zoo-singleton", 42);
        if (singleton_obj == NULL) {
            return NULL;
        }
    }
    PyObject *module = PyModule_Create(&holders_module);
    if (module == NULL) {
        return NULL;
    }
    if (add_type(module, "Store", &StoreType) < 0 || add_type(module, "Keeper", &KeeperType) < 0 ||
        add_type(module, "Box", &BoxType) < 0 || add_type(module, "Cache", &CacheType) < 0 ||
        add_type(module, "Pair", &PairType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
