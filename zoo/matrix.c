/* zoo_matrix: one leak per object type, for refhunt's type matrix (issue 11, "no blind spots").
 *
 * `leak(kind, n)` makes n NEW objects of one kind in C and drops every reference it gets back,
 * so each object is a leaked reference. `make(kind, n)` makes the same objects with the same
 * code and returns them in a list, so that tests can check, without refhunt, that the objects
 * really are new and distinct (their ids, types and refcounts).
 *
 * Each creation is on its own line, marked `zoo_matrix:NAME`: NAME is the kind for the object
 * that leaks, and KIND_something for what it holds (the items of a container, which are
 * indirectly leaked). What CPython makes inside the same call (a range's stop and length, an
 * exception's args) shares the kind's line. Tests find the lines by their markers, so lines
 * can move freely.
 *
 * Values depend on i, so that nothing is cached or shared: no small int (-5..256), no empty or
 * one-character str or bytes, no interned str.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

/* Longer than 64 characters: not a "short" str or bytes on any version. */
#define LONG_TEXT "zoo_matrix: a text that is longer than sixty-four characters, on purpose: "

/* Two heap types made with PyType_FromSpec at import (module attributes Plain and Tracked). */
static PyObject *plain_type = NULL;   /* without Py_TPFLAGS_HAVE_GC */
static PyObject *tracked_type = NULL; /* with Py_TPFLAGS_HAVE_GC */

typedef struct {
    PyObject_HEAD
    long value;
} PlainObject;

typedef struct {
    PyObject_HEAD
    PyObject *item;
} TrackedObject;

static void plain_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    type->tp_free(self);
    Py_DECREF(type); /* instances of heap types own a reference to their type */
}

static int tracked_traverse(PyObject *self, visitproc visit, void *arg) {
    Py_VISIT(((TrackedObject *)self)->item);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int tracked_clear(PyObject *self) {
    Py_CLEAR(((TrackedObject *)self)->item);
    return 0;
}

static void tracked_dealloc(PyObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tracked_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyType_Slot plain_slots[] = {
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_doc, "zoo_matrix.Plain: a heap type without GC, holding a C long."},
    {0, NULL},
};

static PyType_Spec plain_spec = {
    "zoo_matrix.Plain", sizeof(PlainObject), 0, Py_TPFLAGS_DEFAULT, plain_slots,
};

static PyType_Slot tracked_slots[] = {
    {Py_tp_dealloc, tracked_dealloc},
    {Py_tp_traverse, tracked_traverse},
    {Py_tp_clear, tracked_clear},
    {Py_tp_doc, "zoo_matrix.Tracked: a heap type with GC, holding one object."},
    {0, NULL},
};

static PyType_Spec tracked_spec = {
    "zoo_matrix.Tracked", sizeof(TrackedObject), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    tracked_slots,
};

/* One maker per kind: stores a new reference to a new object made from i in *out and returns
 * 0, or returns -1 with an exception set. Whatever the object holds was made here too and is
 * owned by it alone. The makers store through `out` rather than return the object, so that
 * no creation is a tail call: the compiler keeps the maker's frame, and the creation's return
 * address, on the marked line. */

static int make_str_ascii(long i, PyObject **out) {
    *out = PyUnicode_FromFormat("k%ld", 1000 + i); /* zoo_matrix:str_ascii */
    return *out == NULL ? -1 : 0;
}

static int make_str_ascii_long(long i, PyObject **out) {
    *out = PyUnicode_FromFormat("%s%ld", LONG_TEXT, i); /* zoo_matrix:str_ascii_long */
    return *out == NULL ? -1 : 0;
}

/* A str made straight from UTF-8 bytes (no format, no writer). */
static int make_str_utf8(long i, PyObject **out) {
    char buf[64];
    int len = snprintf(buf, sizeof buf, "u\xc3\xa9%ld", 1000 + i);
    *out = PyUnicode_FromStringAndSize(buf, len); /* zoo_matrix:str_utf8 */
    return *out == NULL ? -1 : 0;
}

static int make_str_latin1(long i, PyObject **out) {
    *out = PyUnicode_FromFormat("%c%ld", 0xE9, i); /* zoo_matrix:str_latin1 */
    return *out == NULL ? -1 : 0;
}

static int make_str_ucs2(long i, PyObject **out) {
    *out = PyUnicode_FromFormat("%c%ld", 0x20AC, i); /* zoo_matrix:str_ucs2 */
    return *out == NULL ? -1 : 0;
}

static int make_str_ucs4(long i, PyObject **out) {
    *out = PyUnicode_FromFormat("%c%ld", 0x1F600 + (int)(i % 64), i); /* zoo_matrix:str_ucs4 */
    return *out == NULL ? -1 : 0;
}

static int make_bytes_short(long i, PyObject **out) {
    *out = PyBytes_FromFormat("b%ld", 1000 + i); /* zoo_matrix:bytes_short */
    return *out == NULL ? -1 : 0;
}

static int make_bytes_long(long i, PyObject **out) {
    *out = PyBytes_FromFormat("%s%ld", LONG_TEXT, i); /* zoo_matrix:bytes_long */
    return *out == NULL ? -1 : 0;
}

/* A bytearray has its own buffer besides the object. */
static int make_bytearray(long i, PyObject **out) {
    char buf[64];
    int len = snprintf(buf, sizeof buf, "bytearray %ld", i);
    *out = PyByteArray_FromStringAndSize(buf, len); /* zoo_matrix:bytearray */
    return *out == NULL ? -1 : 0;
}

/* Past the small ints 3.15 caches (-5..1024): each call makes a new int. */
static int make_int_medium(long i, PyObject **out) {
    *out = PyLong_FromLong(5000 + i); /* zoo_matrix:int_medium */
    return *out == NULL ? -1 : 0;
}

/* Over 2**64: (1 + i) * 10**24, parsed from its digits. */
static int make_int_big(long i, PyObject **out) {
    char buf[64];
    snprintf(buf, sizeof buf, "%ld000000000000000000000000", 1 + i);
    *out = PyLong_FromString(buf, NULL, 10); /* zoo_matrix:int_big */
    return *out == NULL ? -1 : 0;
}

static int make_float(long i, PyObject **out) {
    *out = PyFloat_FromDouble(0.5 + (double)i); /* zoo_matrix:float */
    return *out == NULL ? -1 : 0;
}

static int make_complex(long i, PyObject **out) {
    *out = PyComplex_FromDoubles(0.5 + (double)i, 1.5); /* zoo_matrix:complex */
    return *out == NULL ? -1 : 0;
}

/* A tuple of 1, 2 or 3 new ints. */
static int make_tuple(long i, PyObject **out) {
    Py_ssize_t len = 1 + i % 3;
    PyObject *tuple = PyTuple_New(len); /* zoo_matrix:tuple */
    if (tuple == NULL) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < len; ++k) {
        PyObject *item = PyLong_FromLong(100000 + 3 * i + k); /* zoo_matrix:tuple_item */
        if (item == NULL) {
            Py_DECREF(tuple);
            return -1;
        }
        PyTuple_SET_ITEM(tuple, k, item);
    }
    *out = tuple;
    return 0;
}

