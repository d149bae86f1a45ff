//! Who took a reference: the refcount history of a few watched objects.
//!
//! A creation stack says who made an object, not who holds it. For a handful of objects at
//! a time, a hardware breakpoint (see [`crate::breakpoints`]) stops every write to the
//! refcount; the stack of each write is kept, summed per stack as increments and decrements.
//! The report pairs them by function and names the one outside the interpreter that took
//! more than it gave back.
//!
//! Which objects are watched:
//! - in a plain window ([`Arming::Creations`]), an object as it is made, the 1st, 2nd, 4th,
//!   8th... of each creation stack, so that the survivors of a leaking site carry their
//!   history. A watch ends when the object dies (its history goes with it), after
//!   [`TRAPS_PER_OBJECT`] writes, or once [`LEASE`] more objects were made and a new object
//!   wants the slot: the history stays, marked partial. Watching costs at most a tenth of
//!   the window's time, from the measured cost of a trap and of moving a breakpoint;
//! - in a holder run ([`Arming::Targets`]), the window run once more after the measured runs:
//!   objects made at the creation sites of the groups that need a holder, and objects that
//!   existed before, watched from the start.

use crate::breakpoints::{Breakpoints, SLOTS};
use rustc_hash::{FxHashMap, FxHashSet};

/// Writes recorded per watched object before its watch ends.
pub const TRAPS_PER_OBJECT: u32 = 32;
/// In a holder run the few targets are watched longer.
const TRAPS_PER_TARGET: u32 = 16_384;
/// Objects made after a watch began before its slot may go to a newer object.
const LEASE: u64 = 256;
/// Watched objects whose history is kept at once.
const MAX_HISTORIES: usize = 1024;
/// Distinct write stacks kept per object; others count as lost. An old object watched in
/// a holder run (`None`, a cached singleton) is written from everywhere.
const STACKS_PER_OBJECT: usize = 32;
const STACKS_PER_TARGET: usize = 1024;
/// Writes kept in order per object, runs from one stack in one direction merged.
const ORDER_PER_OBJECT: usize = 256;
/// Measured here: a trap and its stack walk about 12 us, moving one event about 3 us.
const TRAP_NS: u64 = 12_000;
const MOVE_NS: u64 = 3_000;
/// A plain window may spend this much on breakpoints before its time counts...
const BUDGET_START_NS: u64 = 5_000_000;
/// ...and then this share of its time.
const BUDGET_SHARE: u64 = 10;

/// Why watching ended when the program took SIGTRAP for itself.
pub const OWN_HANDLER: &str =
    "the program installed its own SIGTRAP handler, so breakpoints were removed";

/// Refcount writes from one stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct Writes {
    pub stack: u32,
    pub increments: u32,
    pub decrements: u32,
}

pub struct History {
    pub object: usize,
    pub writes: Vec<Writes>,
    /// The first writes in order, as (stack, change): which increment a decrement gave back
    /// is told by their order.
    pub order: Vec<(u32, i32)>,
    /// Writes past the end of `order`.
    pub unordered: u32,
    max_stacks: usize,
    /// Writes that could not be recorded (the agent was busy, or too many stacks).
    pub lost: u32,
    pub traps: u32,
    /// Watched from creation (or from the start of the holder run) until the end.
    pub whole: bool,
    /// Watched from its creation, whose reference no write shows.
    pub from_creation: bool,
    armed_at: u64,
    slot: Option<usize>,
}

impl History {
    fn record(&mut self, stack: u32, delta: isize) {
        self.traps += 1;
        let delta32 = delta.clamp(i32::MIN as isize, i32::MAX as isize) as i32;
        let room = self.order.len() < ORDER_PER_OBJECT;
        match self.order.last_mut() {
            Some((s, d)) if *s == stack && (*d > 0) == (delta32 > 0) => {
                *d = d.saturating_add(delta32)
            }
            _ if room => self.order.push((stack, delta32)),
            _ => self.unordered += 1,
        }
        let i = match self.writes.iter().position(|w| w.stack == stack) {
            Some(i) => i,
            None if self.writes.len() < self.max_stacks => {
                self.writes.push(Writes {
                    stack,
                    ..Writes::default()
                });
                self.writes.len() - 1
            }
            None => {
                self.lost += 1;
                return;
            }
        };
        let w = &mut self.writes[i];
        if delta > 0 {
            w.increments += delta as u32;
        } else {
            w.decrements += delta.unsigned_abs() as u32;
        }
    }
}

pub enum Arming {
    Off,
    Creations,
    /// Creation sites (see `StackTable::site_hash`) whose objects are watched.
    Targets(FxHashSet<u64>),
}

