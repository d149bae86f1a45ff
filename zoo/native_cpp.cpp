// A C++ extension that leaks native memory (C++ objects from operator new), not Python
// objects. It stands in for users' C++ extensions in refhunt's native-leak tests.
//
// Each allocating line carries a marker comment `zoo_native:<name>`; tests find the line by its
// marker, so lines can move freely. Built by zoo/build_native.py with g++ -O2 -g.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace {

// 48 bytes on LP64: six 8-byte fields.
class Widget {
  public:
    Widget(long id, double x, double y, double z) : id_(id), x_(x), y_(y), z_(z), flags_(id * 7) {
        for (int i = 0; i < 8; ++i) {
            tag_[i] = static_cast<char>('a' + (id + i) % 26);
        }
    }
    long id() const { return id_; }

  private:
    long id_;
    double x_, y_, z_;
    long flags_;
    char tag_[8];
};
static_assert(sizeof(Widget) == 48, "Widget is meant to be 48 bytes");

// Keeps the compiler from eliding or merging the allocations.
Widget *volatile last_widget = nullptr;

__attribute__((noinline)) void keep(Widget *widget) {
    last_widget = widget;
}

bool parse_count(PyObject *arg, Py_ssize_t *n) {
    *n = PyLong_AsSsize_t(arg);
    if (*n == -1 && PyErr_Occurred()) {
        return false;
    }
    if (*n < 0) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 0");
        return false;
    }
    return true;
}

// Leaks: n Widgets that are never deleted.
PyObject *leak_new(PyObject *, PyObject *arg) {
    Py_ssize_t n;
    if (!parse_count(arg, &n)) {
        return nullptr;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        Widget *widget = new Widget(i, 1.0 * i, 2.0 * i, 3.0 * i); // zoo_native:cpp_new
        keep(widget);
    }
    last_widget = nullptr;
    Py_RETURN_NONE;
}

// Control: every Widget is deleted.
PyObject *new_delete(PyObject *, PyObject *arg) {
    Py_ssize_t n;
    if (!parse_count(arg, &n)) {
        return nullptr;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
        Widget *widget = new Widget(i, 1.0 * i, 2.0 * i, 3.0 * i); // zoo_native:control_cpp_new_delete
        keep(widget);
        last_widget = nullptr;
        delete widget;
    }
    Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"leak_new", leak_new, METH_O, "leak_new(n): allocates n Widgets with new, never deletes them."},
    {"new_delete", new_delete, METH_O, "new_delete(n): control; news and deletes n Widgets."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "zoo_native_cpp", "C++ objects leaked with new, and a control.", 0, methods,
    nullptr, nullptr, nullptr, nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit_zoo_native_cpp(void) {
    return PyModule_Create(&module_def);
}
