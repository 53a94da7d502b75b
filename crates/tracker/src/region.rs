//! The recorded-block region: the tracker's own address range, from which it serves the
//! blocks it records (sampled blocks, and every block in exact mode) of up to
//! [`MAX_BLOCK`] bytes, so that `dealloc` tells a recorded block from any other by where
//! its address lies: one subtract and shift, no lookup (jemalloc and tcmalloc tell sampled
//! blocks by metadata they already read; a wrapper over `System` has none, so it makes an
//! address range of its own).
//!
//! Layout: one reservation of [`REGION_BYTES`] (2 GiB of address space, `MAP_NORESERVE`:
//! pages become memory only when a block is written) split into [`AREAS`] areas, one per
//! recorder shard, each split into spans of [`SPAN_BYTES`], one per power-of-two size
//! class from 16 B to 64 KiB. A block's address gives its area, class and slot index by
//! shifts. A second reservation holds one metadata word per slot: the block's record
//! (size and stack id) while live and recorded, the free-list link while free.
//!
//! An area's spans, free lists and metadata are only touched under its shard's lock (the
//! recorder owns the locks and hands an [`Area`] in by `&mut`). A thread allocates from
//! the area of its own counter slot, so two threads rarely share one; a block goes back to
//! the area it came from, whichever thread frees it. Nothing is ever unmapped: a free slot
//! waits for the next block of its class in that area (its pages stay resident; at most
//! the peak of the recorded blocks).
//!
//! Nothing here imports another tracker module.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

/// Areas: one per recorder shard (the recorder checks the two agree).
pub(crate) const AREAS: usize = 8;
/// Smallest class: 16 bytes (malloc's alignment on 64-bit targets).
const MIN_CLASS_LOG2: u32 = 4;
/// Largest class, and so the largest block served from the region: 64 KiB. Bigger
/// recorded blocks come from `System` and are found through the filter and block table;
/// their own cost dwarfs that lookup.
const MAX_CLASS_LOG2: u32 = 16;
/// Largest block (size and alignment) the region serves.
pub(crate) const MAX_BLOCK: usize = 1 << MAX_CLASS_LOG2;
const CLASSES: usize = (MAX_CLASS_LOG2 - MIN_CLASS_LOG2 + 1) as usize;
/// Address space per (area, class): 16 MiB, i.e. 1 Mi blocks of 16 B or 256 of 64 KiB.
/// When one is full the block is recorded in `System` memory instead (slower frees: see
/// the recorder's spill).
const SPAN_LOG2: u32 = 24;
const SPAN_BYTES: usize = 1 << SPAN_LOG2;
/// Spans per area: a power of two ≥ [`CLASSES`], so the class is a shift away.
const SPANS_LOG2: u32 = 4;
const _: () = assert!(CLASSES <= 1 << SPANS_LOG2);
const AREA_LOG2: u32 = SPAN_LOG2 + SPANS_LOG2;
/// The whole region: 8 areas × 16 spans × 16 MiB = 2 GiB of address space.
pub(crate) const REGION_LOG2: u32 = AREA_LOG2 + AREAS.trailing_zeros();
pub(crate) const REGION_BYTES: usize = 1 << REGION_LOG2;
/// Alignment of the region's start: every slot is aligned to its class size.
const REGION_ALIGN: usize = MAX_BLOCK;

/// Metadata slots per area: Σ over classes of SPAN_BYTES / class size.
const META_PER_AREA: usize = meta_offset(CLASSES);
const META_BYTES: usize = AREAS * META_PER_AREA * std::mem::size_of::<u64>();

/// Where class `c`'s metadata starts within an area's.
const fn meta_offset(c: usize) -> usize {
    let mut sum = 0;
    let mut i = 0;
    while i < c {
        sum += SPAN_BYTES >> (MIN_CLASS_LOG2 as usize + i);
        i += 1;
    }
    sum
}

/// [`meta_offset`] of every class, worked out at compile time: the loop above, run on
/// every region allocation and free, cost ~60 instructions for a 64 KiB block.
const META_OFFSETS: [usize; CLASSES] = {
    let mut table = [0; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        table[c] = meta_offset(c);
        c += 1;
    }
    table
};

/// A base no pointer is within [`REGION_BYTES`] above (the top of the address space):
/// [`contains`] is false for everything until the region exists.
const NO_REGION: usize = usize::MAX - (REGION_BYTES - 1);

/// Start of the region, or [`NO_REGION`]. Set once, never changed afterwards.
static BASE: AtomicUsize = AtomicUsize::new(NO_REGION);
/// Start of the metadata words (valid once `BASE` is set).
static META: AtomicUsize = AtomicUsize::new(0);

// Metadata word of a slot.
/// Free; the low 32 bits are the next free slot + 1 (0: none).
const META_FREE: u64 = 1 << 63;
/// Live and recorded; `record` bits below.
const META_RECORDED: u64 = 1 << 62;
/// A live slot without a record is 0 (allocated while a session was being stopped, or
/// from an earlier session).
const META_LIVE: u64 = 0;

