//! Interned call stacks and their running totals.
//!
//! Each distinct stack (raw return addresses) gets a 16-bit id, the id the block table
//! stores next to each block. Per id the table keeps the stack's hash, its true depth and
//! whether it was truncated; the running totals per id live with the blocks, in the
//! recorder's shards. Frames live in a fixed-stride arena so an id's slot can be reused.
//! Everything is `System`-allocated ([`RawBuf`]) and touched under the stack lock only.
//!
//! Bounds: at most [`MAX_STACKS`] distinct stacks. When the table is full, stacks with no
//! live block are collected (their ids reused; the caller says which are live); if none
//! are free, the block goes to the overflow bucket (id [`OVERFLOW`]) and `dropped` counts
//! it.

use crate::sysmem::RawBuf;

/// Distinct stacks kept: Go's bucket table grew to GiBs without a cap. At the deepest
/// setting (64 + 8 frames) the arena is then at most 16,384 × 576 B = 9 MiB.
pub(crate) const MAX_STACKS: usize = 16_384;
/// The id blocks get when no stack slot is free.
pub(crate) const OVERFLOW: u16 = 0;
/// Index slots: a power of two, 2 × [`MAX_STACKS`], so the index is at most half full.
const INDEX_SLOTS: usize = 2 * MAX_STACKS;
/// Records allocated at start (grown by doubling): most processes have a few hundred
/// allocation sites.
const INITIAL_RECORDS: usize = 256;
/// When the table is full, try collecting again only after this many overflow drops:
/// a collection scans all 16,384 records, so this bounds its cost per drop.
const COLLECT_EVERY: u64 = 1024;

// A record is two words: [hash, meta].
const HASH: usize = 0;
const META: usize = 1;
// meta: unused (32 bits) | depth (16) | frames recorded (8) | truncated (1) | in use (1)
const META_DEPTH_SHIFT: u32 = 32;
const META_LEN_SHIFT: u32 = 48;
const META_TRUNCATED: u64 = 1 << 56;
const META_IN_USE: u64 = 1 << 57;

/// One stack as visited by [`StackTable::for_each_in_use`].
pub(crate) struct StackView<'a> {
    pub id: u16,
    pub frames: &'a [u64],
    pub depth: u16,
    pub truncated: bool,
    pub overflow: bool,
}

/// What [`StackTable::intern`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interned {
    /// The stack's id ([`OVERFLOW`] when the table is full).
    Id(u16),
    /// The table is full and a collection is due: call [`StackTable::collect`], then
    /// intern again with `may_collect` false.
    CollectFirst,
}

pub(crate) struct StackTable {
    records: RawBuf<[u64; 2]>,
    frames: RawBuf<u64>,
    /// Frame slots per record.
    stride: usize,
    /// Ids below this have been handed out at least once.
    used: usize,
    /// Ids free for reuse (after a collection).
    free: RawBuf<u16>,
    free_len: usize,
    /// Hash index: 0 = empty, else an id.
    index: RawBuf<u16>,
    in_use: usize,
    dropped: u64,
    drops_since_collect: u64,
}

/// The hash of a whole stack. Frames are taken two at a time: each pair, mixed with
/// secrets of its own position, is multiplied out to 128 bits and folded to 64, and the
/// folds are summed. No multiply waits for another (a chain of multiplies, one per frame,
/// cost ~13 ns for 25 frames; one serial chain over 40 frames ~50 ns), and the secrets
/// per position keep stacks that differ only in the order of their frames apart. The
/// walk records the frames first and hashes them here, in a loop that does nothing else.
pub(crate) fn hash(frames: &[usize]) -> u64 {
    let mut sum = 0u64;
    let mut pairs = frames.chunks_exact(2);
    let mut at = 0;
    for pair in &mut pairs {
        sum = sum.wrapping_add(fold(
            pair[0] as u64 ^ secret(at),
            pair[1] as u64 ^ secret(at + 1),
        ));
        at += 2;
    }
    if let [last] = pairs.remainder() {
        sum = sum.wrapping_add(fold(*last as u64 ^ secret(at), secret(at + 1)));
    }
    fold(
        sum ^ HASH_K,
        frames.len() as u64 ^ secret(SECRETS.len() - 1),
    )
}

/// The 128-bit product of `a` and `b`, its halves xor-ed.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The secret of frame position `at` (positions past the table reuse it, rotated).
#[inline(always)]
fn secret(at: usize) -> u64 {
    let n = SECRETS.len();
    SECRETS[at % n].rotate_left((at / n) as u32)
}

const HASH_K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Per-position secrets for [`hash`]: splitmix64's output from a fixed start, worked out
/// at compile time.
const SECRETS: [u64; 128] = {
    let mut table = [0u64; 128];
    let mut z = 0x2545_F491_4F6C_DD1Du64;
    let mut i = 0;
    while i < table.len() {
        z = z.wrapping_add(HASH_K);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // Odd, so no secret makes a product lose its low bits.
        table[i] = (x ^ (x >> 31)) | 1;
        i += 1;
    }
    table
};

