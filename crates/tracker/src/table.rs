//! The table of tracked live blocks: address → (size, stack id) and the block's birth
//! mark (see `recorder`), 24 bytes an entry.
//!
//! Open addressing with linear probing and backward-shift deletion (no tombstones), over
//! a `System`-allocated array. The home slot is the multiply-shift range reduction
//! `(hash × capacity) >> 64` of a Fibonacci hash, so capacities need not be powers of
//! two and a resize can aim at an exact load. Load stays between [`MIN_LOAD`] and
//! [`MAX_LOAD`], so once past [`MIN_SLOTS`] an entry costs 16 / load ∈ [20, 32] bytes
//! per tracked block.

use crate::sysmem::RawBuf;

/// Smallest table: 24 KiB, enough for ~800 blocks, the whole sampled table of a
/// ~400 MiB heap at 512 KiB.
const MIN_SLOTS: usize = 1024;
/// Grow above 80% load: linear probing stays at a few probes up to here.
const MAX_LOAD: (usize, usize) = (4, 5);
/// Shrink below 50% load: keeps metadata at ≤ 48 bytes per block.
const MIN_LOAD: (usize, usize) = (1, 2);
/// After a grow or shrink the load is ~60%: far enough from both thresholds that each
/// resize (O(n)) is paid for by ≥ 0.1·n operations.
const TARGET_LOAD: (usize, usize) = (3, 5);

/// Largest size a packed entry can hold (48 bits, 256 TiB); bigger sizes saturate.
pub(crate) const MAX_SIZE: u64 = (1 << 48) - 1;

/// Packs a size and a stack id into one word: size in the high 48 bits, id in the low 16.
pub(crate) fn pack(size: u64, stack: u16) -> u64 {
    (size.min(MAX_SIZE) << 16) | u64::from(stack)
}

/// The inverse of [`pack`].
pub(crate) fn unpack(value: u64) -> (u64, u16) {
    (value >> 16, value as u16)
}

/// The block table. Key 0 marks an empty slot (no block lives at address 0).
pub(crate) struct BlockTable {
    /// (address, packed size and stack id, birth mark); address 0 is empty.
    slots: RawBuf<[u64; 3]>,
    len: usize,
}

