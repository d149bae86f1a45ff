//! Native stack unwinding from DWARF call-frame information, in process.
//!
//! CPython is built without frame pointers, so each frame's caller is found from the
//! `.eh_frame` rules of the module that holds its return address. The loader maps
//! `.eh_frame_hdr` and `.eh_frame` into memory, so the unwinder reads them where they are:
//! no file I/O and nothing to open in a hook.
//!
//! Evaluating CFI costs microseconds, so the rule for each address is kept in a direct-mapped
//! cache: after warm-up a frame costs a cache probe and two loads. A program allocates from
//! the same few stacks over and over, so whole walks are remembered too (see [`Memo`]).
//!
//! Only the x86_64 rules that compilers emit for ordinary functions are understood (CFA = rsp or rbp plus an offset,
//! return address at CFA-8, rbp saved at an offset or unchanged); anything else ends the walk.

use crate::modules::{self, LoadedModule};
use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, ParsedEhFrameHdr,
    RegisterRule, UnwindContext, UnwindSection, X86_64,
};
use std::cell::Cell;

type Slice = EndianSlice<'static, LittleEndian>;

/// Registers at the point where the walk starts.
#[derive(Clone, Copy)]
pub struct Regs {
    pub pc: usize,
    pub sp: usize,
    pub bp: usize,
}

/// The registers of the function it is expanded in. That function must stay on the stack
/// while the walk runs: call the unwinder from it, never return the registers.
macro_rules! here {
    () => {{
        let pc: usize;
        let sp: usize;
        let bp: usize;
        // SAFETY: the asm only copies rip, rsp and rbp into three output registers: it reads
        // and writes no memory, uses no stack and keeps the flags, as its options say.
        unsafe {
            core::arch::asm!(
                "lea {0}, [rip]",
                "mov {1}, rsp",
                "mov {2}, rbp",
                out(reg) pc,
                out(reg) sp,
                out(reg) bp,
                options(nomem, nostack, preserves_flags)
            );
        }
        $crate::unwind::Regs { pc, sp, bp }
    }};
}
pub(crate) use here;

const CACHE_SLOTS: usize = 1 << 14;
const NO_RBP: i32 = i32::MIN;

#[derive(Clone, Copy, Default)]
struct Rule {
    addr: usize,
    cfa_offset: i32,
    rbp_offset: i32,
    cfa_from_rbp: bool,
    /// 0: empty slot; 1: a rule; 2: no rule here, the walk ends.
    kind: u8,
}

/// Stack words a typical walk reads: a return address and a saved rbp per frame.
const TYPICAL_READS: usize = 32;
const MEMO_BITS: u32 = 10;

/// A memo keeps the registers and stack words it read flipped by this, into values no
/// pointer has: they are the program's, and may point to its blocks, which the scan for
/// pointers to native blocks (`crate::scan`) must not find in the agent's memory.
const HIDDEN: usize = 1 << 63;

/// A finished walk and every word of the stack it read. A walk is a function of its starting
/// registers and of those words alone, so a walk that starts from the same registers while
/// the words hold the same values would find the same frames: checking the words replaces
/// evaluating a rule per frame. rbp counts only if a rule read it before a frame restored it.
#[derive(Clone)]
struct Memo {
    pc: usize,
    sp: usize,
    /// The starting rbp, if the walk depended on it, flipped by [`HIDDEN`].
    bp: Option<usize>,
    /// Stack slots and the words read there, flipped by [`HIDDEN`].
    reads: Vec<(usize, usize)>,
    frames: Vec<u64>,
}

struct EhTable {
    hdr: ParsedEhFrameHdr<Slice>,
    eh_frame: EhFrame<Slice>,
    bases: BaseAddresses,
}

pub struct Unwinder {
    modules: Vec<LoadedModule>,
    tables: Vec<Option<Option<EhTable>>>,
    ctx: Box<UnwindContext<usize>>,
    cache: Vec<Rule>,
    memos: Vec<Option<Memo>>,
    /// The interpreter's eval loop: Python frames take over from here.
    stop: (usize, usize),
    /// The agent's own code, left out of every stack.
    own: (usize, usize),
    loader_generation: u64,
    /// A walk from a signal handler is under way (see [`Unwinder::walk_in_signal`]).
    in_signal: bool,
}

