//! The compat module's tables against the headers of every CPython found here: pyenv's, those
//! on PATH, and the unstable folder's (3.14, 3.15).

use super::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An interpreter whose headers are probed: `python` runs on this machine, or inside
/// the folder `root` (Debian unstable's 3.13-3.15, see scripts/sid.sh) through chroot.
struct Interpreter {
    minor: u32,
    python: PathBuf,
    root: Option<PathBuf>,
}

impl Interpreter {
    fn command(&self, program: &Path) -> Command {
        match &self.root {
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

fn pyenv_python(minor: u32) -> Option<PathBuf> {
    let root = Command::new("pyenv").arg("root").output().ok()?;
    let root = PathBuf::from(String::from_utf8_lossy(&root.stdout).trim());
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let v = p.file_name().unwrap().to_string_lossy().into_owned();
            v.starts_with(&format!("3.{minor}."))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .map(|d| d.join("bin").join(format!("python3.{minor}")))
        .filter(|p| p.is_file())
}

/// The unstable folder: `REFHUNT_SID`, else the cache scripts/sid.sh builds; used only
/// as root, who may chroot.
fn sid_folder() -> Option<PathBuf> {
    let folder = std::env::var_os("REFHUNT_SID")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("refhunt").join("sid"))
        })?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    (root && folder.join("usr/bin").is_dir()).then_some(folder)
}

/// For each minor version, pyenv's newest or the one on PATH; where neither has one, the
/// unstable folder's.
fn interpreters() -> Vec<Interpreter> {
    let sid = sid_folder();
    (9..=15)
        .filter_map(|minor| {
            let name = format!("python3.{minor}");
            let from_path = || {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|d| d.join(&name))
                    .find(|p| p.is_file())
            };
            if let Some(python) = pyenv_python(minor).or_else(from_path) {
                return Some(Interpreter {
                    minor,
                    python,
                    root: None,
                });
            }
            let root = sid.clone()?;
            let python = Path::new("/usr/bin").join(&name);
            root.join(python.strip_prefix("/").unwrap())
                .is_file()
                .then_some(Interpreter {
                    minor,
                    python,
                    root: Some(root),
                })
        })
        .collect()
}

/// Compiles and runs layout_probe.c against the headers of `python`; `dir` is a scratch
/// directory on this machine (inside the folder for one of its interpreters).
fn probe(python: &Interpreter, dir: &Path) -> HashMap<String, i64> {
    let include = python
        .command(&python.python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include'])",
        ])
        .output()
        .expect("python runs");
    let include = String::from_utf8_lossy(&include.stdout).trim().to_string();
    // Paths as the compiler sees them, and where they are on this machine.
    let (seen, here) = match &python.root {
        Some(root) => {
            let seen = PathBuf::from(format!("/tmp/refhunt-layout-{}", std::process::id()));
            (seen.clone(), root.join(seen.strip_prefix("/").unwrap()))
        }
        None => (dir.to_path_buf(), dir.to_path_buf()),
    };
    std::fs::create_dir_all(&here).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("layout_probe.c");
    std::fs::copy(source, here.join("probe.c")).unwrap();
    let out = seen.join(format!("probe3{}", python.minor));
    let status = python
        .command(Path::new("gcc"))
        .arg(format!("-I{include}"))
        .arg(format!("-I{include}/internal"))
        .arg(seen.join("probe.c"))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("gcc runs");
    assert!(
        status.success(),
        "layout probe does not compile for {:?}",
        python.python
    );
    let text = python.command(&out).output().expect("probe runs").stdout;
    if python.root.is_some() {
        let _ = std::fs::remove_dir_all(&here);
    }
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

