//! The counting filter that keeps `free` of an untracked block cheap.
//!
//! A wrapper over the system allocator has no page map to mark sampled blocks in, so the
//! tracker keeps a static array of counters indexed by a hash of the block address. A
//! slot counts the live tracked blocks that hash to it; `free` reads one slot with a
//! relaxed load and only on a non-zero count takes the lock and looks in the block table.
//! In sampled mode live tracked blocks are few (≈ live bytes / interval plus big blocks),
//! so almost every untracked free misses. Exact mode uses the same path (most slots are
//! hit, but blocks from before `start` are usually skipped).
//!
//! Counters change only under the tracker lock; readers need no lock because a block's
//! own increment happens-before its free (the program passed the pointer along).
//! A counter that reaches `u16::MAX` sticks there (then that slot always hits): correct,
//! just slower, and needs 65,535 live tracked blocks in one slot.

use std::sync::atomic::{AtomicU16, Ordering::Relaxed};

/// 2^16 slots: 128 KiB, small next to the tables, and at 1% occupancy (≈ 650 sampled
/// live blocks, a heap of ~330 MiB at 512 KiB) a free of an untracked block still
/// misses 99% of the time.
pub(crate) const SLOTS_LOG2: u32 = 16;
const SLOTS: usize = 1 << SLOTS_LOG2;

static FILTER: [AtomicU16; SLOTS] = [const { AtomicU16::new(0) }; SLOTS];

/// Bytes of the filter (reported as overhead while tracking is on).
pub(crate) const BYTES: usize = SLOTS * std::mem::size_of::<AtomicU16>();

/// The slot of `addr`: Fibonacci hashing, the top bits of addr × 2^64/φ, spreads aligned
/// addresses evenly. The recorder picks a block's shard from the top bits of this index.
#[inline(always)]
pub(crate) fn index(addr: usize) -> usize {
    ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS_LOG2)) as usize
}

#[inline(always)]
fn slot(addr: usize) -> &'static AtomicU16 {
    &FILTER[index(addr)]
}

/// False means the block at `addr` is certainly not tracked.
#[inline(always)]
pub(crate) fn may_contain(addr: usize) -> bool {
    slot(addr).load(Relaxed) != 0
}

/// A block at `addr` became tracked. Call with the block's shard lock held (a slot is
/// only written under the one shard its addresses belong to).
pub(crate) fn add(addr: usize) {
    let s = slot(addr);
    let v = s.load(Relaxed);
    if v != u16::MAX {
        s.store(v + 1, Relaxed);
    }
}

/// The tracked block at `addr` lost its record. Call with the block's shard lock held.
pub(crate) fn remove(addr: usize) {
    let s = slot(addr);
    let v = s.load(Relaxed);
    if v != u16::MAX && v != 0 {
        s.store(v - 1, Relaxed);
    }
}

/// Empties the filter (tables dropped). Call with every shard lock held.
pub(crate) fn clear() {
    for s in &FILTER {
        s.store(0, Relaxed);
    }
}