static int make_list_empty(long i, PyObject **out) {
    *out = PyList_New(0); /* zoo_matrix:list_empty */
    return *out == NULL ? -1 : 0;
}

/* A list of two new ints. */
static int make_list(long i, PyObject **out) {
    PyObject *list = PyList_New(2); /* zoo_matrix:list */
    if (list == NULL) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < 2; ++k) {
        PyObject *item = PyLong_FromLong(100000 + 2 * i + k); /* zoo_matrix:list_item */
        if (item == NULL) {
            Py_DECREF(list);
            return -1;
        }
        PyList_SET_ITEM(list, k, item);
    }
    *out = list;
    return 0;
}

/* A dict with one new str key (a str-keyed dict, whose keys the dict does not traverse). */
static int make_dict_small(long i, PyObject **out) {
    PyObject *dict = PyDict_New(); /* zoo_matrix:dict_small */
    if (dict == NULL) {
        return -1;
    }
    PyObject *key = PyUnicode_FromFormat("key%ld", i); /* zoo_matrix:dict_small_key */
    if (key == NULL || PyDict_SetItem(dict, key, Py_None) < 0) {
        Py_XDECREF(key);
        Py_DECREF(dict);
        return -1;
    }
    Py_DECREF(key);
    *out = dict;
    return 0;
}

/* A dict with 10 keys (small ints, shared) and 10 new int values: a bigger key table. */
static int make_dict_10(long i, PyObject **out) {
    PyObject *dict = PyDict_New(); /* zoo_matrix:dict_10 */
    if (dict == NULL) {
        return -1;
    }
    for (long k = 0; k < 10; ++k) {
        PyObject *key = PyLong_FromLong(k);
        PyObject *value = PyLong_FromLong(100000 + 10 * i + k); /* zoo_matrix:dict_10_value */
        int err = (key == NULL || value == NULL) ? -1 : PyDict_SetItem(dict, key, value);
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (err < 0) {
            Py_DECREF(dict);
            return -1;
        }
    }
    *out = dict;
    return 0;
}

