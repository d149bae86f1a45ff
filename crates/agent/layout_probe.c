/* Prints, from one CPython's own headers, the offsets that the agent's layout tables hold
 * (crates/agent/src/cpython.rs). The layout test compiles it for every interpreter it finds. */
#define Py_BUILD_CORE 1
#define NDEBUG 1 /* the inline functions used below assert on a real object */
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h>
#else
#include "internal/pycore_frame.h"
#include "internal/pycore_dict.h"
#endif
#include "internal/pycore_gc.h"
#if PY_VERSION_HEX >= 0x030A0000
#include "internal/pycore_interp.h"
#endif
#if PY_VERSION_HEX >= 0x030C0000
#include "internal/pycore_object.h"
#include "internal/pycore_runtime.h"
#endif
#if PY_VERSION_HEX >= 0x030E0000
#include "internal/pycore_stackref.h"
#endif
#if PY_VERSION_HEX >= 0x030A0000
#include "internal/pycore_moduleobject.h" /* 3.9 keeps PyModuleObject private */
#endif

#define SHOW(name, value) printf("%s=%ld\n", name, (long)(value))

/* The word that holds a str's state bitfield, with only the field named set to `value`. */
#define STATE_WORD(field, value)                                                         \
    ({                                                                                   \
        PyASCIIObject o;                                                                 \
        memset(&o, 0, sizeof o);                                                         \
        o.state.field = value;                                                           \
        *(unsigned int *)((char *)&o + offsetof(PyASCIIObject, state));                  \
    })