impl BlockTable {
    /// `None` when `System` is out of memory.
    pub(crate) fn new() -> Option<Self> {
        Some(BlockTable {
            slots: RawBuf::zeroed(MIN_SLOTS)?,
            len: 0,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the slot array.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.bytes()
    }

    fn home(key: u64, cap: usize) -> usize {
        // Its own mix, not the Fibonacci hash of the address filter: keys that share a
        // filter row (or the top bits of its index) must not crowd one part of the table.
        let h = (key ^ (key >> 32)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((u128::from(h) * cap as u128) >> 64) as usize
    }

    /// Where `key` is, or the empty slot ending its probe sequence.
    fn probe(slots: &[[u64; 3]], key: u64) -> (usize, bool) {
        let cap = slots.len();
        let mut i = Self::home(key, cap);
        loop {
            let k = slots[i][0];
            if k == key {
                return (i, true);
            }
            if k == 0 {
                return (i, false);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// The packed value of `key`, if tracked.
    pub(crate) fn get(&self, key: u64) -> Option<u64> {
        let slots = self.slots.as_slice();
        match Self::probe(slots, key) {
            (i, true) => Some(slots[i][1]),
            _ => None,
        }
    }

    /// Records `key` with its packed value and birth mark; returns the value it replaces,
    /// if any (a stale record), or `Err` when the table is full and cannot grow.
    pub(crate) fn insert(&mut self, key: u64, value: u64, birth: u64) -> Result<Option<u64>, ()> {
        debug_assert_ne!(key, 0);
        if (self.len + 1) * MAX_LOAD.1 > self.slots.len() * MAX_LOAD.0 {
            let want = (self.len + 1) * TARGET_LOAD.1 / TARGET_LOAD.0 + 1;
            // A failed grow is fine while a slot is left; a full table refuses.
            if !self.resize(want) && self.len + 1 >= self.slots.len() {
                return Err(());
            }
        }
        let slots = self.slots.as_mut_slice();
        let (i, found) = Self::probe(slots, key);
        let old = found.then_some(slots[i][1]);
        slots[i] = [key, value, birth];
        if !found {
            self.len += 1;
        }
        Ok(old)
    }

    /// Removes `key`; returns its value if it was tracked.
    pub(crate) fn remove(&mut self, key: u64) -> Option<u64> {
        let slots = self.slots.as_mut_slice();
        let cap = slots.len();
        let (mut hole, found) = Self::probe(slots, key);
        if !found {
            return None;
        }
        let value = slots[hole][1];
        // Backward shift: pull later entries of the run into the hole when their home
        // slot is not cyclically after the hole.
        let mut j = hole;
        loop {
            j += 1;
            if j == cap {
                j = 0;
            }
            let k = slots[j][0];
            if k == 0 {
                break;
            }
            // Cyclic distances back from j (all three are below cap: a compare, not a
            // division, which cost ~40 cycles each here).
            let back = |from: usize| if j >= from { j - from } else { j + cap - from };
            let dist_home = back(Self::home(k, cap));
            let dist_hole = back(hole);
            if dist_home >= dist_hole {
                slots[hole] = slots[j];
                hole = j;
            }
        }
        slots[hole] = [0, 0, 0];
        self.len -= 1;
        if self.slots.len() > MIN_SLOTS && self.len * MIN_LOAD.1 < self.slots.len() * MIN_LOAD.0 {
            let want = (self.len * TARGET_LOAD.1 / TARGET_LOAD.0 + 1).max(MIN_SLOTS);
            self.resize(want);
        }
        Some(value)
    }

    /// Calls `f` with the packed value and birth mark of every entry.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, u64)) {
        for e in self.slots.as_slice() {
            if e[0] != 0 {
                f(e[1], e[2]);
            }
        }
    }

    /// Rehashes into `cap` slots; false (table unchanged) if `System` has no memory.
    fn resize(&mut self, cap: usize) -> bool {
        let Some(mut fresh) = RawBuf::<[u64; 3]>::zeroed(cap) else {
            return false;
        };
        {
            let dst = fresh.as_mut_slice();
            for entry in self.slots.as_slice() {
                if entry[0] != 0 {
                    let (i, _) = Self::probe(dst, entry[0]);
                    dst[i] = *entry;
                }
            }
        }
        self.slots = fresh;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_survive_growth_shrink_and_collisions() {
        let mut t = BlockTable::new().expect("memory");
        let keys: Vec<u64> = (1..=20_000u64).map(|i| i * 16).collect();
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(t.insert(k, pack(k, n as u16), n as u64), Ok(None));
        }
        assert_eq!(t.len(), keys.len());
        assert!(t.bytes() <= keys.len() * 48);
        let mut births = 0u64;
        t.for_each(|_, b| births += b);
        assert_eq!(births, (0..keys.len() as u64).sum::<u64>());
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(t.get(k).map(unpack), Some((k, n as u16)));
        }
        // Remove every other key, then check the rest are still found.
        for &k in keys.iter().step_by(2) {
            assert!(t.remove(k).is_some());
            assert!(t.remove(k).is_none());
        }
        for (n, &k) in keys.iter().enumerate() {
            assert_eq!(t.get(k).is_some(), n % 2 == 1, "key {k}");
        }
        assert!(t.bytes() <= t.len() * 48);
        for &k in keys.iter().skip(1).step_by(2) {
            assert!(t.remove(k).is_some());
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.bytes(), MIN_SLOTS * 24);
        // Replacing returns the stale value.
        assert_eq!(t.insert(32, pack(5, 1), 0), Ok(None));
        assert_eq!(t.insert(32, pack(6, 2), 0), Ok(Some(pack(5, 1))));
    }

    /// Mean distance of the entries from their home slots.
    fn mean_displacement(t: &BlockTable) -> f64 {
        let slots = t.slots.as_slice();
        let cap = slots.len();
        let total: usize = slots
            .iter()
            .enumerate()
            .filter(|(_, e)| e[0] != 0)
            .map(|(i, e)| (i + cap - BlockTable::home(e[0], cap)) % cap)
            .sum();
        total as f64 / t.len() as f64
    }

    #[test]
    fn keys_whose_filter_hash_shares_its_top_bits_spread_over_the_whole_table() {
        // The table's own hash must not crowd keys that the address filter's Fibonacci
        // hash puts together (a table hashed the same way once did: probes grew with the
        // table and a 1M-block snapshot benchmark never finished).
        let shard_keys = (1..)
            .map(|i: u64| i * 16)
            .filter(|&a| crate::filter::index(a as usize) >> (crate::filter::ROWS_LOG2 - 3) == 5);
        let mut t = BlockTable::new().expect("memory");
        for k in shard_keys.take(100_000) {
            t.insert(k, pack(16, 1), 0).expect("memory");
        }
        let d = mean_displacement(&t);
        // Linear probing at ≤ 80% load averages under 2.5 slots; crowding gives thousands.
        assert!(d < 4.0, "mean displacement {d}");
    }
}
