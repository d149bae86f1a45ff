/* The zoo: a C extension with one function per reference-leak pattern, and controls that
 * must never be reported. It stands in for the users' extensions in refhunt's tests.
 *
 * Each leaking line carries a marker comment `zoo:NAME`. Tests find the line by its marker,
 * so lines can move freely.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>

/* The seed's leak: a new reference from PyLong_FromLong, never released. */
static PyObject *leak_new_refs(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"value", "count", NULL};
    int value, count;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii", kwlist, &value, &count)) {
        return NULL;
    }
    for (int i = 0; i < count; ++i) {
        PyLong_FromLong(value); /* zoo:new_ref */
    }
    Py_RETURN_NONE;
}

/* One reference too many on the argument. */
static PyObject *leak_incref(PyObject *module, PyObject *arg) {
    Py_INCREF(arg); /* zoo:incref (the object's own creation site is where Python made it) */
    Py_RETURN_NONE;
}

/* A new reference dropped on the error path. */
static PyObject *leak_on_error(PyObject *module, PyObject *arg) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *item = PyLong_FromLong(value); /* zoo:error_path */
    if (item == NULL) {
        return NULL;
    }
    if (PyObject_SetAttrString(Py_None, "zoo_attribute", item) < 0) {
        return NULL; /* forgot Py_DECREF(item) */
    }
    Py_DECREF(item);
    Py_RETURN_NONE;
}

/* PyList_Append does not steal: the new reference is never released. */
static PyObject *leak_append(PyObject *module, PyObject *args) {
    PyObject *list;
    int count;
    if (!PyArg_ParseTuple(args, "O!i", &PyList_Type, &list, &count)) {
        return NULL;
    }
    for (int i = 0; i < count; ++i) {
        PyObject *item = PyLong_FromLong(100000 + i); /* zoo:append */
        if (item == NULL || PyList_Append(list, item) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* PyDict_SetItem does not steal either. */
static PyObject *leak_setitem(PyObject *module, PyObject *args) {
    PyObject *dict;
    int count;
    if (!PyArg_ParseTuple(args, "O!i", &PyDict_Type, &dict, &count)) {
        return NULL;
    }
    for (int i = 0; i < count; ++i) {
        PyObject *key = PyLong_FromLong(i);
        PyObject *value = PyLong_FromLong(400000 + i); /* zoo:setitem */
        if (key == NULL || value == NULL || PyDict_SetItem(dict, key, value) < 0) {
            return NULL;
        }
        Py_DECREF(key);
    }
    Py_RETURN_NONE;
}

/* "O" takes its own reference, so the new one passed in leaks. */
static PyObject *leak_build_value(PyObject *module, PyObject *arg) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return Py_BuildValue("(O)", PyLong_FromLong(value)); /* zoo:build_value */
}

/* A leaked list that owns its items: the list is a direct leak, the items indirect ones. */
static PyObject *leak_container(PyObject *module, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "n must be >= 0");
    }
    PyObject *list = PyList_New(n); /* zoo:container */
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyList_SET_ITEM(list, i, PyLong_FromSsize_t(200000 + i)); /* zoo:container_item */
    }
    Py_RETURN_NONE;
}

/* Floats and tuples come from freelists on many versions. */
static PyObject *leak_float(PyObject *module, PyObject *args) {
    double value;
    int count;
    if (!PyArg_ParseTuple(args, "di", &value, &count)) {
        return NULL;
    }
    for (int i = 0; i < count; ++i) {
        PyFloat_FromDouble(value); /* zoo:float */
    }
    Py_RETURN_NONE;
}

static PyObject *leak_tuple(PyObject *module, PyObject *arg) {
    long count = PyLong_AsLong(arg);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (long i = 0; i < count; ++i) {
        PyObject *t = PyTuple_New(2); /* zoo:tuple */
        if (t == NULL) {
            return NULL;
        }
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(t, 0, Py_None);
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(t, 1, Py_None);
    }
    Py_RETURN_NONE;
}

/* A leak made on a thread that Python did not create. */
struct thread_job {
    long value;
    int count;
};