thread_local! {
    static STACK_BOUNDS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// This thread's stack, read once per thread.
fn stack_bounds() -> (usize, usize) {
    STACK_BOUNDS.with(|b| {
        if b.get().1 == 0 {
            b.set(query_stack_bounds());
        }
        b.get()
    })
}

/// Forget the cached bounds: a forked child runs on a copy of one thread's stack only.
pub fn reset_thread_bounds() {
    STACK_BOUNDS.with(|b| b.set((0, 0)));
}

/// The mapping that holds this thread's stack pointer; the main thread's reaches down as far
/// as its rlimit lets it grow, short of the mapping below (as glibc computes it).
fn query_stack_bounds() -> (usize, usize) {
    let here = 0u8;
    let Some(m) = crate::maps::mapping_of(&here as *const u8 as usize) else {
        return (0, 0);
    };
    if !m.main_stack {
        return (m.lo, m.hi);
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the local struct.
    let grows = match unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } {
        0 if limit.rlim_cur != libc::RLIM_INFINITY => limit.rlim_cur as usize,
        _ => 8 << 20,
    };
    (
        m.hi.saturating_sub(grows).max(m.previous_end).min(m.lo),
        m.hi,
    )
}

fn loader_generation() -> u64 {
    /// Stores the loader's count of objects loaded so far, from the first module, and stops.
    ///
    /// # Safety
    /// Called by `dl_iterate_phdr` with a valid `info`, and with `data` the `*mut u64` that
    /// `loader_generation` passed it.
    unsafe extern "C" fn adds(
        info: *mut libc::dl_phdr_info,
        _: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `info` is valid for the call and `data` points to the caller's `u64`
        // (caller's contract).
        unsafe { *(data as *mut u64) = (*info).dlpi_adds };
        1
    }
    let mut n = 0u64;
    // SAFETY: `adds` takes `data` as the `*mut u64` passed here, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(adds), &mut n as *mut u64 as *mut _) };
    n
}

impl Unwinder {
    pub fn new(stop: (usize, usize)) -> Unwinder {
        let own_addr = Unwinder::new as *const () as usize;
        let modules = modules::loaded();
        let own = modules::find(&modules, own_addr)
            .map(|i| (modules[i].start, modules[i].end))
            .unwrap_or((0, 0));
        Unwinder {
            tables: (0..modules.len()).map(|_| None).collect(),
            modules,
            ctx: Box::new(UnwindContext::new()),
            cache: vec![Rule::default(); CACHE_SLOTS],
            memos: vec![None; 1 << MEMO_BITS],
            stop,
            own,
            loader_generation: loader_generation(),
            in_signal: false,
        }
    }

    /// Walks from `regs` and writes the addresses outside the agent, innermost first,
    /// stopping at the eval loop. Returns how many were written.
    pub fn walk(&mut self, regs: Regs, out: &mut [u64]) -> usize {
        let slot = (regs.pc ^ regs.sp.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> (64 - MEMO_BITS);
        if let Some(m) = &self.memos[slot] {
            let same_start =
                m.pc == regs.pc && m.sp == regs.sp && m.bp.is_none_or(|bp| bp == regs.bp ^ HIDDEN);
            // The words were readable stack when recorded, and a thread's stack stays mapped.
            if same_start
                && m.reads
                    .iter()
                    // SAFETY: each `at` was read as a word of a thread's stack, inside its
                    // bounds, by the walk that recorded the memo, and a walk that starts at the
                    // same `sp` runs on that same stack, which stays mapped while it runs.
                    .all(|&(at, v)| unsafe { *(at as *const usize) } == v ^ HIDDEN)
            {
                let n = m.frames.len().min(out.len());
                out[..n].copy_from_slice(&m.frames[..n]);
                return n;
            }
        }
        let mut memo = self.memos[slot].take().unwrap_or(Memo {
            pc: 0,
            sp: 0,
            bp: None,
            reads: Vec::with_capacity(TYPICAL_READS),
            frames: Vec::with_capacity(out.len()),
        });
        let n = self.walk_rules(regs, out, &mut memo);
        memo.frames.clear();
        memo.frames.extend_from_slice(&out[..n]);
        self.memos[slot] = Some(memo);
        n
    }

    /// A walk from a signal handler, which must not allocate: it may have stopped a thread
    /// inside malloc. Walks are not remembered, and a module loaded since the last look ends
    /// the walk there rather than be read in.
    pub fn walk_in_signal(&mut self, regs: Regs, out: &mut [u64]) -> usize {
        self.in_signal = true;
        let mut memo = Memo {
            pc: 0,
            sp: 0,
            bp: None,
            reads: Vec::new(),
            frames: Vec::new(),
        };
        let n = self.walk_rules(regs, out, &mut memo);
        self.in_signal = false;
        n
    }

    /// The walk itself, noting in `memo` what it read (not in a signal handler).
    fn walk_rules(&mut self, regs: Regs, out: &mut [u64], memo: &mut Memo) -> usize {
        let (lo, hi) = stack_bounds();
        let Regs {
            mut pc,
            mut sp,
            mut bp,
        } = regs;
        memo.pc = pc;
        memo.sp = sp;
        memo.bp = None;
        memo.reads.clear();
        let mut bp_restored = false;
        let mut n = 0;
        let mut first = true;
        for _ in 0..out.len() + 16 {
            if pc >= self.stop.0 && pc < self.stop.1 {
                break;
            }
            // The first address is where the walk starts: the agent's own (a hook), or the
            // instruction after a trapped write, which is the writer's.
            let own = pc >= self.own.0 && pc < self.own.1;
            if !own {
                out[n] = pc as u64;
                n += 1;
                if n == out.len() {
                    break;
                }
            }
            // A return address points after the call; its rule is the call's.
            let Some(rule) = self.rule(if first { pc } else { pc - 1 }) else {
                break;
            };
            if rule.cfa_from_rbp && !bp_restored {
                memo.bp = Some(regs.bp ^ HIDDEN);
            }
            let base = if rule.cfa_from_rbp { bp } else { sp };
            let cfa = base.wrapping_add(rule.cfa_offset as isize as usize);
            if cfa <= sp || cfa < lo + 8 || cfa > hi {
                break;
            }
            // SAFETY: both words read lie inside this thread's stack, `[lo, hi)` from its
            // pthread attributes: `cfa - 8` as just checked, the saved rbp's slot as checked
            // below before the read; a thread's own stack is mapped while it runs.
            unsafe {
                if rule.rbp_offset != NO_RBP {
                    let slot = cfa.wrapping_add(rule.rbp_offset as isize as usize);
                    if slot < lo || slot + 8 > hi {
                        break;
                    }
                    bp = *(slot as *const usize);
                    if !self.in_signal {
                        memo.reads.push((slot, bp ^ HIDDEN));
                    }
                    bp_restored = true;
                }
                pc = *((cfa - 8) as *const usize);
                if !self.in_signal {
                    memo.reads.push((cfa - 8, pc ^ HIDDEN));
                }
            }
            sp = cfa;
            first = false;
            if pc == 0 {
                break;
            }
        }
        n
    }

    fn rule(&mut self, addr: usize) -> Option<Rule> {
        let slot = (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) & (CACHE_SLOTS - 1);
        let cached = self.cache[slot];
        let rule = if cached.kind != 0 && cached.addr == addr {
            cached
        } else {
            let computed = self.compute(addr).unwrap_or(Rule {
                addr,
                kind: 2,
                ..Rule::default()
            });
            self.cache[slot] = computed;
            computed
        };
        (rule.kind == 1).then_some(rule)
    }

    fn compute(&mut self, addr: usize) -> Option<Rule> {
        let i = match modules::find(&self.modules, addr) {
            Some(i) => i,
            None if self.in_signal => return None,
            None => {
                self.refresh_modules();
                modules::find(&self.modules, addr)?
            }
        };
        if self.tables[i].is_none() {
            self.tables[i] = Some(eh_table(&self.modules[i]));
        }
        let table = self.tables[i].as_ref()?.as_ref()?;
        let fde = table
            .hdr
            .table()?
            .fde_for_address(
                &table.eh_frame,
                &table.bases,
                addr as u64,
                EhFrame::cie_from_offset,
            )
            .ok()?;
        let row = fde
            .unwind_info_for_address(&table.eh_frame, &table.bases, &mut self.ctx, addr as u64)
            .ok()?;
        let (cfa_from_rbp, cfa_offset) = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RSP => {
                (false, *offset)
            }
            CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RBP => {
                (true, *offset)
            }
            _ => return None,
        };
        match row.register(X86_64::RA) {
            RegisterRule::Offset(-8) => {}
            _ => return None,
        }
        let rbp_offset = match row.register(X86_64::RBP) {
            RegisterRule::Offset(o) => i32::try_from(o).ok()?,
            RegisterRule::Undefined | RegisterRule::SameValue => NO_RBP,
            _ => return None,
        };
        Some(Rule {
            addr,
            cfa_offset: i32::try_from(cfa_offset).ok()?,
            rbp_offset,
            cfa_from_rbp,
            kind: 1,
        })
    }

    /// Picks up modules loaded since the last look (extensions imported after start).
    fn refresh_modules(&mut self) {
        let generation = loader_generation();
        if generation == self.loader_generation {
            return;
        }
        self.loader_generation = generation;
        self.modules = modules::loaded();
        self.tables = (0..self.modules.len()).map(|_| None).collect();
        self.cache.iter_mut().for_each(|r| *r = Rule::default());
        // Forgotten, not freed: a freed memo's slot would keep the address of its buffers,
        // which the program's blocks may take next (see `HIDDEN`).
        for m in self.memos.iter_mut().flatten() {
            m.pc = 0;
            m.reads.clear();
            m.frames.clear();
        }
    }
}

fn eh_table(module: &LoadedModule) -> Option<EhTable> {
    let (hdr_addr, hdr_len) = module.eh_frame_hdr?;
    // SAFETY: `PT_GNU_EH_FRAME` is a read-only part of a `PT_LOAD` segment that the loader
    // mapped, `hdr_len` bytes long. NOTE: taken as `'static`, which holds only while the
    // module is not unloaded (`dlclose`); nothing here shows that it never is.
    let hdr_bytes: &'static [u8] =
        unsafe { std::slice::from_raw_parts(hdr_addr as *const u8, hdr_len) };
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr as u64);
    let hdr = EhFrameHdr::new(hdr_bytes, LittleEndian)
        .parse(&bases, 8)
        .ok()?;
    let eh_frame_addr = match hdr.eh_frame_ptr() {
        gimli::Pointer::Direct(a) => a as usize,
        gimli::Pointer::Indirect(_) => return None,
    };
    if eh_frame_addr < module.start || eh_frame_addr >= module.end {
        return None;
    }
    // SAFETY: `.eh_frame` starts inside the module's loaded span, checked just above, and is
    // read only at the offsets its header and entries give, inside the section. NOTE: the
    // slice runs on to the end of the span, past the section, over any gap between segments,
    // which is not shown to be mapped; and it is `'static` as the header is.
    let eh_bytes: &'static [u8] = unsafe {
        std::slice::from_raw_parts(eh_frame_addr as *const u8, module.end - eh_frame_addr)
    };
    let mut eh_frame = EhFrame::new(eh_bytes, LittleEndian);
    eh_frame.set_address_size(8);
    let bases = bases
        .set_eh_frame(eh_frame_addr as u64)
        .set_text(module.start as u64);
    Some(EhTable {
        hdr,
        eh_frame,
        bases,
    })
}
