/* zoo_native: native memory that C code allocates for itself and never frees.
 *
 * It stands in for real extensions that lose a buffer: a malloc'd scratch buffer, a
 * PyMem_Malloc buffer lost on an error path, a buffer grown with realloc and dropped, a
 * strdup'd name, a block of PyObject_Malloc used as a general allocator, and an array of new
 * references whose block is lost with them. None of these is a Python object.
 *
 * Each leaking allocation carries a marker comment `zoo_native:NAME` on its line. The
 * controls allocate too and keep or free every block; their lines carry
 * `zoo_native:control_NAME`. Tests find the lines by their markers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Where the leaking functions put each block, so the compiler keeps the allocation. */
static void *volatile last_block;

static int count_arg(PyObject *arg, Py_ssize_t *n) {
    *n = PyLong_AsSsize_t(arg);
    if (*n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (*n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must not be negative");
        return -1;
    }
    return 0;
}

/* n blocks of `size` bytes from malloc, never freed. */
static PyObject *leak_malloc(PyObject *module, PyObject *args) {
    Py_ssize_t n, size;
    if (!PyArg_ParseTuple(args, "nn", &n, &size)) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char *scratch = malloc(size); /* zoo_native:malloc */
        if (scratch == NULL) {
            return PyErr_NoMemory();
        }
        memset(scratch, 'x', size);
        last_block = scratch;
    }
    last_block = NULL;
    Py_RETURN_NONE;
}

/* Parses n records into a PyMem_Malloc buffer; a record that fails validation returns
 * early and loses the buffer. Every record here fails. */
static int parse_record(Py_ssize_t i) {
    char *buf = PyMem_Malloc(128); /* zoo_native:pymem_error */
    if (buf == NULL) {
        return -1;
    }
    snprintf(buf, 128, "record %zd", i);
    last_block = buf;
    if (buf[0] == 'r') {
        return 0; /* the error path: buf is lost */
    }
    PyMem_Free(buf);
    return 1;
}

static PyObject *pymem_error_path(PyObject *module, PyObject *arg) {
    Py_ssize_t n, ok = 0;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ok += parse_record(i) > 0;
    }
    last_block = NULL;
    return PyLong_FromSsize_t(ok);
}

/* n buffers that start small and grow with realloc, then are dropped. */
static PyObject *grow_realloc(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char *buf = malloc(16); /* zoo_native:realloc */
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
        char *grown = realloc(buf, 1000);
        if (grown == NULL) {
            free(buf);
            return PyErr_NoMemory();
        }
        memset(grown, 'y', 1000);
        last_block = grown;
    }
    last_block = NULL;
    Py_RETURN_NONE;
}

/* n copies of a name, never freed. */
static PyObject *leak_strdup(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char *name = strdup("a name kept nowhere"); /* zoo_native:strdup */
        if (name == NULL) {
            return PyErr_NoMemory();
        }
        last_block = name;
    }
    last_block = NULL;
    Py_RETURN_NONE;
}

/* n blocks of the object allocator used as plain memory, never freed. */
static PyObject *pyobject_malloc(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double *v = PyObject_Malloc(4 * sizeof(double)); /* zoo_native:pyobject_malloc */
        if (v == NULL) {
            return PyErr_NoMemory();
        }
        v[0] = (double)i;
        last_block = v;
    }
    last_block = NULL;
    Py_RETURN_NONE;
}

/* An array of n new ints in a malloc'd block, and the block lost: the ints are held by it. */
static PyObject *lose_array(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    PyObject **items = malloc(n * sizeof(PyObject *)); /* zoo_native:array */
    if (items == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        items[i] = PyLong_FromSsize_t(1000000 + i); /* zoo_native:array_item */
    }
    last_block = items;
    last_block = NULL;
    Py_RETURN_NONE;
}

/* An object that owns a malloc'd buffer, freed with it; leak_buffered leaks the objects, and
 * their buffers are part of that leak, not a leak of their own. */
typedef struct {
    PyObject_HEAD
    char *buffer;
} Buffered;

