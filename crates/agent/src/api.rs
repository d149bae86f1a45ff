//! The C entry points that the Python bootstrap calls through `ctypes.PyDLL` (GIL held).
//!
//! Every entry point returns 0 on success; on failure, `refhunt_error()` says why in one line.
//! None of them lets a panic cross into the host process.

use crate::breakpoints::Breakpoints;
use crate::census::{Census, Roots};
use crate::cpython::{self, Api, Layout};
use crate::holds::{Arming, Holds};
use crate::hooks::{self, Creations, State, EPOCH, STATE, TRACKING};
use crate::sampler;
use crate::screen::{self, Baseline};
use crate::snapshot;
use crate::unwind::{self, Unwinder};
use refhunt_core::capture::{Capture, Facts};
use refhunt_core::verdict::Verdict;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

static ERROR: Mutex<Option<CString>> = Mutex::new(None);

fn fail(message: impl Into<String>) -> c_int {
    let text = message.into().replace('\0', " ");
    *ERROR.lock().unwrap_or_else(|e| e.into_inner()) = CString::new(text).ok();
    1
}

fn guarded(f: impl FnOnce() -> Result<(), String>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => fail(message),
        Err(_) => fail("internal error in the refhunt agent; tracking stopped"),
    }
}

/// The last error, valid until the next failing call.
#[no_mangle]
pub extern "C" fn refhunt_error() -> *const c_char {
    ERROR
        .lock()
        .map(|e| e.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
        .unwrap_or(std::ptr::null())
}

/// Resolves the interpreter, installs the hooks and starts recording.
#[no_mangle]
pub extern "C" fn refhunt_start(hexversion: u32) -> c_int {
    // SAFETY: the bootstrap calls this inside the CPython process it runs in, with the GIL
    // held (`ctypes.PyDLL`, see the module doc), which is what `Layout::for_interpreter`,
    // `Api::resolve` and `hooks::install` need; `api.code_type` is then `PyCode_Type`, whose
    // `tp_basicsize` is readable, `get` is `PyRefTracer_GetTracer`, and `after_fork_child`
    // takes no arguments, as a fork handler must.
    guarded(|| unsafe {
        if STATE.lock().is_some() {
            // A test before this run may have used tracemalloc, which took the tracer.
            hooks::reclaim_tracer();
            TRACKING.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let layout = Layout::for_interpreter(hexversion)?;
        let mut api = Api::resolve()?;
        api.find_lookdict(&layout);
        if !crate::libc_fns::init() {
            return Err("the C library's malloc family was not found".into());
        }
        let code_start = cpython::Type::new(api.code_type).basicsize();
        cpython::debug_offsets::check(&layout, code_start)?;
        let other_tracer = match api.get_reftracer {
            Some(get) => get(std::ptr::null_mut()).is_some(),
            None => false,
        };
        let creations = if !layout.reftracer {
            Creations::NewReference
        } else if api.set_reftracer.is_some() && !other_tracer {
            Creations::RefTracer
        } else {
            Creations::Allocations
        };
        let unwinder = Unwinder::new(api.eval_loop);
        libc::pthread_atfork(None, None, Some(after_fork_child));
        // Watching needs the object at its creation, which only creation events give.
        let breakpoints = if creations == Creations::Allocations && !layout.reftracer {
            Err(
                "this interpreter gives no creation events (statically linked), so no \
                 object is watched as it is made"
                    .to_string(),
            )
        } else if std::env::var_os("REFHUNT_NO_WATCH").is_some() {
            Err("watching was turned off (--no-watch)".to_string())
        } else {
            Breakpoints::open_in_background(hooks::on_refcount_write)
        };
        let interpreter = crate::modules::loaded()
            .into_iter()
            .find(|m| (m.start..m.end).contains(&api.eval_loop.0))
            .map_or((0, 0), |m| (m.start, m.end));
        let native = std::env::var_os("REFHUNT_NO_NATIVE").is_none();
        hooks::install(
            State::new(
                api,
                layout,
                code_start,
                unwinder,
                creations,
                Holds::new(breakpoints),
                interpreter,
            ),
            native,
        );
        TRACKING.store(true, Ordering::SeqCst);
        Ok(())
    })
}

/// Stops recording new objects; frees are still followed.
#[no_mangle]
pub extern "C" fn refhunt_pause() -> c_int {
    TRACKING.store(false, Ordering::SeqCst);
    0
}

/// Starts measured run `epoch` (1, 2, ...): stacks taken from now carry it. 0 ends
/// repetition.
#[no_mangle]
pub extern "C" fn refhunt_set_epoch(epoch: u16) -> c_int {
    EPOCH.store(epoch, Ordering::SeqCst);
    // A boundary between measured runs: whose refcount grew in the run that ended.
    if let Some(census) = STATE.lock().as_mut().and_then(|s| s.windows.census_mut()) {
        census.boundary();
    }
    0
}

/// Walks the stack of one object in about `every` of each kind (see `sampler`); 0 or 1
/// walks every object's.
#[no_mangle]
pub extern "C" fn refhunt_set_sampling(every: u32) -> c_int {
    sampler::EVERY.store(every, Ordering::SeqCst);
    0
}

/// What the window's breakpoints watch: 0 nothing, 1 objects as they are made (a plain
/// window, the default), 2 the objects that the last snapshot wanted a holder for (a holder
/// run).
#[no_mangle]
pub extern "C" fn refhunt_watch(mode: u32) -> c_int {
    guarded(|| {
        let mut guard = STATE.lock();
        let s = guard.as_mut().ok_or("refhunt was not started")?;
        let arming = match mode {
            0 => Arming::Off,
            1 => Arming::Creations,
            _ => Arming::Targets(s.holder_sites.keys().copied().collect()),
        };
        s.holds.clear(arming);
        s.reserve_for_traps();
        if mode == 2 {
            // Python code ran since the snapshot found them alive: each is still mapped and of
            // its type, or left alone. As at creation (see `hooks::on_create`), only an
            // object whose memory goes back through the hooks, or a static one, is watched.
            let readable = crate::maps::Readable::of_self();
            let modules = crate::modules::loaded();
            let take = s.holder_objects.len().min(crate::breakpoints::SLOTS);
            s.holder_chunk = s.holder_objects.drain(..take).collect();
            for o in &s.holder_chunk {
                let still = readable.contains(o.op, 16)
                    // SAFETY: the header is read only once its 16 bytes are found mapped.
                    && unsafe { cpython::Header::new(o.op) }.type_addr() == o.tp;
                if !still {
                    continue;
                }
                // SAFETY: `o.op`, reachable at the snapshot, still has `o.tp` as its type word:
                // a live instance keeps its type alive, and a static type lives for the
                // process. (Had it died since with its memory untouched, a heap type could be
                // gone: the type is read only after this check, which narrows that to nil in
                // practice but does not prove it.)
                let tp = unsafe { cpython::Type::new(o.tp) };
                let freed_by_hooks = s.api.standard_frees.contains(&tp.free())
                    || crate::modules::find(&modules, o.op).is_some();
                if freed_by_hooks {
                    let block = o.op - tp.preheader(&s.layout);
                    // SAFETY: a mapped object of its type, as it was at the snapshot: live.
                    unsafe { s.holds.watch(block, o.op, false) };
                }
            }
        }
        Ok(())
    })
}

/// The code object of the function that makes each measured call, and the holder run's.
///
/// # Safety
/// `code` is a code object that stays alive (a module-level function's).
#[no_mangle]
pub unsafe extern "C" fn refhunt_set_call_code(code: *mut cpython::PyObject) -> c_int {
    guarded(|| {
        let mut guard = STATE.lock();
        let s = guard.as_mut().ok_or("refhunt was not started")?;
        s.stacks.call_code = code as usize;
        Ok(())
    })
}

/// 1 if the last snapshot left a leak without a holder that a holder run could name, and
/// no holder run has watched it yet.
#[no_mangle]
pub extern "C" fn refhunt_holders_wanted() -> c_int {
    STATE.lock().as_mut().map_or(0, |s| {
        let wanted = !s.holder_sites.is_empty() || !s.holder_objects.is_empty();
        c_int::from(wanted && s.holds.refused().is_none())
    })
}

/// Ends a holder run (`refhunt_watch(2)` and one more call) and adds what its breakpoints
/// saw to the innermost window's capture: each watched object that survived goes to its group,
/// each old object to its entry, with the call counted.
///
/// # Safety
/// Tracking is paused; the GIL is held.
#[no_mangle]
pub unsafe extern "C" fn refhunt_add_holders() -> c_int {
    guarded(|| {
        let mut guard = STATE.lock();
        let s = guard.as_mut().ok_or("refhunt was not started")?;
        let mut capture = s.windows.take_capture().ok_or("no snapshot was taken")?;
        s.holds.release_all();
        // SAFETY: the GIL is held and tracking is paused (caller's contract).
        unsafe { snapshot::add_holders(s, &mut capture) };
        s.windows.set_capture(capture);
        s.holds.clear(Arming::Off);
        // The sites are watched in the first holder run; old objects four at a time.
        s.holder_sites.clear();
        s.holder_chunk.clear();
        Ok(())
    })
}

static VERDICT: Mutex<Option<CString>> = Mutex::new(None);

/// The verdict on the innermost window's capture (see `refhunt_core::verdict`), as JSON: valid
/// until the next call; NULL if there is none (`refhunt_error()` says why).
#[no_mangle]
pub extern "C" fn refhunt_verdict() -> *const c_char {
    let status = guarded(|| {
        let guard = STATE.lock();
        let s = guard.as_ref().ok_or("refhunt was not started")?;
        let capture = s.windows.capture().ok_or("no snapshot was taken")?;
        let json = Verdict::of(capture).to_json();
        *VERDICT.lock().unwrap_or_else(|e| e.into_inner()) = CString::new(json).ok();
        Ok(())
    });
    if status != 0 {
        return std::ptr::null();
    }
    VERDICT
        .lock()
        .map(|v| v.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
        .unwrap_or(std::ptr::null())
}

/// Writes the innermost window's capture to `path`, readable by the user alone; a symlink there
/// is not followed.
///
/// # Safety
/// `path` is NUL-terminated; the GIL is held.
#[no_mangle]
pub unsafe extern "C" fn refhunt_write_capture(path: *const c_char) -> c_int {
    guarded(|| {
        // SAFETY: `path` is NUL-terminated (caller's contract).
        let path = unsafe { CStr::from_ptr(path) }
            .to_str()
            .map_err(|e| e.to_string())?;
        // Held while writing: what serializing allocates passes the hooks unrecorded.
        let guard = STATE.lock();
        let s = guard.as_ref().ok_or("refhunt was not started")?;
        let capture = s.windows.capture().ok_or("no snapshot was taken")?;
        write_private(path, capture.to_json().as_bytes())
            .map_err(|e| format!("cannot write {path}: {e}"))
    })
}

fn write_private(path: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .write_all(bytes)
}

/// Opens a tracking window, paused, inside the innermost open one if any (see
/// `crate::windows`): an outermost window starts with nothing recorded.
#[no_mangle]
pub extern "C" fn refhunt_open_window() -> c_int {
    hooks::open_window();
    0
}

/// Closes the innermost window: the enclosing one goes on, tracking or not, in the run it
/// was in.
#[no_mangle]
pub extern "C" fn refhunt_close_window() -> c_int {
    hooks::close_window();
    0
}

/// Marks the objects in `objects` (a list from `gc.get_objects()`) as alive before the
/// window, so that the snapshot can tell which tracked objects were made unseen, and takes
/// the census of references (see `census`).
///
/// # Safety
/// `objects` is a live `list`; the GIL is held.
#[no_mangle]
pub unsafe extern "C" fn refhunt_mark_before(objects: *mut cpython::PyObject) -> c_int {
    guarded(|| {
        // SAFETY: `objects` is a live list and the GIL is held (caller's contract).
        let items = unsafe { cpython::list_items(objects as usize) };
        // SAFETY: the list's items are live objects while it holds them, GIL held.
        unsafe { hooks::mark_before(&items) };
        let mut guard = STATE.lock();
        if let Some(s) = guard.as_mut() {
            let roots = Roots {
                gc_items: &items,
                lists: &[objects as usize],
                ours: &s.codes,
            };
            // SAFETY: the items are live objects, `objects` the list handing them over, and
            // the GIL is held, as `count` needs.
            let census = unsafe { Census::take(&s.api, &s.layout, &roots) };
            s.windows.set_census(census);
        }
        Ok(())
    })
}

/// A pass of the screen (see `crate::screen`) over what `objects`, a list from
/// `gc.get_objects()`, leads to, in the innermost window. The window's first notes the
/// refcounts and the references found, and returns 0. The next ends the screened calls that
/// ran between, of `tests` tests each made as `runs` measured runs: it sets `tests_flagged`
/// to two masks of a bit per test whose calls must be looked at more closely (see
/// `screen::Screened`), those whose survivors or native blocks the snapshot may classify,
/// then those whose old objects only the full method can tell; and returns 1. The two take the same arguments, so that the caller's frames are alike at
/// both. -1 on error (`refhunt_error()` says why).
///
/// # Safety
/// `objects` is a live `list`; `tests_flagged` points to two writable u64s; the GIL is held;
/// tracking is paused.
#[no_mangle]
pub unsafe extern "C" fn refhunt_screen(
    objects: *mut cpython::PyObject,
    runs: u16,
    tests: u16,
    tests_flagged: *mut u64,
) -> c_int {
    screened(|s| {
        if runs == 0 || u32::from(runs) * u32::from(tests) > 64 {
            return Err(format!(
                "{tests} tests of {runs} runs: at most 64 runs in all"
            ));
        }
        if s.windows.innermost() == 0 {
            return Err("the screen needs an open window".into());
        }
        let Some(baseline) = s.windows.take_baseline() else {
            // SAFETY: the items are live while the list holds them, GIL held; the list
            // hands them over.
            let baseline = unsafe {
                let items = cpython::list_items(objects as usize);
                let spare = std::mem::take(&mut s.screen_spare);
                Baseline::take(s, &items, &[objects as usize], spare)
            };
            s.windows.set_baseline(baseline);
            return Ok(0);
        };
        // SAFETY: the GIL is held and tracking is paused; `objects` is a live list (caller's
        // contract); at most 64 runs.
        let screened = unsafe { screen::end(s, &baseline, objects as usize, runs, tests) };
        s.screen_spare = baseline;
        // SAFETY: `tests_flagged` is writable (caller's contract).
        unsafe { *tests_flagged = screened.survivors };
        // SAFETY: as above.
        unsafe { *tests_flagged.add(1) = screened.old };
        Ok(1)
    })
}

/// Test `test` of the screened calls begins its runs (`ended` 0) or ends them (1): the
/// screen notes the refcounts of what it reached at its start around them, to tell which
/// test took the references that old objects gain.
///
/// # Safety
/// The GIL is held; tracking is paused.
#[no_mangle]
pub unsafe extern "C" fn refhunt_screen_test(test: u16, runs: u16, ended: c_int) -> c_int {
    screened(|s| {
        if test >= 64 {
            return Err(format!("test {test} of a screen: at most 64"));
        }
        let mut baseline = s.windows.take_baseline().ok_or("no screen pass began")?;
        // SAFETY: the GIL is held and tracking is paused (caller's contract).
        unsafe { baseline.mark_test(s, test, runs, ended != 0) };
        s.windows.set_baseline(baseline);
        Ok(0)
    })
}

/// Runs `f` on the state, its lock held so that what it allocates passes the hooks
/// unrecorded; its result, or -1 with the error kept for `refhunt_error()`.
fn screened(f: impl FnOnce(&mut State) -> Result<c_int, String>) -> c_int {
    let mut result = -1;
    let status = guarded(|| {
        let crate::lock::Hooked::Locked(mut guard) = STATE.lock_for_hook() else {
            return Err("screen called from inside the agent".into());
        };
        let s = guard.as_mut().ok_or("refhunt was not started")?;
        result = f(s)?;
        Ok(())
    });
    if status == 0 {
        result
    } else {
        -1
    }
}

/// A forked child starts with nothing recorded and records nothing: the report belongs to
/// the parent.
extern "C" fn after_fork_child() {
    TRACKING.store(false, Ordering::SeqCst);
    // SAFETY: this runs in a forked child, which has only the forking thread: a holder of
    // the lock in the parent does not exist here.
    unsafe { STATE.force_unlock() };
    hooks::forget_in_child();
    unwind::reset_thread_bounds();
}

/// Classifies the survivors into the capture of the window, kept for `refhunt_verdict`,
/// holder runs and `refhunt_write_capture`.
///
/// `facts` is the JSON of what only Python knows (`refhunt_core::capture::Facts`: the
/// interpreter, argv, counters, notes); the agent makes the capture around it. Tracking must
/// be paused.
///
/// `garbage` lists the objects the last `gc.collect()` found unreachable (kept with
/// `gc.DEBUG_SAVEALL`): they are cyclic garbage. `in_flight` lists what the program holds
/// where no traversal looks, such as the exception a `track()` block ends with.
///
/// # Safety
/// `gc_objects` is the list returned by `gc.get_objects()`, `garbage` and `in_flight` lists;
/// `facts` is NUL-terminated; the GIL is held.
#[no_mangle]
pub unsafe extern "C" fn refhunt_snapshot(
    gc_objects: *mut cpython::PyObject,
    garbage: *mut cpython::PyObject,
    in_flight: *mut cpython::PyObject,
    facts: *const c_char,
) -> c_int {
    guarded(|| {
        // SAFETY: `facts` is NUL-terminated (caller's contract).
        let facts = unsafe { CStr::from_ptr(facts) }
            .to_str()
            .map_err(|e| e.to_string())?;
        let facts = Facts::from_json(facts).map_err(|e| format!("bad window facts: {e}"))?;
        let mut capture = Capture::new(facts, std::process::id());
        // Held through the snapshot: whatever it allocates passes the hooks unrecorded.
        // Another thread may hold the lock for a moment (a free without the GIL).
        let crate::lock::Hooked::Locked(mut guard) = STATE.lock_for_hook() else {
            return Err("snapshot called from inside the agent".into());
        };
        let state = guard.as_mut().ok_or("refhunt was not started")?;
        // The snapshot takes references of its own; nothing it does is a write to watch.
        state.holds.release_all();
        let watch_refused = state.holds.refused().map(String::from);
        let state = &*state;
        // SAFETY: the GIL is held and tracking is paused (caller's contract); the three lists
        // are live lists.
        let outcome = unsafe {
            snapshot::take(
                state,
                gc_objects as usize,
                garbage as usize,
                in_flight as usize,
            )
        };
        // SAFETY: the GIL is held (caller's contract).
        if state.creations == Creations::RefTracer && !unsafe { hooks::tracer_is_ours(&state.api) }
        {
            capture.notes.push(
                "another tool replaced refhunt's PyRefTracer during the window (tracemalloc \
                 started?), so objects created after that were not all seen"
                    .into(),
            );
        } else if state.layout.reftracer && !state.creations.seen() {
            capture.notes.push(
                "another tool owned PyRefTracer when refhunt started, so objects reused from \
                 freelists may be attributed to the site that first allocated them"
                    .into(),
            );
        } else if !state.creations.seen() {
            capture.notes.push(format!(
                "this Python 3.{} calls _Py_NewReference directly (a statically linked \
                 interpreter), so refhunt cannot see an object reused from a freelist: a leaked \
                 float, tuple, list or dict may be missed or counted at the site that first \
                 allocated its memory",
                state.layout.minor
            ));
        }
        if let Some(every) = state.sampled_every {
            capture.notes.push(format!(
                "sampled stacks: one walked in about {every} objects of each kind; counts are \
                 exact, and where one line makes objects of one type at several C sites, their \
                 split between the sites is estimated (`--exact` walks every stack)"
            ));
        }
        capture.watch_refused = watch_refused;
        let lost = hooks::LOST_WRITES.load(Ordering::Relaxed);
        if lost > 0 {
            capture.notes.push(format!(
                "{lost} writes to watched refcounts came while the agent was busy and went unrecorded"
            ));
        }
        capture.unexplained = outcome.unexplained;
        capture.native = outcome.native;
        let lost_frees = hooks::LOST_FREES.load(Ordering::Relaxed);
        if lost_frees > 0 {
            capture.notes.push(format!(
                "{lost_frees} frees came while the agent was busy and could not be recorded: \
                 their blocks may be listed as native leaks"
            ));
        }
        capture.groups = outcome.groups;
        capture.stacks = outcome.stacks;
        capture.modules = outcome.modules;
        capture.counters.live_objects = outcome.live_objects;
        capture.counters.unseen = outcome.unseen.as_ref().map(|u| u.total);
        if let Some(u) = outcome
            .unseen
            .filter(|u| u.total > (outcome.live_objects / 1000).max(100))
        {
            capture.notes.push(format!(
                "self-check: the collector tracks {} objects made in the window that refhunt did \
                 not see made ({}); their leaks would be missed",
                u.total,
                u.by_type
                    .iter()
                    .map(|(t, n)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(s) = guard.as_mut() {
            s.holder_sites = outcome.holder_sites;
            s.holder_objects = outcome.holder_objects;
            s.windows.set_capture(capture);
        }
        Ok(())
    })
}