impl StackTable {
    /// A table for stacks of up to `stride` frames; `None` when `System` has no memory.
    pub(crate) fn new(stride: usize) -> Option<Self> {
        let stride = stride.clamp(1, 255);
        let mut table = StackTable {
            records: RawBuf::zeroed(INITIAL_RECORDS)?,
            frames: RawBuf::zeroed(INITIAL_RECORDS * stride)?,
            stride,
            used: 1,
            free: RawBuf::zeroed(MAX_STACKS + 1)?,
            free_len: 0,
            index: RawBuf::zeroed(INDEX_SLOTS)?,
            in_use: 0,
            dropped: 0,
            drops_since_collect: 0,
        };
        // The overflow bucket: always in use, no frames.
        table.records.as_mut_slice()[OVERFLOW as usize][META] = META_IN_USE;
        Some(table)
    }

    /// Bytes held (reported as overhead).
    pub(crate) fn bytes(&self) -> usize {
        self.records.bytes() + self.frames.bytes() + self.free.bytes() + self.index.bytes()
    }

    /// Distinct stacks currently interned (the overflow bucket not included).
    pub(crate) fn tracked(&self) -> usize {
        self.in_use
    }

    /// Blocks that went to the overflow bucket because the table was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// An upper bound on the records [`Self::for_each_live`] visits.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// The id of this stack, interning it if new. `h` is [`hash`] of `frames` (computed
    /// by the caller before taking the lock); frames beyond the stride are dropped (and
    /// the hash recomputed). When the table is full and `may_collect`, asks for a
    /// collection first (every [`COLLECT_EVERY`] drops); otherwise a full table gives
    /// [`OVERFLOW`] and counts a drop.
    pub(crate) fn intern(
        &mut self,
        h: u64,
        frames: &[usize],
        depth: usize,
        truncated: bool,
        may_collect: bool,
    ) -> Interned {
        let (h, frames) = if frames.len() > self.stride {
            let kept = &frames[..self.stride];
            (hash(kept), kept)
        } else {
            (h, frames)
        };
        let mask = INDEX_SLOTS - 1;
        let mut pos = h as usize & mask;
        loop {
            let id = self.index.as_slice()[pos] as usize;
            if id == 0 {
                break;
            }
            if self.records.as_slice()[id][HASH] == h && Self::frames_eq(self.frames_of(id), frames)
            {
                return Interned::Id(id as u16);
            }
            pos = (pos + 1) & mask;
        }
        let id = match self.take_id() {
            Some(id) => id,
            None if may_collect && self.drops_since_collect.is_multiple_of(COLLECT_EVERY) => {
                return Interned::CollectFirst;
            }
            None => {
                self.drops_since_collect += 1;
                self.dropped += 1;
                return Interned::Id(OVERFLOW);
            }
        };
        if self.index.as_slice()[pos] != 0 {
            // A collection rebuilt the index: find the empty slot again.
            pos = h as usize & mask;
            while self.index.as_slice()[pos] != 0 {
                pos = (pos + 1) & mask;
            }
        }
        self.index.as_mut_slice()[pos] = id as u16;
        let start = id * self.stride;
        let slot = &mut self.frames.as_mut_slice()[start..start + self.stride];
        for (dst, &src) in slot.iter_mut().zip(frames) {
            *dst = src as u64;
        }
        let meta = ((depth.min(usize::from(u16::MAX)) as u64) << META_DEPTH_SHIFT)
            | ((frames.len() as u64) << META_LEN_SHIFT)
            | if truncated { META_TRUNCATED } else { 0 }
            | META_IN_USE;
        self.records.as_mut_slice()[id] = [h, meta];
        self.in_use += 1;
        Interned::Id(id as u16)
    }

    fn frames_of(&self, id: usize) -> &[u64] {
        let meta = self.records.as_slice()[id][META];
        let len = ((meta >> META_LEN_SHIFT) & 0xFF) as usize;
        let start = id * self.stride;
        &self.frames.as_slice()[start..start + len]
    }

    fn frames_eq(stored: &[u64], frames: &[usize]) -> bool {
        stored.len() == frames.len() && stored.iter().zip(frames).all(|(&a, &b)| a == b as u64)
    }

    /// A free id: reused or new; `None` when full.
    fn take_id(&mut self) -> Option<usize> {
        if let Some(id) = self.pop_free() {
            self.drops_since_collect = 0;
            return Some(id);
        }
        if self.used <= MAX_STACKS {
            if self.used == self.records.len() {
                let want = (self.records.len() * 2).min(MAX_STACKS + 1);
                if !self.records.grow(want) || !self.frames.grow(want * self.stride) {
                    return None;
                }
            }
            self.used += 1;
            return Some(self.used - 1);
        }
        None
    }

    fn pop_free(&mut self) -> Option<usize> {
        if self.free_len == 0 {
            return None;
        }
        self.free_len -= 1;
        Some(self.free.as_slice()[self.free_len] as usize)
    }

