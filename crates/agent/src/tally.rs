//! What the snapshot finds pointing at each survivor, in a shadow of the heap ([`Shadow`]):
//! one 32-bit record a survivor for the references found in objects, the few pointers from
//! static data or C memory in a map beside it. A hash map of every survivor took 72 bytes
//! and a rehash each: most of a snapshot of 3,000,000 survivors, and its peak RSS.

use crate::shadow::Shadow;
use refhunt_core::capture::Class;
use rustc_hash::FxHashMap;

/// What points at one survivor.
#[derive(Clone, Copy, Default, Debug)]
pub struct Held {
    /// References found in objects.
    pub found: i64,
    /// References from the snapshot's own lists (`gc.get_objects()`, the garbage).
    pub ours: i64,
    /// Pointers found in static data.
    pub statics: i64,
    /// Pointers found in memory that C code owns through an object: a module's state, or a
    /// field of an object's C struct that its `tp_traverse` does not visit.
    pub owned: i64,
    /// The first such owner, to say where.
    pub owner: Option<Owner>,
    /// Referred to by an object outside the survivors.
    pub outside_holder: bool,
}

/// Where a pointer from C memory was found.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Owner {
    /// The static data of the loaded module at this index.
    Static(usize),
    /// The state (`PyModule_GetState`) of this module object.
    ModuleState(usize),
    /// A C field of an object of this type.
    Field(usize),
    /// A buffer that the static data of the loaded module at this index points to.
    StaticBuffer(usize),
}

/// A record: the references found (past `FOUND`, the rest in the map), the survivor's class
/// once given, the snapshot's own references, and flags.
const FOUND: u32 = (1 << 24) - 1;
const CLASS_SHIFT: u32 = 24;
const CLASS: u32 = 7 << CLASS_SHIFT;
const OURS_SHIFT: u32 = 27;
const OURS: u32 = 3 << OURS_SHIFT;
const OUTSIDE: u32 = 1 << 29;
const EXTRA: u32 = 1 << 30;
/// Set once something points at the survivor: a record with only a class has nothing found.
const PRESENT: u32 = 1 << 31;

/// The classes a record can hold, as 1 + their index.
const CLASSES: [Class; 7] = [
    Class::Leaked,
    Class::Indirect,
    Class::Once,
    Class::HeldOutside,
    Class::Reachable,
    Class::Garbage,
    Class::Interpreter,
];

/// What few survivors have beyond the record: pointers from static data and C memory, and
/// references found past what the record counts.
#[derive(Clone, Copy, Default)]
struct Extra {
    statics: i64,
    owned: i64,
    owner: Option<Owner>,
    more_found: i64,
}

/// What the snapshot found pointing at the survivors, and the class each was given.
#[derive(Default)]
pub struct Tally {
    records: Shadow,
    extra: FxHashMap<usize, Extra>,
}

impl Tally {
    /// Rewrites `op`'s record with `f` (from 0 if it has none), marking it pointed at; the
    /// record's slot, null if the address cannot be held.
    fn point(&mut self, op: usize, f: impl FnOnce(u32) -> u32) -> *mut u32 {
        let slot = self.records.make(op);
        if !slot.is_null() {
            // SAFETY: `make` returned a record slot of the shadow's, valid while it lives.
            unsafe { *slot = f(*slot) | PRESENT };
        }
        slot
    }

    fn extra(&mut self, op: usize) -> &mut Extra {
        self.extra.entry(op).or_default()
    }

    /// A reference to `op` found in an object; `outside` when that object is no survivor.
    pub fn found(&mut self, op: usize, outside: bool) {
        let mut spill = false;
        self.point(op, |r| {
            let outside = if outside { OUTSIDE } else { 0 };
            if r & FOUND == FOUND {
                spill = true;
                r | EXTRA | outside
            } else {
                (r + 1) | outside
            }
        });
        if spill {
            self.extra(op).more_found += 1;
        }
    }

    /// A reference to `op` from one of the snapshot's own lists.
    pub fn ours(&mut self, op: usize) {
        self.point(op, |r| {
            let ours = ((r & OURS) >> OURS_SHIFT).saturating_add(1).min(3);
            r & !OURS | ours << OURS_SHIFT
        });
    }

    /// A pointer to `op` in static data (`owned` false) or in memory C code owns, found at
    /// `owner`; `outside` when no survivor holds that memory.
    pub fn pointer(&mut self, op: usize, owned: bool, owner: Owner, outside: bool) {
        let slot = self.point(op, |r| r | EXTRA | if outside { OUTSIDE } else { 0 });
        if slot.is_null() {
            return;
        }
        let extra = self.extra(op);
        if owned {
            extra.owned += 1;
        } else {
            extra.statics += 1;
        }
        extra.owner.get_or_insert(owner);
    }