/// Whether `addr` lies in the region. The allocator's hot path: one load of a value that
/// never changes once set, a subtract and a shift.
#[inline(always)]
pub(crate) fn contains(addr: usize) -> bool {
    addr.wrapping_sub(BASE.load(Relaxed)) >> REGION_LOG2 == 0
}

/// Whether the region exists.
pub(crate) fn available() -> bool {
    BASE.load(Acquire) != NO_REGION
}

/// Largest block (size and alignment) served from the region while sampling: bigger
/// sampled blocks stay with `System`. Measured: serving sampled 64 KiB blocks from here
/// made glibc trim its heap far more often (the blocks left behind leave holes next to
/// the top chunk: 15× the `madvise` calls, +15–20 ns per pair), while in exact mode every
/// block of a size leaves glibc and nothing changes for it.
pub(crate) const SAMPLED_MAX_BLOCK: usize = 4096;

/// Whether a recorded block of this layout is served from the region (and so, while
/// sampling without a spill, a block outside it never has a record): up to
/// [`MAX_BLOCK`] in exact mode, [`SAMPLED_MAX_BLOCK`] while sampling.
#[inline(always)]
pub(crate) fn eligible(size: usize, align: usize, exact: bool) -> bool {
    let max = if exact { MAX_BLOCK } else { SAMPLED_MAX_BLOCK };
    size <= max && align <= max
}

/// The area a region address belongs to.
pub(crate) fn area_of(addr: usize) -> usize {
    (addr.wrapping_sub(BASE.load(Acquire)) >> AREA_LOG2) & (AREAS - 1)
}

/// The class of a block of `size` bytes aligned to `align` (both ≤ [`MAX_BLOCK`]).
fn class_of(size: usize, align: usize) -> usize {
    let need = size.max(align).max(1 << MIN_CLASS_LOG2).next_power_of_two();
    (need.trailing_zeros() - MIN_CLASS_LOG2) as usize
}

/// Reserves the region and its metadata (once; later calls return whether it exists).
/// Call with the recorder's configuration lock held (one caller at a time). False when
/// the system refuses the mappings (e.g. strict overcommit, a small address-space limit):
/// recorded blocks then all come from `System`.
pub(crate) fn reserve() -> bool {
    if available() {
        return true;
    }
    if !cfg!(target_pointer_width = "64") {
        return false;
    }
    let Some(meta) = map(META_BYTES) else {
        return false;
    };
    let Some(raw) = map(REGION_BYTES + REGION_ALIGN) else {
        unmap(meta, META_BYTES);
        return false;
    };
    let base = raw.next_multiple_of(REGION_ALIGN);
    // Give back the unaligned head and the tail beyond the region.
    if base > raw {
        unmap(raw, base - raw);
    }
    let tail = raw + REGION_BYTES + REGION_ALIGN - (base + REGION_BYTES);
    if tail > 0 {
        unmap(base + REGION_BYTES, tail);
    }
    META.store(meta, Release);
    BASE.store(base, Release);
    true
}

/// An anonymous private read-write mapping of `len` bytes that commits nothing.
#[cfg(unix)]
fn map(len: usize) -> Option<usize> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choice: it cannot
    // overlap anything this process uses, and nothing is read or written here.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

#[cfg(not(unix))]
fn map(_len: usize) -> Option<usize> {
    None
}