    /// Frees every stack `live` says has no live block and rebuilds the index. The
    /// caller must keep blocks from being recorded meanwhile, and must treat ids handed
    /// out before the collection as stale (they may now name another stack).
    pub(crate) fn collect(&mut self, live: impl Fn(u16) -> bool) {
        let mask = INDEX_SLOTS - 1;
        self.index.as_mut_slice().fill(0);
        self.free_len = 0;
        self.drops_since_collect = 0;
        for id in 1..self.used {
            let rec = self.records.as_slice()[id];
            if !live(id as u16) {
                if rec[META] & META_IN_USE != 0 {
                    self.in_use -= 1;
                }
                self.records.as_mut_slice()[id] = [0; 2];
                self.free.as_mut_slice()[self.free_len] = id as u16;
                self.free_len += 1;
            } else {
                let mut pos = rec[HASH] as usize & mask;
                while self.index.as_slice()[pos] != 0 {
                    pos = (pos + 1) & mask;
                }
                self.index.as_mut_slice()[pos] = id as u16;
            }
        }
    }

    /// Visits every interned stack (the overflow bucket included, flagged).
    pub(crate) fn for_each_in_use(&self, mut f: impl FnMut(StackView<'_>)) {
        for id in 0..self.used {
            let rec = self.records.as_slice()[id];
            if rec[META] & META_IN_USE == 0 {
                continue;
            }
            f(StackView {
                id: id as u16,
                frames: self.frames_of(id),
                depth: (rec[META] >> META_DEPTH_SHIFT) as u16,
                truncated: rec[META] & META_TRUNCATED != 0,
                overflow: id == usize::from(OVERFLOW),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interns `frames`; a collection it asks for keeps only stack `live` (the one stack
    /// the test treats as holding blocks).
    fn intern(t: &mut StackTable, frames: &[usize], live: u16) -> u16 {
        for may_collect in [true, false] {
            match t.intern(hash(frames), frames, frames.len(), false, may_collect) {
                Interned::Id(id) => return id,
                Interned::CollectFirst => t.collect(|id| id == live),
            }
        }
        unreachable!("a second intern never asks to collect")
    }

    #[test]
    fn interning_is_stable_and_full_tables_collect_or_overflow() {
        // No stack holds blocks yet.
        const NONE: u16 = u16::MAX;
        let mut t = StackTable::new(4).expect("memory");
        let a = intern(&mut t, &[1, 2, 3], NONE);
        let b = intern(&mut t, &[1, 2, 4], NONE);
        assert_ne!(a, b);
        assert_eq!(intern(&mut t, &[1, 2, 3], NONE), a);
        // From here on only `a` holds blocks.
        for i in 0..MAX_STACKS - 2 {
            intern(&mut t, &[9, i + 10], a);
        }
        assert_eq!(t.tracked(), MAX_STACKS);
        // Full: a new stack triggers a collection, which frees all but `a`.
        let c = intern(&mut t, &[7, 7, 7], a);
        assert_ne!(c, OVERFLOW);
        assert_eq!(t.tracked(), 2);
        assert_eq!(intern(&mut t, &[1, 2, 3], a), a);
        let mut seen = Vec::new();
        t.for_each_in_use(|s| seen.push((s.id, s.frames.to_vec())));
        assert!(seen.contains(&(a, vec![1, 2, 3])));
        assert!(seen.contains(&(c, vec![7, 7, 7])));
        // Frames beyond the stride are dropped, and the hash follows.
        assert_eq!(
            intern(&mut t, &[1, 2, 3, 4, 5, 6], a),
            intern(&mut t, &[1, 2, 3, 4], a)
        );
        // A table full of live stacks: the collection frees nothing, the block goes to
        // the overflow bucket and is counted; the next COLLECT_EVERY - 1 drops do not
        // ask for another collection.
        let mut live_all = StackTable::new(4).expect("memory");
        for i in 0..MAX_STACKS {
            live_all.intern(hash(&[3, i]), &[3, i], 2, false, false);
        }
        assert_eq!(live_all.tracked(), MAX_STACKS);
        assert_eq!(
            live_all.intern(hash(&[4, 4]), &[4, 4], 2, false, true),
            Interned::CollectFirst
        );
        live_all.collect(|_| true);
        assert_eq!(
            live_all.intern(hash(&[4, 4]), &[4, 4], 2, false, false),
            Interned::Id(OVERFLOW)
        );
        assert_eq!(live_all.dropped(), 1);
        for i in 0..COLLECT_EVERY - 1 {
            assert_eq!(
                live_all.intern(hash(&[5, i as usize]), &[5, i as usize], 2, false, true),
                Interned::Id(OVERFLOW)
            );
        }
        assert_eq!(
            live_all.intern(hash(&[6, 6]), &[6, 6], 2, false, true),
            Interned::CollectFirst
        );
        assert_eq!(live_all.dropped(), COLLECT_EVERY);
    }
}