    fn held(extra: &FxHashMap<usize, Extra>, op: usize, record: u32) -> Held {
        let extra = if record & EXTRA != 0 {
            extra.get(&op).copied().unwrap_or_default()
        } else {
            Extra::default()
        };
        Held {
            found: i64::from(record & FOUND) + extra.more_found,
            ours: i64::from((record & OURS) >> OURS_SHIFT),
            statics: extra.statics,
            owned: extra.owned,
            owner: extra.owner,
            outside_holder: record & OUTSIDE != 0,
        }
    }

    /// What points at `op`, if anything does.
    pub fn get(&self, op: usize) -> Option<Held> {
        let record = self.records.get(op);
        (record & PRESENT != 0).then(|| Self::held(&self.extra, op, record))
    }

    /// Gives every survivor something points at the class `f` finds from what points at it.
    pub fn classify_each(&mut self, mut f: impl FnMut(usize, Held) -> Class) {
        let extra = &self.extra;
        self.records.for_each_mut(|op, record| {
            if *record & PRESENT != 0 {
                let class = f(op, Self::held(extra, op, *record));
                *record = with_class(*record, class);
            }
        });
    }

    /// `op`'s class, if it was given one.
    pub fn class(&self, op: usize) -> Option<Class> {
        let code = (self.records.get(op) & CLASS) >> CLASS_SHIFT;
        code.checked_sub(1).map(|i| CLASSES[i as usize])
    }

    /// Gives `op` `class`; the class it had.
    pub fn set_class(&mut self, op: usize, class: Class) -> Option<Class> {
        let had = self.class(op);
        let slot = self.records.make(op);
        if !slot.is_null() {
            // SAFETY: `make` returned a record slot of the shadow's, valid while it lives.
            unsafe { *slot = with_class(*slot, class) };
        }
        had
    }
}

fn with_class(record: u32, class: Class) -> u32 {
    let code = CLASSES
        .iter()
        .position(|&c| c == class)
        .map_or(0, |i| i + 1) as u32;
    record & !CLASS | code << CLASS_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_pointers_add_up_per_survivor() {
        let mut t = Tally::default();
        let (a, b) = (0x7f00_0000_1000usize, 0x7f00_0000_2000usize);
        t.found(a, false);
        t.found(a, true);
        t.ours(a);
        t.pointer(b, false, Owner::Static(2), false);
        t.pointer(b, true, Owner::Field(9), true);
        let ha = t.get(a).unwrap();
        assert_eq!((ha.found, ha.ours, ha.statics, ha.owned), (2, 1, 0, 0));
        assert!(ha.outside_holder && ha.owner.is_none());
        let hb = t.get(b).unwrap();
        assert_eq!((hb.found, hb.statics, hb.owned), (0, 1, 1));
        assert_eq!(hb.owner, Some(Owner::Static(2)), "the first owner is kept");
        assert!(hb.outside_holder);
        assert!(t.get(a + 16).is_none());
        let mut seen = Vec::new();
        t.classify_each(|op, h| {
            seen.push((op, h.found));
            Class::Reachable
        });
        assert_eq!(seen, vec![(a, 2), (b, 0)]);
    }

    #[test]
    fn classes_sit_beside_the_counts() {
        let mut t = Tally::default();
        let (a, holder) = (0x7f00_0000_1000usize, 0x7f00_0000_2000usize);
        for _ in 0..FOUND + 5 {
            t.found(a, false);
        }
        t.classify_each(|_, h| {
            assert_eq!(
                h.found,
                i64::from(FOUND) + 5,
                "counts past the record spill over"
            );
            Class::Reachable
        });
        assert_eq!(t.class(a), Some(Class::Reachable));
        assert_eq!(t.set_class(holder, Class::Leaked), None);
        assert_eq!(t.set_class(holder, Class::Indirect), Some(Class::Leaked));
        assert!(t.get(holder).is_none(), "a class alone is nothing found");
        t.classify_each(|op, _| {
            assert_eq!(op, a, "nor is it classified again");
            Class::Reachable
        });
        for class in CLASSES {
            t.set_class(a, class);
            assert_eq!(t.class(a), Some(class));
        }
        assert_eq!(t.get(a).unwrap().found, i64::from(FOUND) + 5);
    }
}
