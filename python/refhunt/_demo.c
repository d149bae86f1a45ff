/* refhunt's demo extension (`refhunt demo`): the seed's leak, new references that are never
 * released. Built for the limited API of 3.9, so one binary serves every CPython; it keeps
 * its line tables and ships this file, so that refhunt names the line below. */
#define Py_LIMITED_API 0x03090000
#include <Python.h>

/* leak(n): makes n ints and drops every reference (above 1024: 3.15 caches smaller ones). */
static PyObject *leak(PyObject *module, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (long i = 0; i < n; i++) {
        PyLong_FromLong(5000 + i % 1000); /* refhunt_demo:leak */
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"leak", leak, METH_O, "leak(n): n new int references, never released."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "refhunt._demo", "The leak of refhunt's demo.", -1, methods,
};

PyMODINIT_FUNC PyInit__demo(void) {
    return PyModule_Create(&module);
}