int main(void) {
#if PY_VERSION_HEX >= 0x030D0000
    SHOW("tstate_frame", offsetof(PyThreadState, current_frame));
    SHOW("frame_code", offsetof(_PyInterpreterFrame, f_executable));
    SHOW("frame_instr", offsetof(_PyInterpreterFrame, instr_ptr));
#elif PY_VERSION_HEX >= 0x030B0000
    SHOW("tstate_frame", offsetof(PyThreadState, cframe));
    SHOW("cframe_current", offsetof(_PyCFrame, current_frame));
    SHOW("frame_code", offsetof(_PyInterpreterFrame, f_code));
    SHOW("frame_instr", offsetof(_PyInterpreterFrame, prev_instr));
#else
    SHOW("tstate_frame", offsetof(PyThreadState, frame));
    SHOW("frame_code", offsetof(PyFrameObject, f_code));
    SHOW("frame_previous", offsetof(PyFrameObject, f_back));
    SHOW("frame_instr", offsetof(PyFrameObject, f_lasti));
    SHOW("frame_gen", offsetof(PyFrameObject, f_gen));
#endif
#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030B0000
    SHOW("interp_bytes_characters", offsetof(PyInterpreterState, bytes.characters));
    SHOW("interp_unicode_latin1", offsetof(PyInterpreterState, unicode.latin1));
#endif
#if PY_VERSION_HEX >= 0x030B0000
    SHOW("frame_previous", offsetof(_PyInterpreterFrame, previous));
    SHOW("frame_owner", offsetof(_PyInterpreterFrame, owner));
    SHOW("dict_keys_kind", offsetof(PyDictKeysObject, dk_kind));
    SHOW("dict_keys_log2_index_bytes", offsetof(PyDictKeysObject, dk_log2_index_bytes));
    SHOW("dict_keys_nentries", offsetof(PyDictKeysObject, dk_nentries));
    SHOW("dict_keys_indices", offsetof(PyDictKeysObject, dk_indices));
    SHOW("dict_unicode_entry", sizeof(PyDictUnicodeEntry));
    SHOW("ht_cached_keys", offsetof(PyHeapTypeObject, ht_cached_keys));
    SHOW("frame_localsplus", offsetof(_PyInterpreterFrame, localsplus));
    SHOW("frame_obj", offsetof(_PyInterpreterFrame, frame_obj));
    SHOW("frame_owned_by_thread", FRAME_OWNED_BY_THREAD);
    SHOW("code_nlocalsplus", offsetof(PyCodeObject, co_nlocalsplus));
#endif
    SHOW("tp_name", offsetof(PyTypeObject, tp_name));
    SHOW("tp_basicsize", offsetof(PyTypeObject, tp_basicsize));
    SHOW("tp_itemsize", offsetof(PyTypeObject, tp_itemsize));
    SHOW("tp_flags", offsetof(PyTypeObject, tp_flags));
    SHOW("tp_traverse", offsetof(PyTypeObject, tp_traverse));
    SHOW("tp_base", offsetof(PyTypeObject, tp_base));
    SHOW("ob_size", offsetof(PyVarObject, ob_size));
    SHOW("tp_free", offsetof(PyTypeObject, tp_free));
    SHOW("tuple_items", offsetof(PyTupleObject, ob_item));
    SHOW("tp_is_gc", offsetof(PyTypeObject, tp_is_gc));
    SHOW("tp_subclasses", offsetof(PyTypeObject, tp_subclasses));
    SHOW("ht_slots", offsetof(PyHeapTypeObject, ht_slots));
    SHOW("ht_name", offsetof(PyHeapTypeObject, ht_name));
    SHOW("ht_qualname", offsetof(PyHeapTypeObject, ht_qualname));
#if PY_VERSION_HEX >= 0x030A0000
    SHOW("md_name", offsetof(PyModuleObject, md_name));
    SHOW("md_state", offsetof(PyModuleObject, md_state));
#if PY_VERSION_HEX >= 0x030F0000
    SHOW("md_state_size", offsetof(PyModuleObject, md_state_size));
#else
    SHOW("md_def", offsetof(PyModuleObject, md_def));
#endif
#endif
    SHOW("unicode_state", offsetof(PyASCIIObject, state));
    SHOW("unicode_length", offsetof(PyASCIIObject, length));
    SHOW("ascii_size", sizeof(PyASCIIObject));
    SHOW("unicode_compact_bit", STATE_WORD(compact, 1));
    SHOW("unicode_ascii_bit", STATE_WORD(ascii, 1));
    SHOW("unicode_kind_one", STATE_WORD(kind, 1));
    SHOW("unicode_interned_bits", STATE_WORD(interned, 3));
    SHOW("compact_size", sizeof(PyCompactUnicodeObject));
    SHOW("dict_keys", offsetof(PyDictObject, ma_keys));
    SHOW("dict_values", offsetof(PyDictObject, ma_values));
    SHOW("gc_head", sizeof(PyGC_Head));
#if PY_VERSION_HEX >= 0x030B0000
    SHOW("coro_origin", offsetof(PyCoroObject, cr_origin_or_finalizer));
#else
    SHOW("coro_origin", offsetof(PyCoroObject, cr_origin));
#endif
#if PY_VERSION_HEX >= 0x030C0000
    SHOW("code_cached", offsetof(PyCodeObject, _co_cached));
    SHOW("code_cached_objects", sizeof(_PyCoCached) / sizeof(PyObject *));
#if PY_VERSION_HEX >= 0x030E0000
    SHOW("frame_first_shim_owner", FRAME_OWNED_BY_INTERPRETER);
    SHOW("stackref_tag_bits", Py_TAG_BITS);
#else
    SHOW("frame_first_shim_owner", FRAME_OWNED_BY_CSTACK);
#endif
#endif
#if PY_VERSION_HEX >= 0x030E0000
    SHOW("freelists_start", offsetof(PyInterpreterState, object_state.freelists));
    SHOW("freelists_end", offsetof(PyInterpreterState, object_state.freelists)
                              + sizeof(struct _Py_freelists));
#elif PY_VERSION_HEX >= 0x030D0000
    SHOW("freelists_start", offsetof(PyInterpreterState, object_state.freelists));
    SHOW("freelists_end", offsetof(PyInterpreterState, object_state.freelists)
                              + sizeof(struct _Py_object_freelists));
#elif PY_VERSION_HEX >= 0x030B0000
    SHOW("freelists_start", offsetof(PyInterpreterState, float_state));
    SHOW("freelists_end", offsetof(PyInterpreterState, exc_state));
#endif
#if PY_VERSION_HEX >= 0x030C0000
    SHOW("type_cache_start", offsetof(PyInterpreterState, types.type_cache));
    SHOW("type_cache_end", offsetof(PyInterpreterState, types.type_cache)
                               + sizeof(struct type_cache));
#elif PY_VERSION_HEX >= 0x030B0000
    SHOW("type_cache_start", offsetof(PyInterpreterState, type_cache));
    SHOW("type_cache_end", offsetof(PyInterpreterState, type_cache) + sizeof(struct type_cache));
#endif
#if PY_VERSION_HEX >= 0x030B0000
    SHOW("type_cache_entry", sizeof(struct type_cache_entry));
    SHOW("type_cache_value", offsetof(struct type_cache_entry, value));
#endif
    SHOW("moduledef_size", offsetof(PyModuleDef, m_size));
    SHOW("list_items", offsetof(PyListObject, ob_item));
    SHOW("ob_refcnt", offsetof(PyObject, ob_refcnt));
    SHOW("ob_type", offsetof(PyObject, ob_type));
    SHOW("tpflags_heaptype", Py_TPFLAGS_HEAPTYPE);
    SHOW("tpflags_have_gc", Py_TPFLAGS_HAVE_GC);
    SHOW("tpflags_dict_subclass", Py_TPFLAGS_DICT_SUBCLASS);
    SHOW("tpflags_type_subclass", Py_TPFLAGS_TYPE_SUBCLASS);
    SHOW("tpflags_list_subclass", Py_TPFLAGS_LIST_SUBCLASS);
    SHOW("tpflags_tuple_subclass", Py_TPFLAGS_TUPLE_SUBCLASS);
    SHOW("tpflags_unicode_subclass", Py_TPFLAGS_UNICODE_SUBCLASS);
    SHOW("dict_used", offsetof(PyDictObject, ma_used));
    SHOW("type_fields_end", offsetof(PyTypeObject, tp_subclasses) + sizeof(void *));
    SHOW("domain_raw", PYMEM_DOMAIN_RAW);
    SHOW("domain_mem", PYMEM_DOMAIN_MEM);
    SHOW("domain_obj", PYMEM_DOMAIN_OBJ);
#if PY_VERSION_HEX >= 0x030C0000
    SHOW("preheader_flags", Py_TPFLAGS_PREHEADER);
#elif PY_VERSION_HEX >= 0x030B0000
    SHOW("preheader_flags", Py_TPFLAGS_MANAGED_DICT);
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {
        /* Where the managed dict pointer sits before an object: pointer arithmetic only. */
        static PyObject fake[4];
        SHOW("managed_dict_before",
             (char *)&fake[3] - (char *)_PyObject_ManagedDictPointer(&fake[3]));
    }
    SHOW("tpflags_inline_values", Py_TPFLAGS_INLINE_VALUES);
    SHOW("inline_values_valid", offsetof(PyDictValues, valid));
    SHOW("reftracer_create", PyRefTracer_CREATE);
#elif PY_VERSION_HEX >= 0x030C0000
    {
        static PyObject fake[4];
        SHOW("managed_dict_before",
             (char *)&fake[3] - (char *)_PyObject_DictOrValuesPointer(&fake[3]));
    }
#endif
#if PY_VERSION_HEX >= 0x030D0000
    /* Where the runtime's own table of offsets (`_PyRuntime.debug_offsets`) keeps those the
     * agent checks at start. */
#define DEBUG_FIELD(name, path) SHOW("debug_" name, offsetof(_Py_DebugOffsets, path))
    SHOW("debug_offsets", offsetof(_PyRuntimeState, debug_offsets));
    DEBUG_FIELD("version", version);
    DEBUG_FIELD("free_threaded", free_threaded);
    DEBUG_FIELD("current_frame", thread_state.current_frame);
    DEBUG_FIELD("frame_previous", interpreter_frame.previous);
    DEBUG_FIELD("frame_executable", interpreter_frame.executable);
    DEBUG_FIELD("frame_instr_ptr", interpreter_frame.instr_ptr);
    DEBUG_FIELD("frame_localsplus", interpreter_frame.localsplus);
    DEBUG_FIELD("frame_owner", interpreter_frame.owner);
    DEBUG_FIELD("code_adaptive", code_object.co_code_adaptive);
    DEBUG_FIELD("ob_type", pyobject.ob_type);
    DEBUG_FIELD("tp_name", type_object.tp_name);
    DEBUG_FIELD("tp_flags", type_object.tp_flags);
    DEBUG_FIELD("tuple_items", tuple_object.ob_item);
    DEBUG_FIELD("list_items", list_object.ob_item);
    DEBUG_FIELD("dict_keys", dict_object.ma_keys);
    DEBUG_FIELD("dict_values", dict_object.ma_values);
    DEBUG_FIELD("unicode_state", unicode_object.state);
    DEBUG_FIELD("unicode_length", unicode_object.length);
    DEBUG_FIELD("ascii_size", unicode_object.asciiobject_size);
    SHOW("code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
#endif
    /* The object fields of a code object, which the collector does not traverse. */
#define CODE_FIELD(name) SHOW("code_field_" #name, offsetof(PyCodeObject, name))
    CODE_FIELD(co_consts);
    CODE_FIELD(co_names);
    CODE_FIELD(co_filename);
    CODE_FIELD(co_name);
#if PY_VERSION_HEX >= 0x030B0000
    CODE_FIELD(co_exceptiontable);
    CODE_FIELD(co_localsplusnames);
    CODE_FIELD(co_localspluskinds);
    CODE_FIELD(co_qualname);
    CODE_FIELD(co_linetable);
#else
    CODE_FIELD(co_code);
    CODE_FIELD(co_varnames);
    CODE_FIELD(co_freevars);
    CODE_FIELD(co_cellvars);
#if PY_VERSION_HEX >= 0x030A0000
    CODE_FIELD(co_linetable);
#else
    CODE_FIELD(co_lnotab);
#endif
#endif
    return 0;
}