#[cfg(unix)]
fn unmap(addr: usize, len: usize) {
    // SAFETY: [addr, addr + len) is part of a mapping `map` just made and nothing else
    // refers to (the unused head or tail of the reservation, or a reservation given up).
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

#[cfg(not(unix))]
fn unmap(_addr: usize, _len: usize) {}

/// One area's allocation state. Owned by its recorder shard and reached only under that
/// shard's lock.
pub(crate) struct Area {
    index: usize,
    /// Per class: slots handed out at least once (the next fresh slot).
    bump: [u32; CLASSES],
    /// Per class: first free slot + 1 (0: none).
    free: [u32; CLASSES],
    /// Live recorded blocks.
    recorded: usize,
}

/// A block's place: class and slot index within its area.
struct Place {
    class: usize,
    slot: usize,
}

impl Area {
    pub(crate) const fn new(index: usize) -> Area {
        Area {
            index,
            bump: [0; CLASSES],
            free: [0; CLASSES],
            recorded: 0,
        }
    }

    fn span_start(&self, class: usize) -> usize {
        BASE.load(Acquire) + (self.index << AREA_LOG2) + (class << SPAN_LOG2)
    }

    fn meta(&mut self, class: usize, slot: usize) -> &mut u64 {
        let i = self.index * META_PER_AREA + META_OFFSETS[class] + slot;
        debug_assert!(i < META_BYTES / 8);
        let words = META.load(Acquire) as *mut u64;
        // SAFETY: the metadata mapping exists whenever a region address does (both are
        // set by `reserve`, META first), holds META_BYTES / 8 words and the index is
        // below that (class < CLASSES, slot < the span's slot count); words of this area
        // are only reached through `&mut Area`, which its shard lock guards, so this is
        // the only reference.
        unsafe { &mut *words.add(i) }
    }

    fn place(&self, addr: usize) -> Place {
        let off = addr - self.span_start(0);
        let class = off >> SPAN_LOG2;
        Place {
            class,
            slot: (off & (SPAN_BYTES - 1)) >> (MIN_CLASS_LOG2 as usize + class),
        }
    }

    /// A block for `size` bytes aligned to `align` (both ≤ [`MAX_BLOCK`]), zero-filled if
    /// `zeroed`; `None` when the region does not exist or this area's span of the class is
    /// full.
    pub(crate) fn alloc(&mut self, size: usize, align: usize, zeroed: bool) -> Option<usize> {
        if !available() || !eligible(size, align, true) {
            return None;
        }
        let class = class_of(size, align);
        let class_bytes = 1usize << (MIN_CLASS_LOG2 as usize + class);
        let (slot, fresh) = match self.free[class] {
            0 => {
                let slot = self.bump[class] as usize;
                if slot >= SPAN_BYTES / class_bytes {
                    return None;
                }
                self.bump[class] += 1;
                (slot, true)
            }
            head => {
                let slot = head as usize - 1;
                let link = *self.meta(class, slot);
                debug_assert!(link & META_FREE != 0);
                self.free[class] = link as u32;
                (slot, false)
            }
        };
        *self.meta(class, slot) = META_LIVE;
        let addr = self.span_start(class) + slot * class_bytes;
        if zeroed && !fresh {
            // SAFETY: [addr, addr + class_bytes) is this free slot of the region's
            // read-write mapping, now handed out to no one but the caller.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0, class_bytes) };
        }
        // (A fresh slot was never written: the kernel's zero pages.)
        Some(addr)
    }

    /// Gives the block at `addr` back; returns its record, if it had one. A block already
    /// free (a double free in the program) is left alone.
    pub(crate) fn free(&mut self, addr: usize) -> Option<u64> {
        let Place { class, slot } = self.place(addr);
        if class >= CLASSES || slot >= self.bump[class] as usize {
            // Never handed out (an invalid pointer freed): leave everything alone.
            return None;
        }
        let head = self.free[class];
        let meta = self.meta(class, slot);
        let old = *meta;
        if old & META_FREE != 0 {
            return None;
        }
        *meta = META_FREE | u64::from(head);
        self.free[class] = slot as u32 + 1;
        if old & META_RECORDED != 0 {
            self.recorded -= 1;
            return Some(old & !META_RECORDED);
        }
        None
    }

    /// Records the live block at `addr` as `record` (below bit 62: the recorder's packed
    /// size and stack id).
    pub(crate) fn set_record(&mut self, addr: usize, record: u64) {
        let Place { class, slot } = self.place(addr);
        let meta = self.meta(class, slot);
        debug_assert_eq!(*meta, META_LIVE);
        *meta = META_RECORDED | record;
        self.recorded += 1;
    }

    /// The record of the block at `addr`, if it has one.
    pub(crate) fn record(&mut self, addr: usize) -> Option<u64> {
        let Place { class, slot } = self.place(addr);
        if class >= CLASSES || slot >= self.bump[class] as usize {
            return None;
        }
        let meta = *self.meta(class, slot);
        (meta & META_RECORDED != 0 && meta & META_FREE == 0).then_some(meta & !META_RECORDED)
    }

    /// Live recorded blocks.
    pub(crate) fn recorded(&self) -> usize {
        self.recorded
    }

    /// Calls `f` with every live record.
    pub(crate) fn for_each_record(&mut self, mut f: impl FnMut(u64)) {
        for class in 0..CLASSES {
            for slot in 0..self.bump[class] as usize {
                let meta = *self.meta(class, slot);
                if meta & META_RECORDED != 0 && meta & META_FREE == 0 {
                    f(meta & !META_RECORDED);
                }
            }
        }
    }

    /// Drops every record (the session ended); the blocks stay live.
    pub(crate) fn forget_records(&mut self) {
        for class in 0..CLASSES {
            for slot in 0..self.bump[class] as usize {
                let meta = self.meta(class, slot);
                if *meta & META_RECORDED != 0 {
                    *meta = META_LIVE;
                }
            }
        }
        self.recorded = 0;
    }

    /// Metadata bytes of the slots handed out so far (reported as tracker overhead).
    pub(crate) fn meta_bytes(&self) -> usize {
        self.bump.iter().map(|&n| n as usize * 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two_and_alignment() {
        assert_eq!(class_of(1, 1), 0);
        assert_eq!(class_of(16, 8), 0);
        assert_eq!(class_of(17, 8), 1);
        assert_eq!(class_of(64, 4096), class_of(4096, 1));
        assert_eq!(class_of(MAX_BLOCK, 1), CLASSES - 1);
    }
}