static void *leak_on_thread(void *arg) {
    struct thread_job *job = arg;
    PyGILState_STATE gil = PyGILState_Ensure();
    for (int i = 0; i < job->count; ++i) {
        PyLong_FromLong(job->value); /* zoo:thread */
    }
    PyGILState_Release(gil);
    return NULL;
}

static PyObject *leak_from_thread(PyObject *module, PyObject *args) {
    struct thread_job job;
    if (!PyArg_ParseTuple(args, "li", &job.value, &job.count)) {
        return NULL;
    }
    pthread_t thread;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = pthread_create(&thread, NULL, leak_on_thread, &job);
    if (err == 0) {
        pthread_join(thread, NULL);
    }
    Py_END_ALLOW_THREADS
    if (err != 0) {
        return PyErr_Format(PyExc_OSError, "pthread_create failed: %d", err);
    }
    Py_RETURN_NONE;
}

/* PyErr_Fetch hands over three references; dropping them leaks the exception. */
static PyObject *leak_fetched_error(PyObject *module, PyObject *unused) {
    PyObject *type, *value, *traceback;
    PyErr_SetString(PyExc_RuntimeError, "zoo: fetched and dropped"); /* zoo:fetch */
    PyErr_Fetch(&type, &value, &traceback);
    Py_RETURN_NONE;
}

/* A type whose tp_dealloc forgets its member. */
typedef struct {
    PyObject_HEAD
    PyObject *item;
} HolderObject;

static PyObject *holder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    long value;
    if (!PyArg_ParseTuple(args, "l", &value)) {
        return NULL;
    }
    HolderObject *self = (HolderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->item = PyLong_FromLong(value); /* zoo:dealloc_member */
    return (PyObject *)self;
}

static void holder_dealloc(HolderObject *self) {
    /* forgot Py_XDECREF(self->item) */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject HolderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zoo.Holder",
    .tp_basicsize = sizeof(HolderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = holder_new,
    .tp_dealloc = (destructor)holder_dealloc,
    .tp_doc = "Holds an int and forgets it when deallocated.",
};

/* Controls: none of these may ever be reported as a leak. */

/* A cache filled once and held by a C static. */
static PyObject *static_cache = NULL;

static PyObject *cached(PyObject *module, PyObject *unused) {
    if (static_cache == NULL) {
        static_cache = PyDict_New(); /* zoo:static_cache */
        if (static_cache == NULL) {
            return NULL;
        }
        for (int i = 0; i < 16; ++i) {
            PyObject *key = PyLong_FromLong(300000 + i);
            if (key == NULL || PyDict_SetItem(static_cache, key, key) < 0) {
                return NULL;
            }
            Py_DECREF(key);
        }
    }
    Py_INCREF(static_cache);
    return static_cache;
}

/* A cache in a buffer of the extension's own, that a C static points to: what the buffer
 * holds is held outside Python (orjson keeps its key cache so). */
static PyObject **buffer_cache = NULL;

static PyObject *cache_in_buffer(PyObject *module, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "n must be >= 0");
    }
    if (buffer_cache == NULL) {
        buffer_cache = PyMem_Calloc(n + 1, sizeof(PyObject *));
        if (buffer_cache == NULL) {
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < n; ++i) {
            buffer_cache[i] = PyLong_FromSsize_t(500000 + i); /* zoo:buffer_cache */
            if (buffer_cache[i] == NULL) {
                return NULL;
            }
        }
    }
    Py_RETURN_NONE;
}

/* A C static keeps a str's text, not the str: a docstring set as tp_doc is kept so. The
 * reference taken for it is explained by the pointer into the str. */
/* volatile: a static that is written and never read would be optimized away. */
static const char *volatile kept_text = NULL;

