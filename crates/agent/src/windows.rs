//! Tracking windows, which nest: a `track()` inside another, a `check()` under `refhunt run`
//! or inside a test that `pytest --refhunt` repeats.
//!
//! Each window has a serial, stamped with the measured run on every stack taken while it is
//! the innermost (see [`Stamp`]). A window's objects are the blocks whose stack carries its
//! serial or that of a window opened inside it; an enclosing window's objects are old to the
//! inner one. So the inner window starts without forgetting anything, and the outer one
//! still counts what the inner one made, each in the outer run under way when the inner
//! window opened.

use crate::census::Census;
use crate::screen::Baseline;
use crate::stacks::{StackTable, Stamp};
use refhunt_core::capture::Capture;
use rustc_hash::FxHashMap;

struct Open {
    serial: u32,
    /// References found to every object when it opened.
    census: Option<Census>,
    /// Refcounts when a screened call began (see `crate::screen`).
    baseline: Option<Baseline>,
    /// Its snapshot's capture, which holder runs add to (a window opened inside one of them
    /// has its own).
    capture: Option<Capture>,
    resume: Resume,
}

/// What the enclosing window had when a window opened, given back when it closes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Its measured run.
    pub run: u16,
    pub tracking: bool,
    /// Whether its objects were watched as they were made.
    pub watching: bool,
}

#[derive(Default)]
pub struct Windows {
    open: Vec<Open>,
    last: u32,
    /// Each nested window's parent, and the parent's measured run when it opened.
    parents: FxHashMap<u32, (u32, u16)>,
}

impl Windows {
    /// Opens a window inside the innermost one, given what that window has now. Returns the
    /// new serial and whether another window encloses it: an outermost window starts from
    /// nothing, so the caller forgets what was recorded.
    pub fn open(&mut self, resume: Resume) -> (u32, bool) {
        self.last += 1;
        let serial = self.last;
        let nested = match self.open.last() {
            Some(parent) => {
                self.parents.insert(serial, (parent.serial, resume.run));
                true
            }
            None => {
                self.parents.clear();
                false
            }
        };
        self.open.push(Open {
            serial,
            census: None,
            baseline: None,
            capture: None,
            resume,
        });
        (serial, nested)
    }

    /// Closes the innermost window; gives back the enclosing window's serial (0 if none), and
    /// what it had when the closed one opened.
    pub fn close(&mut self) -> Option<(u32, Resume)> {
        let closed = self.open.pop()?;
        Some((self.innermost(), closed.resume))
    }

    /// The innermost open window's serial; 0 if none is open.
    pub fn innermost(&self) -> u32 {
        self.open.last().map_or(0, |w| w.serial)
    }

    /// Gives the innermost open window its census, taken as it opened.
    pub fn set_census(&mut self, census: Census) {
        if let Some(w) = self.open.last_mut() {
            w.census = Some(census);
        }
    }

    pub fn census_mut(&mut self) -> Option<&mut Census> {
        self.open.last_mut().and_then(|w| w.census.as_mut())
    }

    pub fn census(&self) -> Option<&Census> {
        self.open.last().and_then(|w| w.census.as_ref())
    }

    /// Gives the innermost open window the refcounts its screened call began with.
    pub fn set_baseline(&mut self, baseline: Baseline) {
        if let Some(w) = self.open.last_mut() {
            w.baseline = Some(baseline);
        }
    }

    /// The innermost open window's screen baseline, which it gives up.
    pub fn take_baseline(&mut self) -> Option<Baseline> {
        self.open.last_mut().and_then(|w| w.baseline.take())
    }

    /// Gives the innermost open window its snapshot's capture.
    pub fn set_capture(&mut self, capture: Capture) {
        if let Some(w) = self.open.last_mut() {
            w.capture = Some(capture);
        }
    }

    pub fn take_capture(&mut self) -> Option<Capture> {
        self.open.last_mut().and_then(|w| w.capture.take())
    }

    pub fn capture(&self) -> Option<&Capture> {
        self.open.last().and_then(|w| w.capture.as_ref())
    }