/* Adds one new int to `set`, a new set or frozenset (PySet_Add may fill a brand new
 * frozenset), and hands it out; releases it on failure. */
static int add_new_int(PyObject *set, long i, PyObject **out) {
    if (set == NULL) {
        return -1;
    }
    PyObject *item = PyLong_FromLong(100000 + i); /* zoo_matrix:set_item */
    if (item == NULL || PySet_Add(set, item) < 0) {
        Py_XDECREF(item);
        Py_DECREF(set);
        return -1;
    }
    Py_DECREF(item);
    *out = set;
    return 0;
}

/* A set of one new int. */
static int make_set(long i, PyObject **out) {
    return add_new_int(PySet_New(NULL), i, out); /* zoo_matrix:set */
}

/* A frozenset of one new int. */
static int make_frozenset(long i, PyObject **out) {
    return add_new_int(PyFrozenSet_New(NULL), i, out); /* zoo_matrix:frozenset */
}

/* slice(new int, None, None). */
static int make_slice(long i, PyObject **out) {
    PyObject *start = PyLong_FromLong(100000 + i); /* zoo_matrix:slice_start */
    if (start == NULL) {
        return -1;
    }
    *out = PySlice_New(start, NULL, NULL); /* zoo_matrix:slice */
    Py_DECREF(start);
    return *out == NULL ? -1 : 0;
}

/* range(5000 + i): it holds two new ints made on this line, its stop (the argument that
 * PyObject_CallFunction builds) and its length. A range has no tp_traverse. */
static int make_range(long i, PyObject **out) {
    *out = PyObject_CallFunction((PyObject *)&PyRange_Type, "l", 5000 + i); /* zoo_matrix:range */
    return *out == NULL ? -1 : 0;
}

/* A memoryview of a new bytes: the view holds a managed buffer, which holds the bytes. */
static int make_memoryview(long i, PyObject **out) {
    PyObject *base = PyBytes_FromFormat("memoryview %ld", i); /* zoo_matrix:memoryview_base */
    if (base == NULL) {
        return -1;
    }
    *out = PyMemoryView_FromObject(base); /* zoo_matrix:memoryview */
    Py_DECREF(base);
    return *out == NULL ? -1 : 0;
}

/* ValueError(100000 + i): it holds its args, a new tuple of a new int, both made on this line. */
static int make_exception(long i, PyObject **out) {
    *out = PyObject_CallFunction(PyExc_ValueError, "l", 100000 + i); /* zoo_matrix:exception */
    return *out == NULL ? -1 : 0;
}

/* The bound method `[].append` (a builtin_function_or_method), which holds its new list. */
static int make_bound_method(long i, PyObject **out) {
    PyObject *self = PyList_New(0); /* zoo_matrix:bound_method_self */
    if (self == NULL) {
        return -1;
    }
    *out = PyObject_GetAttrString(self, "append"); /* zoo_matrix:bound_method */
    Py_DECREF(self);
    return *out == NULL ? -1 : 0;
}

/* An instance of a heap type without GC. */
static int make_heap_plain(long i, PyObject **out) {
    PyTypeObject *type = (PyTypeObject *)plain_type;
    PyObject *obj = type->tp_alloc(type, 0); /* zoo_matrix:heap_plain */
    if (obj == NULL) {
        return -1;
    }
    ((PlainObject *)obj)->value = i;
    *out = obj;
    return 0;
}

/* An instance of a heap type with GC, holding a new int. */
static int make_heap_gc(long i, PyObject **out) {
    PyTypeObject *type = (PyTypeObject *)tracked_type;
    PyObject *obj = type->tp_alloc(type, 0); /* zoo_matrix:heap_gc */
    if (obj == NULL) {
        return -1;
    }
    PyObject *item = PyLong_FromLong(100000 + i); /* zoo_matrix:heap_gc_item */
    if (item == NULL) {
        Py_DECREF(obj);
        return -1;
    }
    ((TrackedObject *)obj)->item = item;
    *out = obj;
    return 0;
}

typedef int (*maker)(long i, PyObject **out);

static const struct {
    const char *kind;
    maker make;
} kinds[] = {
    {"str_ascii", make_str_ascii},
    {"str_ascii_long", make_str_ascii_long},
    {"str_utf8", make_str_utf8},
    {"str_latin1", make_str_latin1},
    {"str_ucs2", make_str_ucs2},
    {"str_ucs4", make_str_ucs4},
    {"bytes_short", make_bytes_short},
    {"bytes_long", make_bytes_long},
    {"bytearray", make_bytearray},
    {"int_medium", make_int_medium},
    {"int_big", make_int_big},
    {"float", make_float},
    {"complex", make_complex},
    {"tuple", make_tuple},
    {"list_empty", make_list_empty},
    {"list", make_list},
    {"dict_small", make_dict_small},
    {"dict_10", make_dict_10},
    {"set", make_set},
    {"frozenset", make_frozenset},
    {"slice", make_slice},
    {"range", make_range},
    {"memoryview", make_memoryview},
    {"exception", make_exception},
    {"bound_method", make_bound_method},
    {"heap_plain", make_heap_plain},
    {"heap_gc", make_heap_gc},
};