static PyObject *keep_text(PyObject *module, PyObject *arg) {
    if (!PyUnicode_Check(arg)) {
        return PyErr_Format(PyExc_TypeError, "keep_text takes a str");
    }
    Py_INCREF(arg); /* released never: the text must stay valid */
    kept_text = PyUnicode_AsUTF8(arg);
    if (kept_text == NULL) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The module's state (PyModule_GetState) keeps the last object given to it. */
typedef struct {
    PyObject *kept;
} zoo_state;

static PyObject *keep_in_state(PyObject *module, PyObject *arg) {
    zoo_state *state = PyModule_GetState(module);
    Py_INCREF(arg);
    Py_XSETREF(state->kept, arg);
    Py_RETURN_NONE;
}

/* A module-level list that grows: reachable from Python. */
static PyObject *remember(PyObject *module, PyObject *arg) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *registry = PyObject_GetAttrString(module, "_registry");
    if (registry == NULL) {
        return NULL;
    }
    PyObject *item = PyLong_FromLong(value); /* zoo:registry */
    int err = item == NULL ? -1 : PyList_Append(registry, item);
    Py_XDECREF(item);
    Py_DECREF(registry);
    if (err < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Cyclic garbage: a list that contains itself, dropped. The collector frees it. */
static PyObject *make_cycle(PyObject *module, PyObject *arg) {
    long count = PyLong_AsLong(arg);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (long i = 0; i < count; ++i) {
        PyObject *list = PyList_New(0); /* zoo:cycle */
        if (list == NULL || PyList_Append(list, list) < 0) {
            return NULL;
        }
        Py_DECREF(list);
    }
    Py_RETURN_NONE;
}

/* Small ints and interned strings are shared by the interpreter: extra references to them
 * are never reported. */
static PyObject *touch_shared(PyObject *module, PyObject *arg) {
    long count = PyLong_AsLong(arg);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (long i = 0; i < count; ++i) {
        PyLong_FromLong(7);
        PyUnicode_InternFromString("zoo_interned_name");
    }
    Py_RETURN_NONE;
}

static PyMethodDef zoo_methods[] = {
    {"leakNewRefs", (PyCFunction)(void (*)(void))leak_new_refs, METH_VARARGS | METH_KEYWORDS,
     "leakNewRefs(value, count): leak `count` new ints, as the seed chapter does."},
    {"leak_incref", leak_incref, METH_O, "Take one extra reference to the argument."},
    {"leak_on_error", leak_on_error, METH_O, "Raise, leaking a new int on the error path."},
    {"leak_append", leak_append, METH_VARARGS, "leak_append(list, count): append new ints without releasing them."},
    {"leak_setitem", leak_setitem, METH_VARARGS, "leak_setitem(dict, count): set new ints without releasing them."},
    {"leak_build_value", leak_build_value, METH_O, "Return (value,) built with \"O\" from a new reference."},
    {"leak_container", leak_container, METH_O, "Leak a list of n new ints."},
    {"leak_float", leak_float, METH_VARARGS, "leak_float(value, count): leak new floats."},
    {"leak_tuple", leak_tuple, METH_O, "Leak `count` new 2-tuples."},
    {"leak_from_thread", leak_from_thread, METH_VARARGS, "leak_from_thread(value, count): leak ints on a C thread."},
    {"leak_fetched_error", leak_fetched_error, METH_NOARGS, "Set an error, fetch it, drop it."},
    {"cached", cached, METH_NOARGS, "A dict created once and kept in a C static (control)."},
    {"remember", remember, METH_O, "Append a new int to the module's _registry list (control)."},
    {"make_cycle", make_cycle, METH_O, "Make `count` self-referencing lists and drop them (control)."},
    {"touch_shared", touch_shared, METH_O, "Take references to small ints and interned strings (control)."},
    {"cache_in_buffer", cache_in_buffer, METH_O, "Fill a PyMem buffer held by a C static with n new ints, once (control)."},
    {"keep_text", keep_text, METH_O, "Keep a char * to the str's text in a C static (control)."},
    {"keep_in_state", keep_in_state, METH_O, "Keep the argument in the module's state, replacing the last (control)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef zoo_module = {
    PyModuleDef_HEAD_INIT, "zoo", "Reference-leak patterns for refhunt's tests.", sizeof(zoo_state),
    zoo_methods,
};

PyMODINIT_FUNC PyInit_zoo(void) {
    if (PyType_Ready(&HolderType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&zoo_module);
    if (module == NULL) {
        return NULL;
    }
    PyObject *registry = PyList_New(0);
    if (registry == NULL || PyModule_AddObject(module, "_registry", registry) < 0) {
        Py_XDECREF(registry);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&HolderType);
    if (PyModule_AddObject(module, "Holder", (PyObject *)&HolderType) < 0) {
        Py_DECREF(&HolderType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