    /// Forgets every window: a forked child records nothing.
    pub fn forget(&mut self) {
        *self = Windows {
            last: self.last,
            ..Windows::default()
        };
    }

    /// The innermost window as its snapshot sees the stacks recorded so far.
    pub fn view(&self, stacks: &StackTable) -> View {
        let floor = self.innermost();
        let runs = (0..stacks.len() as u32)
            .map(|id| self.run_in(floor, stacks.stamp(id)))
            .collect();
        View { runs }
    }

    /// Whether a stack stamped `stamp` was taken in window `floor` or one opened inside it,
    /// and if so, in which of `floor`'s runs (0 outside repetition).
    fn run_in(&self, floor: u32, stamp: Stamp) -> Option<u16> {
        if stamp.window < floor {
            return None;
        }
        let (mut window, mut run) = (stamp.window, stamp.run);
        while window != floor {
            // Serials grow: one above `floor`, the innermost open window, was opened inside it.
            (window, run) = *self.parents.get(&window)?;
        }
        Some(run)
    }
}

/// Which stacks belong to the window being captured, and in which of its runs.
pub struct View {
    /// By stack id: the run, or None for a stack of an enclosing window.
    runs: Vec<Option<u16>>,
}

impl View {
    /// Whether stack `id` was taken in this window (or one inside it).
    pub fn holds(&self, id: u32) -> bool {
        self.runs.get(id as usize).is_some_and(Option::is_some)
    }

    /// The window's measured run stack `id` was taken in; 0 outside repetition or outside
    /// the window.
    pub fn run(&self, id: u32) -> u16 {
        self.runs.get(id as usize).copied().flatten().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pyframes::PyFrameRef;

    fn stack(t: &mut StackTable, pc: u64, window: u32, run: u16) -> u32 {
        let mut new = false;
        t.intern(
            &[pc],
            &[PyFrameRef::default()],
            Stamp { run, window },
            0,
            &mut new,
        )
    }

    #[test]
    fn an_inner_window_sees_its_own_stacks_and_the_outer_one_all_in_its_runs() {
        let mut w = Windows::default();
        let mut t = StackTable::default();
        let (outer, nested) = w.open(Resume::default());
        assert!(!nested);
        let before = stack(&mut t, 1, outer, 2);
        // The outer window is in its run 2 when the inner one opens.
        let in_run = |run| Resume {
            run,
            tracking: true,
            watching: false,
        };
        let (inner, nested) = w.open(in_run(2));
        assert!(nested);
        let inside = stack(&mut t, 2, inner, 1);
        let (innermost, _) = w.open(in_run(1));
        let deepest = stack(&mut t, 3, innermost, 0);
        let v = w.view(&t);
        assert!(!v.holds(before) && !v.holds(inside) && v.holds(deepest));
        assert_eq!(w.close(), Some((inner, in_run(1))));
        let v = w.view(&t);
        assert!(!v.holds(before) && v.holds(inside) && v.holds(deepest));
        assert_eq!((v.run(inside), v.run(deepest)), (1, 1));
        assert_eq!(w.close(), Some((outer, in_run(2))));
        let v = w.view(&t);
        assert!(v.holds(before) && v.holds(inside) && v.holds(deepest));
        assert_eq!((v.run(before), v.run(inside), v.run(deepest)), (2, 2, 2));
        assert_eq!(w.close(), Some((0, Resume::default())));
        assert_eq!(w.close(), None);
    }

    #[test]
    fn an_outermost_window_forgets_the_windows_before_it() {
        let mut w = Windows::default();
        let mut t = StackTable::default();
        let (first, _) = w.open(Resume::default());
        let old = stack(&mut t, 1, first, 0);
        w.close();
        let (second, nested) = w.open(Resume::default());
        assert!(!nested && second > first);
        let new = stack(&mut t, 1, second, 0);
        let v = w.view(&t);
        assert!(!v.holds(old) && v.holds(new));
    }
}