pub struct Holds {
    breakpoints: Result<Breakpoints, String>,
    /// The events are being opened (see `Breakpoints::open_in_background`).
    pending: bool,
    /// The block whose object each slot watches.
    slots: [Option<usize>; SLOTS],
    /// By block address.
    histories: FxHashMap<usize, History>,
    /// The histories of objects that died, emptied for reuse: a history's memory is never
    /// given back while the window lasts (its buffers are written from a signal handler).
    spare: Vec<History>,
    /// A bit per hash of a block with a history: most frees and creations test one bit.
    filter: [u64; 16],
    /// Objects made per creation stack, in a plain window.
    made: Vec<u32>,
    creations: u64,
    pub arming: Arming,
    cost_ns: u64,
    started_ns: u64,
    /// Writes recorded over the window.
    pub traps: u64,
}

fn bit(block: usize) -> (usize, u64) {
    let h = (block >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54;
    (h >> 6, 1 << (h & 63))
}

fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Holds {
    /// `started`: whether the events are being opened, or why not.
    pub fn new(started: Result<(), String>) -> Holds {
        Holds {
            pending: started.is_ok(),
            breakpoints: started.and(Err(
                "the breakpoints were still being set up when the window ended".into(),
            )),
            slots: [None; SLOTS],
            histories: FxHashMap::default(),
            spare: Vec::new(),
            filter: [0; 16],
            made: Vec::new(),
            creations: 0,
            arming: Arming::Off,
            cost_ns: 0,
            started_ns: monotonic_ns(),
            traps: 0,
        }
    }

    /// Why no breakpoint can be used, if none can.
    pub fn refused(&mut self) -> Option<&str> {
        self.settle();
        self.breakpoints.as_ref().err().map(String::as_str)
    }

    /// Takes the events once the opening thread has them.
    fn settle(&mut self) {
        if self.pending {
            if let Some(opened) = Breakpoints::opened() {
                self.breakpoints = opened;
                self.pending = false;
                // Each creation stack's objects are counted again from here: its first
                // objects to be watched are those made once watching could begin.
                self.made.clear();
            }
        }
    }

    /// A new window: nothing watched, nothing remembered.
    pub fn clear(&mut self, arming: Arming) {
        self.release_all();
        let dead: Vec<usize> = self.histories.keys().copied().collect();
        for block in dead {
            self.retire(block);
        }
        self.filter = [0; 16];
        self.made.clear();
        self.cost_ns = 0;
        self.started_ns = monotonic_ns();
        self.traps = 0;
        self.arming = arming;
    }

    /// An object was made in `block` at `stack`; `site` gives its creation site's hash.
    /// `watchable`: the block's allocation and free pass the hooks. True if it is watched
    /// from here.
    ///
    /// # Safety
    /// `op` is the new object, live.
    #[inline]
    pub unsafe fn on_create(
        &mut self,
        block: usize,
        op: usize,
        stack: u32,
        watchable: impl Fn() -> bool,
        site: impl Fn() -> u64,
    ) -> bool {
        self.forget(block);
        self.creations += 1;
        if self.pending {
            self.settle();
        }
        let wanted = match &self.arming {
            Arming::Off => false,
            Arming::Creations => {
                let i = stack as usize;
                if self.made.len() <= i {
                    self.made.resize(i + 1, 0);
                }
                self.made[i] += 1;
                self.made[i].is_power_of_two() && self.affordable()
            }
            Arming::Targets(sites) => sites.contains(&site()),
        };
        // SAFETY: the caller's object is live.
        wanted && watchable() && unsafe { self.watch(block, op, true) }
    }

    fn affordable(&self) -> bool {
        let elapsed = monotonic_ns().saturating_sub(self.started_ns);
        self.cost_ns <= BUDGET_START_NS + elapsed / BUDGET_SHARE
    }

    /// Watches the object `op` in `block`, in a free slot or one whose lease is over;
    /// `new`: it was just made.
    ///
    /// # Safety
    /// `op` is live.
    pub unsafe fn watch(&mut self, block: usize, op: usize, new: bool) -> bool {
        if self.histories.len() >= MAX_HISTORIES || self.histories.contains_key(&block) {
            return false;
        }
        self.settle();
        self.reap();
        let Ok(bp) = &mut self.breakpoints else {
            return false;
        };
        if !bp.handler_is_ours() {
            self.remove(OWN_HANDLER);
            return false;
        }
        let leased = matches!(self.arming, Arming::Creations);
        let slot = (0..SLOTS).find(|&i| self.slots[i].is_none()).or_else(|| {
            (0..SLOTS).filter(|_| leased).find(|&i| {
                self.slots[i]
                    .and_then(|b| self.histories.get(&b))
                    .is_some_and(|h| h.armed_at + LEASE < self.creations)
            })
        });
        let Some(slot) = slot else {
            return false;
        };
        self.release(slot);
        let Ok(bp) = &mut self.breakpoints else {
            return false;
        };
        self.cost_ns += MOVE_NS * bp.threads() as u64;
        // SAFETY: the caller's object is live.
        if !unsafe { bp.arm(slot, op) } {
            return false;
        }
        let max_stacks = if new {
            STACKS_PER_OBJECT
        } else {
            STACKS_PER_TARGET
        };
        self.slots[slot] = Some(block);
        let mut h = self.spare.pop().unwrap_or_else(|| History {
            object: 0,
            // Room made now: the writes are recorded in a signal handler.
            writes: Vec::with_capacity(STACKS_PER_TARGET),
            order: Vec::with_capacity(ORDER_PER_OBJECT),
            unordered: 0,
            max_stacks,
            lost: 0,
            traps: 0,
            whole: true,
            from_creation: new,
            armed_at: 0,
            slot: None,
        });
        h.object = op;
        h.max_stacks = max_stacks;
        h.whole = true;
        h.from_creation = new;
        h.armed_at = self.creations;
        h.slot = Some(slot);
        self.histories.insert(block, h);
        let (word, mask) = bit(block);
        self.filter[word] |= mask;
        true
    }

    /// Frees the slots whose watch the handler dropped: their object's memory was put to
    /// another use, so the object is gone, and its history with it.
    fn reap(&mut self) {
        for slot in 0..SLOTS {
            let Ok(bp) = &mut self.breakpoints else {
                return;
            };
            if let Some(block) = self.slots[slot].filter(|_| bp.dropped(slot)) {
                self.slots[slot] = None;
                bp.park(slot);
                self.retire(block);
            }
        }
    }

    /// Ends the watch in `slot`; its object's history stays, partial.
    fn release(&mut self, slot: usize) {
        let Some(block) = self.slots[slot].take() else {
            return;
        };
        if let Some(h) = self.histories.get_mut(&block) {
            h.slot = None;
            h.whole = false;
        }
        if let Ok(bp) = &mut self.breakpoints {
            self.cost_ns += MOVE_NS * bp.threads() as u64;
            bp.park(slot);
        }
    }

    /// Ends every watch; histories of objects watched until now stay whole.
    pub fn release_all(&mut self) {
        for slot in 0..SLOTS {
            if let Some(block) = self.slots[slot].take() {
                if let Some(h) = self.histories.get_mut(&block) {
                    h.slot = None;
                }
                if let Ok(bp) = &mut self.breakpoints {
                    bp.park(slot);
                }
            }
        }
    }

    /// The object in `block` is gone (freed, or its block made another object): so is its
    /// history, and its watch.
    #[inline]
    pub fn forget(&mut self, block: usize) {
        let (word, mask) = bit(block);
        if self.filter[word] & mask == 0 {
            return;
        }
        if let Some(slot) = self.histories.get(&block).and_then(|h| h.slot) {
            self.slots[slot] = None;
            if let Ok(bp) = &mut self.breakpoints {
                bp.park(slot);
            }
        }
        self.retire(block);
    }

    /// Empties the history of the object in `block` into the spares.
    fn retire(&mut self, block: usize) {
        if let Some(mut h) = self.histories.remove(&block) {
            h.writes.clear();
            h.order.clear();
            h.unordered = 0;
            h.lost = 0;
            h.traps = 0;
            h.slot = None;
            self.spare.push(h);
        }
    }

    /// A write of `delta` to the refcount watched in `slot`, from `stack`.
    /// `in_call`: the write came from inside the measured call; in a holder run, those
    /// from refhunt's own code around it are not the program's.
    pub fn on_write(&mut self, slot: usize, delta: isize, stack: u32, in_call: bool) {
        self.cost_ns += TRAP_NS;
        self.traps += 1;
        if matches!(self.arming, Arming::Targets(_)) && !in_call {
            return;
        }
        let Some(block) = self.slots[slot] else {
            return;
        };
        let cap = match self.arming {
            Arming::Targets(_) => TRAPS_PER_TARGET,
            _ => TRAPS_PER_OBJECT,
        };
        let Some(h) = self.histories.get_mut(&block) else {
            return;
        };
        h.record(stack, delta);
        if h.traps >= cap {
            self.release(slot);
        }
    }

    /// Every kept history, by object.
    pub fn histories(&self) -> impl Iterator<Item = &History> {
        self.histories.values()
    }

    /// Ends watching for good, for the reason given: every breakpoint is closed.
    pub fn remove(&mut self, why: &str) {
        self.settle();
        self.release_all();
        if let Ok(bp) = &mut self.breakpoints {
            bp.close();
        }
        self.breakpoints = Err(why.into());
        self.pending = false;
    }

    /// In a forked child: nothing is watched there. The events are the parent's, so the
    /// child only closes its descriptors: moving one would move the parent's breakpoint.
    pub fn forget_in_child(&mut self) {
        if let Ok(bp) = &mut self.breakpoints {
            bp.close();
        }
        self.breakpoints = Err("a forked child is not watched".into());
        self.pending = false;
        self.slots = [None; SLOTS];
        self.histories.clear();
        self.arming = Arming::Off;
    }
}
