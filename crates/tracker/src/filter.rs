//! The counting filter that keeps `free` of an untracked block cheap, and tells which
//! shard may hold a block's record.
//!
//! A wrapper over the system allocator has no page map to mark sampled blocks in, so the
//! tracker keeps a static array of counters indexed by a hash of the block address. A
//! row holds one 8-bit counter per recorder shard: how many live records of that shard
//! hash to the row. `free` reads the row with one relaxed load and only when it is
//! non-zero takes a lock and looks in a block table: that of each shard whose counter is
//! non-zero (one, but for a collision). In sampled mode live records outside the region
//! are few (≈ live bytes / interval of big blocks), so almost every untracked free
//! misses. Exact mode and a spilled sampling session use the same path (most rows hit).
//!
//! The recorder puts a block in the shard of the thread that allocated it, not in one
//! chosen by its address, so each thread keeps to its own shard's lines. Two threads that
//! took each other's shard locks paid +31 … +52 ns over off for a sampled 64 KiB pair,
//! against ~+25 by thread, as on one thread (BENCHMARKS.md, issue 18's fifth round). The
//! rows let a free, on any thread, still go straight to that shard.
//!
//! A shard's counter changes only under that shard's lock; the others in the same row
//! may change at the same time under theirs, so each change is an atomic add to the
//! whole row (it never carries: the counter is read first, under the lock that alone
//! changes it). Readers need no lock because a block's own increment happens-before its
//! free (the program passed the pointer along). A counter that reaches 255 sticks there
//! (then that row always hits for the shard): correct, just slower, and needs 255 live
//! records of one shard in one row.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// 2^14 rows of eight counters: 128 KiB. At ~400 live records outside the region (a heap
/// of ~200 MiB in big blocks at 512 KiB) a free of an untracked block still misses
/// ~97.5% of the time.
pub(crate) const ROWS_LOG2: u32 = 14;
const ROWS: usize = 1 << ROWS_LOG2;

/// Shards a row tells apart: one byte each.
pub(crate) const SHARDS: usize = 8;
/// Bits of one shard's counter.
const COUNTER_BITS: u32 = 8;
/// A counter at this value sticks.
const STUCK: u64 = (1 << COUNTER_BITS) - 1;

static FILTER: [AtomicU64; ROWS] = [const { AtomicU64::new(0) }; ROWS];

/// Bytes of the filter (reported as overhead while tracking is on).
pub(crate) const BYTES: usize = ROWS * std::mem::size_of::<AtomicU64>();

/// The row of `addr`: Fibonacci hashing, the top bits of addr × 2^64/φ, spreads aligned
/// addresses evenly.
#[inline(always)]
pub(crate) fn index(addr: usize) -> usize {
    ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - ROWS_LOG2)) as usize
}

#[inline(always)]
fn row(addr: usize) -> &'static AtomicU64 {
    &FILTER[index(addr)]
}

/// The bit position of `shard`'s counter in a row.
fn shift(shard: usize) -> u32 {
    debug_assert!(shard < SHARDS);
    shard as u32 * COUNTER_BITS
}

/// Whether some shard may hold a record of the block at `addr` (false: none does).
#[inline(always)]
pub(crate) fn may_contain(addr: usize) -> bool {
    row(addr).load(Relaxed) != 0
}

/// The shards that may hold a record of the block at `addr`: bit i set for shard i.
pub(crate) fn shards(addr: usize) -> u8 {
    let counters = row(addr).load(Relaxed);
    (0..SHARDS).fold(0, |mask, shard| {
        if counters >> shift(shard) & STUCK != 0 {
            mask | 1 << shard
        } else {
            mask
        }
    })
}

/// Counts a record of `addr` in `shard` (with that shard's lock held).
pub(crate) fn add(addr: usize, shard: usize) {
    let row = row(addr);
    if row.load(Relaxed) >> shift(shard) & STUCK != STUCK {
        row.fetch_add(1 << shift(shard), Relaxed);
    }
}

/// Uncounts a record of `addr` in `shard` (with that shard's lock held).
pub(crate) fn remove(addr: usize, shard: usize) {
    let row = row(addr);
    let count = row.load(Relaxed) >> shift(shard) & STUCK;
    if count != STUCK && count != 0 {
        row.fetch_sub(1 << shift(shard), Relaxed);
    }
}

/// Zeroes every counter (with every shard lock held, at the start of a session).
pub(crate) fn clear() {
    for row in &FILTER {
        row.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // No other test of the library touches the filter (none starts a session, and the
    // library's tests do not install the tracker), and the two use different rows.

    #[test]
    fn each_shard_counts_its_own_records_in_the_row() {
        let addr = 0x10;
        assert_eq!(shards(addr), 0);
        assert!(!may_contain(addr));
        add(addr, 3);
        add(addr, 3);
        add(addr, 6);
        assert!(may_contain(addr));
        assert_eq!(shards(addr), 0b0100_1000);
        remove(addr, 3);
        assert_eq!(shards(addr), 0b0100_1000, "one record of shard 3 is left");
        remove(addr, 3);
        assert_eq!(shards(addr), 0b0100_0000);
        // Removing from an empty counter leaves it (and its neighbours) alone.
        remove(addr, 3);
        assert_eq!(shards(addr), 0b0100_0000);
        remove(addr, 6);
        assert_eq!(shards(addr), 0);
    }

    #[test]
    fn a_full_counter_sticks_and_never_carries_into_the_next_shard() {
        let addr = 0x20;
        for _ in 0..300 {
            add(addr, 0);
        }
        assert_eq!(row(addr).load(Relaxed), STUCK, "shard 1's byte untouched");
        for _ in 0..300 {
            remove(addr, 0);
        }
        assert_eq!(shards(addr), 0b1, "stuck: still says maybe");
        add(addr, 7);
        remove(addr, 7);
        assert_eq!(row(addr).load(Relaxed), STUCK);
    }
}