#define N_KINDS ((int)(sizeof kinds / sizeof kinds[0]))

/* Parses (kind: str, n: int) and finds the kind's maker. */
static maker parse(PyObject *args, Py_ssize_t *n) {
    const char *kind;
    if (!PyArg_ParseTuple(args, "sn", &kind, n)) {
        return NULL;
    }
    if (*n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return NULL;
    }
    for (int k = 0; k < N_KINDS; ++k) {
        if (strcmp(kinds[k].kind, kind) == 0) {
            return kinds[k].make;
        }
    }
    PyErr_Format(PyExc_ValueError, "unknown kind %s", kind);
    return NULL;
}

/* leak(kind, n): makes n objects of the kind and never releases them. */
static PyObject *leak(PyObject *module, PyObject *args) {
    Py_ssize_t n;
    maker fn = parse(args, &n);
    if (fn == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject *obj;
        if (fn((long)i, &obj) < 0) {
            return NULL;
        }
        /* obj is never released: a leaked reference */
    }
    Py_RETURN_NONE;
}

/* make(kind, n): the same objects, returned in a list that owns them (no leak). */
static PyObject *make(PyObject *module, PyObject *args) {
    Py_ssize_t n;
    maker fn = parse(args, &n);
    if (fn == NULL) {
        return NULL;
    }
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject *obj;
        if (fn((long)i, &obj) < 0) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, obj);
    }
    return list;
}

/* kinds(): the names `leak` and `make` take. */
static PyObject *kind_names(PyObject *module, PyObject *unused) {
    PyObject *names = PyList_New(N_KINDS);
    if (names == NULL) {
        return NULL;
    }
    for (int k = 0; k < N_KINDS; ++k) {
        PyObject *name = PyUnicode_FromString(kinds[k].kind);
        if (name == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyList_SET_ITEM(names, k, name);
    }
    return names;
}

/* leak_chain(head): one reference too many on the head of a chain of nested lists that Python
 * built. The head leaks; every list it holds, down the chain, is indirectly leaked. */
static PyObject *leak_chain(PyObject *module, PyObject *head) {
    Py_INCREF(head); /* zoo_matrix:chain */
    Py_RETURN_NONE;
}

/* leak_list_of_ints(n): one leaked list that owns n new ints. */
static PyObject *leak_list_of_ints(PyObject *module, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "n must be >= 0");
    }
    PyObject *list = PyList_New(n); /* zoo_matrix:list_of_ints */
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject *item = PyLong_FromSsize_t(200000 + i); /* zoo_matrix:list_of_ints_item */
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    Py_RETURN_NONE; /* the list is never released */
}

static PyMethodDef matrix_methods[] = {
    {"leak", leak, METH_VARARGS, "leak(kind, n): make n new objects of one kind and leak them."},
    {"make", make, METH_VARARGS, "make(kind, n): the same n objects, returned in a list."},
    {"kinds", kind_names, METH_NOARGS, "kinds(): the kinds that leak() and make() take."},
    {"leak_chain", leak_chain, METH_O, "leak_chain(head): take one extra reference to head."},
    {"leak_list_of_ints", leak_list_of_ints, METH_O, "leak_list_of_ints(n): leak a list of n new ints."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef matrix_module = {
    PyModuleDef_HEAD_INIT, "zoo_matrix", "One reference leak per object type, for refhunt's tests.",
    -1, matrix_methods,
};

PyMODINIT_FUNC PyInit_zoo_matrix(void) {
    PyObject *module = PyModule_Create(&matrix_module);
    if (module == NULL) {
        return NULL;
    }
    plain_type = PyType_FromSpec(&plain_spec);
    tracked_type = PyType_FromSpec(&tracked_spec);
    if (plain_type == NULL || tracked_type == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    /* The module gets its own references; the statics keep theirs. */
    Py_INCREF(plain_type);
    if (PyModule_AddObject(module, "Plain", plain_type) < 0) {
        Py_DECREF(plain_type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(tracked_type);
    if (PyModule_AddObject(module, "Tracked", tracked_type) < 0) {
        Py_DECREF(tracked_type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