static void buffered_dealloc(Buffered *self) {
    free(self->buffer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *buffered_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Buffered *self = (Buffered *)type->tp_alloc(type, 0); /* zoo_native:buffered */
    if (self == NULL) {
        return NULL;
    }
    self->buffer = malloc(256); /* zoo_native:control_owned_buffer */
    if (self->buffer == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    memset(self->buffer, 'o', 256);
    return (PyObject *)self;
}

static PyTypeObject BufferedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zoo_native.Buffered",
    .tp_basicsize = sizeof(Buffered),
    .tp_dealloc = (destructor)buffered_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = buffered_new,
};

static PyObject *leak_buffered(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *leaked = PyObject_CallNoArgs((PyObject *)&BufferedType);
        if (leaked == NULL) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* Control: a table allocated on the first call and kept in a static. */
static double *table;

static PyObject *table_once(PyObject *module, PyObject *unused) {
    if (table == NULL) {
        table = calloc(4096, sizeof(double)); /* zoo_native:control_table */
        if (table == NULL) {
            return PyErr_NoMemory();
        }
    }
    table[0] += 1;
    Py_RETURN_NONE;
}

/* Control: a scratch buffer freed in every call. */
static PyObject *malloc_free(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char *scratch = malloc(256); /* zoo_native:control_malloc_free */
        if (scratch == NULL) {
            return PyErr_NoMemory();
        }
        memset(scratch, 'z', 256);
        last_block = scratch;
        free(scratch);
    }
    last_block = NULL;
    Py_RETURN_NONE;
}

/* Control: a buffer filled in C and handed to Python as a bytes object. */
static PyObject *to_bytes(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    char *buf = malloc(n + 1); /* zoo_native:control_to_bytes */
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    memset(buf, 'b', n);
    PyObject *bytes = PyBytes_FromStringAndSize(buf, n);
    free(buf);
    return bytes;
}

/* Control: threads that allocate and free without the GIL, while Python runs. */
static void *churn(void *arg) {
    Py_ssize_t n = *(Py_ssize_t *)arg;
    for (Py_ssize_t i = 0; i < n; i++) {
        void *p = malloc(32 + i % 64); /* zoo_native:control_threads */
        last_block = p;
        free(p);
        void *raw = PyMem_RawMalloc(16 + i % 32);
        last_block = raw;
        PyMem_RawFree(raw);
    }
    return NULL;
}

/* A C thread without the GIL loses n PyMem_RawMalloc blocks of 40 bytes: it has no Python
 * frames of its own to read. */
static void *raw_leaks(void *arg) {
    Py_ssize_t n = *(Py_ssize_t *)arg;
    for (Py_ssize_t i = 0; i < n; i++) {
        char *p = PyMem_RawMalloc(40); /* zoo_native:raw_thread */
        if (p != NULL) {
            p[0] = 'r';
        }
        last_block = p;
    }
    last_block = NULL;
    return NULL;
}

static PyObject *raw_on_thread(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    pthread_t thread;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = pthread_create(&thread, NULL, raw_leaks, &n);
    if (err == 0) {
        pthread_join(thread, NULL);
    }
    Py_END_ALLOW_THREADS
    if (err != 0) {
        return PyErr_Format(PyExc_OSError, "pthread_create: %d", err);
    }
    Py_RETURN_NONE;
}

static PyObject *threads_malloc_free(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    if (count_arg(arg, &n) < 0) {
        return NULL;
    }
    pthread_t threads[2];
    int started = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; started < 2; started++) {
        if (pthread_create(&threads[started], NULL, churn, &n) != 0) {
            break;
        }
    }
    churn(&n);
    for (int i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"raw_on_thread", raw_on_thread, METH_O, "raw_on_thread(n): a C thread without the GIL loses n PyMem_RawMalloc blocks of 40 bytes."},
    {"leak_malloc", leak_malloc, METH_VARARGS, "leak_malloc(n, size): n malloc'd blocks, never freed."},
    {"pymem_error_path", pymem_error_path, METH_O, "pymem_error_path(n): a PyMem_Malloc buffer lost on an error path, n times."},
    {"grow_realloc", grow_realloc, METH_O, "grow_realloc(n): n buffers grown with realloc to 1000 bytes, then lost."},
    {"leak_strdup", leak_strdup, METH_O, "leak_strdup(n): n strdup'd strings, never freed."},
    {"pyobject_malloc", pyobject_malloc, METH_O, "pyobject_malloc(n): n PyObject_Malloc blocks of 32 bytes, never freed."},
    {"lose_array", lose_array, METH_O, "lose_array(n): n new ints in a malloc'd array, and the array lost."},
    {"leak_buffered", leak_buffered, METH_O, "leak_buffered(n): n Buffered objects leaked, each with its malloc'd buffer."},
    {"table_once", table_once, METH_NOARGS, "Control: a table allocated once and kept."},
    {"malloc_free", malloc_free, METH_O, "Control: malloc and free in every iteration."},
    {"to_bytes", to_bytes, METH_O, "Control: a malloc'd buffer handed to Python as bytes."},
    {"threads_malloc_free", threads_malloc_free, METH_O, "Control: three threads malloc and free without the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "zoo_native", "Native memory leaks, and controls.", -1, methods,
};

PyMODINIT_FUNC PyInit_zoo_native(void) {
    if (PyType_Ready(&BufferedType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    /* PyModule_AddObject steals the reference on success only (PyModule_AddObjectRef is
     * new in 3.10). */
    Py_INCREF(&BufferedType);
    if (m != NULL && PyModule_AddObject(m, "Buffered", (PyObject *)&BufferedType) < 0) {
        Py_DECREF(&BufferedType);
        Py_CLEAR(m);
    }
    return m;
}