#[test]
fn layouts_match_the_installed_headers() {
    let found = interpreters();
    assert!(!found.is_empty(), "no CPython 3.9-3.15 found");
    // CI has every version: pyenv's 3.9-3.13, and the unstable folder's 3.14 and 3.15 once
    // scripts/test.sh has built it (REFHUNT_SID).
    if std::env::var_os("CI").is_some() {
        let last = if std::env::var_os("REFHUNT_SID").is_some() {
            15
        } else {
            13
        };
        let minors: Vec<u32> = found.iter().map(|i| i.minor).collect();
        assert_eq!(minors, (9..=last).collect::<Vec<u32>>(), "versions probed");
    }
    let dir = std::env::temp_dir().join(format!("refhunt-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for python in found {
        let minor = python.minor;
        let h = probe(&python, &dir);
        let l = Layout::for_version(minor).unwrap();
        let at = |k: &str| h[k] as usize;
        let what = format!("3.{minor} ({:?} in {:?})", python.python, python.root);
        assert_eq!(l.tstate_frame, at("tstate_frame"), "{what}");
        assert_eq!(
            l.cframe_current,
            h.get("cframe_current").map(|&v| v as usize),
            "{what}"
        );
        assert_eq!(l.frame_code, at("frame_code"), "{what}");
        assert_eq!(l.ht_slots, at("ht_slots"), "{what}");
        assert_eq!(l.ht_slots - 8, at("ht_name"), "{what}");
        assert_eq!(l.ht_slots + 8, at("ht_qualname"), "{what}");
        assert_eq!(l.frame_previous, at("frame_previous"), "{what}");
        assert_eq!(l.ascii_size, at("ascii_size"), "{what}");
        assert_eq!(
            l.freelists,
            h.get("freelists_start")
                .map(|&v| (v as usize, at("freelists_end"))),
            "{what}"
        );
        assert_eq!(
            l.frame_locals,
            h.get("frame_localsplus")
                .map(|&v| (v as usize, at("code_nlocalsplus"))),
            "{what}"
        );
        assert_eq!(
            l.type_cache,
            h.get("type_cache_start")
                .map(|&v| (v as usize, at("type_cache_end"))),
            "{what}"
        );
        if minor >= 11 {
            assert_eq!(TYPE_CACHE_ENTRY as i64, h["type_cache_entry"], "{what}");
            assert_eq!(TYPE_CACHE_VALUE as i64, h["type_cache_value"], "{what}");
        }
        assert_eq!(
            l.frame_obj,
            h.get("frame_obj").map(|&v| v as usize),
            "{what}"
        );
        if minor >= 11 {
            assert_eq!(
                FRAME_OWNED_BY_THREAD as i64, h["frame_owned_by_thread"],
                "{what}"
            );
        }
        if minor >= 12 {
            assert_eq!(
                FRAME_FIRST_SHIM_OWNER as i64, h["frame_first_shim_owner"],
                "{what}"
            );
            assert_eq!(
                CODE_CACHED_OBJECTS as i64, h["code_cached_objects"],
                "{what}"
            );
        }
        assert_eq!(
            l.code_cached,
            h.get("code_cached").map(|&v| v as usize),
            "{what}"
        );
        assert_eq!(l.coro_origin, at("coro_origin"), "{what}");
        assert_eq!(
            l.frame_gen,
            h.get("frame_gen").map(|&v| v as usize),
            "{what}"
        );
        assert_eq!(
            l.interp_caches,
            h.get("interp_bytes_characters")
                .map(|&v| [v as usize, at("interp_unicode_latin1")]),
            "{what}"
        );
        // 3.9-3.10 keep `PyDictKeysObject` out of their headers (Objects/dict-common.h):
        // `Api::find_lookdict` checks its `dk_lookup` in the running interpreter instead.
        assert_eq!(l.dict_lookup.is_some(), minor <= 10, "{what}");
        assert_eq!(l.compact_size, at("compact_size"), "{what}");
        assert_eq!(l.tuple_items, at("tuple_items"), "{what}");
        assert_eq!(
            l.debug_offsets.is_some(),
            h.contains_key("debug_offsets"),
            "{what}"
        );
        if let Some(p) = l.debug_offsets {
            assert_eq!(
                0,
                at("debug_offsets"),
                "{what}: the table starts _PyRuntime"
            );
            for (ours, key) in [
                (p.version, "version"),
                (p.free_threaded, "free_threaded"),
                (p.current_frame, "current_frame"),
                (p.frame_previous, "frame_previous"),
                (p.frame_executable, "frame_executable"),
                (p.frame_instr_ptr, "frame_instr_ptr"),
                (p.frame_localsplus, "frame_localsplus"),
                (p.frame_owner, "frame_owner"),
                (p.code_adaptive, "code_adaptive"),
                (p.ob_type, "ob_type"),
                (p.tp_name, "tp_name"),
                (p.tp_flags, "tp_flags"),
                (p.tuple_items, "tuple_items"),
                (p.list_items, "list_items"),
                (p.dict_keys, "dict_keys"),
                (p.dict_values, "dict_values"),
                (p.unicode_state, "unicode_state"),
                (p.unicode_length, "unicode_length"),
                (p.ascii_size, "ascii_size"),
            ] {
                assert_eq!(ours, at(&format!("debug_{key}")), "debug_{key} on {what}");
            }
        }
        assert_eq!(
            (l.preheader_flags != 0).then_some(l.preheader_flags as i64),
            h.get("preheader_flags").copied(),
            "{what}"
        );
        if minor >= 12 {
            assert_eq!(MANAGED_DICT_BEFORE, at("managed_dict_before"), "{what}");
        }
        if minor >= 13 {
            assert_eq!(TPFLAGS_INLINE_VALUES, at("tpflags_inline_values") as u64);
            assert_eq!(INLINE_VALUES_VALID, at("inline_values_valid"), "{what}");
            assert_eq!(REFTRACER_CREATE as usize, at("reftracer_create"), "{what}");
        }
        assert_eq!(l.reftracer, h.contains_key("reftracer_create"), "{what}");
        let mut code_objects: Vec<usize> = h
            .iter()
            .filter(|(k, _)| k.starts_with("code_field_"))
            .map(|(_, &v)| v as usize)
            .collect();
        code_objects.sort();
        assert_eq!(l.code_objects, code_objects, "{what}");
        let names = l.code_names;
        assert_eq!(names.filename, at("code_field_co_filename"), "{what}");
        assert_eq!(names.name, at("code_field_co_name"), "{what}");
        assert_eq!(
            names.qualname.map(|q| q as i64),
            h.get("code_field_co_qualname").copied(),
            "{what}"
        );
        assert_eq!(
            l.stackrefs.then_some(STACKREF_TAG_BITS as i64),
            h.get("stackref_tag_bits").copied(),
            "{what}"
        );
        assert_eq!(UNICODE_LENGTH, at("unicode_length"), "{what}");
        assert_eq!(UNICODE_COMPACT, at("unicode_compact_bit") as u32, "{what}");
        assert_eq!(UNICODE_ASCII, at("unicode_ascii_bit") as u32, "{what}");
        assert_eq!(
            1 << UNICODE_KIND_SHIFT,
            at("unicode_kind_one") as u32,
            "{what}"
        );
        assert_eq!(l.frame_instr, at("frame_instr"), "{what}");
        assert_eq!(
            l.frame_owner,
            h.get("frame_owner").map(|&v| v as usize),
            "{what}"
        );
        if minor >= 11 {
            assert_eq!(DICT_KEYS_KIND, at("dict_keys_kind"), "{what}");
            assert_eq!(
                DICT_KEYS_LOG2_INDEX_BYTES,
                at("dict_keys_log2_index_bytes"),
                "{what}"
            );
            assert_eq!(DICT_KEYS_NENTRIES, at("dict_keys_nentries"), "{what}");
            assert_eq!(DICT_KEYS_INDICES, at("dict_keys_indices"), "{what}");
            assert_eq!(DICT_UNICODE_ENTRY, at("dict_unicode_entry"), "{what}");
            assert_eq!(
                l.ht_slots + HT_CACHED_KEYS_AFTER_SLOTS,
                at("ht_cached_keys"),
                "{what}"
            );
        }
        if minor >= 10 {
            assert_eq!(l.module.name, at("md_name"), "{what}");
            assert_eq!(l.module.state, at("md_state"), "{what}");
            let size = match l.module.state_size {
                StateSize::InDef(def) => (def, "md_def"),
                StateSize::InModule(at) => (at, "md_state_size"),
            };
            assert_eq!(size.0, at(size.1), "{what}");
        }
        assert_eq!(MODULEDEF_SIZE, at("moduledef_size"), "{what}");
        for (ours, key) in [
            (TP_NAME, "tp_name"),
            (TP_BASICSIZE, "tp_basicsize"),
            (TP_ITEMSIZE, "tp_itemsize"),
            (TP_FLAGS, "tp_flags"),
            (TP_TRAVERSE, "tp_traverse"),
            (TP_BASE, "tp_base"),
            (OB_SIZE, "ob_size"),
            (TP_FREE, "tp_free"),
            (TP_IS_GC, "tp_is_gc"),
            (TP_SUBCLASSES, "tp_subclasses"),
            (UNICODE_STATE, "unicode_state"),
            (DICT_KEYS, "dict_keys"),
            (DICT_VALUES, "dict_values"),
            (GC_HEAD, "gc_head"),
            (LIST_ITEMS, "list_items"),
            (OB_REFCNT, "ob_refcnt"),
            (OB_TYPE, "ob_type"),
            (TPFLAGS_HEAPTYPE as usize, "tpflags_heaptype"),
            (TPFLAGS_HAVE_GC as usize, "tpflags_have_gc"),
            (TPFLAGS_DICT_SUBCLASS as usize, "tpflags_dict_subclass"),
            (TPFLAGS_TYPE_SUBCLASS as usize, "tpflags_type_subclass"),
            (TPFLAGS_LIST_SUBCLASS as usize, "tpflags_list_subclass"),
            (TPFLAGS_TUPLE_SUBCLASS as usize, "tpflags_tuple_subclass"),
            (
                TPFLAGS_UNICODE_SUBCLASS as usize,
                "tpflags_unicode_subclass",
            ),
            (UNICODE_INTERNED as usize, "unicode_interned_bits"),
            (DICT_USED, "dict_used"),
            (TYPE_FIELDS_END, "type_fields_end"),
            (DOMAIN_RAW as usize, "domain_raw"),
            (DOMAIN_MEM as usize, "domain_mem"),
            (DOMAIN_OBJ as usize, "domain_obj"),
        ] {
            assert_eq!(ours, at(key), "{key} on {what}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
