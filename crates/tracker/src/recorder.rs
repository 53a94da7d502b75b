//! Site tracking state and the tracked path of the allocator.
//!
//! Owns the tracking session and its tables, split so that threads recording blocks at
//! once rarely meet on a lock:
//! - [`STATE`]: the session's configuration (mode, frames, interval, start time).
//! - [`STACKS`]: the interned stacks ([`StackTable`]), taken only to intern a stack this
//!   thread has not seen lately (a small per-thread cache maps stack hashes to ids).
//! - [`SHARDS`]: the live blocks, split into shards, each with its own block table, the
//!   running totals of every stack for the blocks in that shard, and a [`region`] area.
//!   A block in the region belongs to its area's shard (a thread records into the area
//!   of its counter slot); any other to the shard its address hashes to, where its record,
//!   its totals and its slot in the counting [`filter`] are.
//!
//! Lock order: `STATE`, then `STACKS`, then shards in index order. Nothing takes a lock
//! while holding a later one.
//!
//! Order of work in `alloc_recorded` (the allocator decided to record the block):
//! reentrancy check, stack walk and hash (no lock), the stack's id (per-thread cache, else
//! the stack lock), then one shard lock: the thread's area's, to take a region slot and
//! write its record, or (a block the region does not hold) the block's own, for the table
//! insert. In `free_region`: the area's shard lock. In `on_free`: one filter load; only on
//! a hit the shard lock and a table lookup.
//!
//! Every record carries its *birth mark*: the number of snapshots the session had taken
//! when the block was recorded ([`MARK`], bumped by each snapshot under every shard lock).
//! A snapshot taken at mark k holds exactly the blocks born at marks ≤ k, so a later
//! snapshot tells, per stack, which of its samples an earlier one already held (see
//! `snapshot::Cohort`). Per stack, the shards also count the samples ever recorded and the
//! sum of their squared weights: with the cohorts, a compare splits a site's change into
//! samples born and still alive, born and freed, and old ones freed (`stats`). These are
//! touched only where a block is recorded or its record ends, never on the unrecorded
//! path.
//!
//! Ids are only valid within a *generation*: a new one starts with each session and each
//! stack collection (which may hand a freed id to another stack). A collection holds the
//! stack lock and every shard lock, so a thread that holds a shard lock and sees the
//! generation its id came from knows the id still names its stack.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed},
};
use std::time::SystemTime;

use crate::config::{Mode, Totals, TrackingConfig, TrackingStatus};
use crate::counters::{
    MODE_EXACT, MODE_MASK, MODE_OFF, MODE_SAMPLED, MODE_SAMPLED_SPILL, WORD, WORD_OFF,
    current_bytes, live_blocks, peak_bytes, set_word, total_allocations,
};
use crate::filter;
use crate::guard::{Guard, GuardLevel, guard_level};
use crate::lock::{SpinGuard, SpinLock};
use crate::region::{self, Area};
use crate::sampler;
use crate::snapshot::{Cohort, CohortWords, MAX_COHORTS, Snapshot, StackTotals};
use crate::stacks::{self, Interned, OVERFLOW, StackTable};
use crate::sysmem::RawBuf;
use crate::table::{self, BlockTable};
use crate::unwind;

/// Raw frames recorded beyond the user's `frames`: the tracker's own frames (this
/// module, the `GlobalAlloc` impl, `__rg_alloc`/`__rust_alloc`) that sit at the top of a
/// walk, trimmed at symbolization. An allocation's walk starts at the allocator's entry
/// frame (none of them in release); `realloc`'s and a slotless thread's start here (3 in
/// release, up to 5 in debug).
pub(crate) const OWN_FRAMES_ALLOWANCE: usize = 8;
/// Largest `frames` a config may ask for (the contract's 1..=64).
pub(crate) const MAX_FRAMES: u32 = 64;
/// Largest raw walk kept.
const MAX_RAW_FRAMES: usize = MAX_FRAMES as usize + OWN_FRAMES_ALLOWANCE;
/// Intervals are clamped to 1 byte..=1 TiB: beyond 1 TiB every block would weigh
/// ≥ 2^24 and the 1/65536-unit counts could overflow.
const MAX_INTERVAL: u64 = 1 << 40;

/// The running session's configuration.
struct Tracking {
    mode: Mode,
    frames: u32,
    interval: u64,
    seed: Option<u64>,
    since: SystemTime,
}

impl Tracking {
    /// The settings as `start` was given them (after clamping).
    fn config(&self) -> TrackingConfig {
        TrackingConfig {
            mode: self.mode,
            frames: self.frames,
            sample_interval_bytes: self.interval,
            seed: self.seed,
        }
    }
}

/// `config` clamped to the ranges `start` accepts. The interval and seed of an exact
/// session are not used, so two exact configurations that differ only there are equal.
fn clamped(config: TrackingConfig) -> TrackingConfig {
    let sampled = config.mode == Mode::Sampled;
    TrackingConfig {
        mode: config.mode,
        frames: config.frames.clamp(1, MAX_FRAMES),
        sample_interval_bytes: if sampled {
            config.sample_interval_bytes.clamp(1, MAX_INTERVAL)
        } else {
            0
        },
        seed: if sampled { config.seed } else { None },
    }
}

struct State {
    session: Option<Tracking>,
    /// Mode and frames of the last session, reported by `status` while off.
    last: (Mode, u32),
}

/// The session's configuration. A spin lock that never allocates (see `lock.rs`), like
/// every lock here; held briefly, never in the allocation path.
static STATE: SpinLock<State> = SpinLock::new(State {
    session: None,
    last: (Mode::Sampled, DEFAULT_FRAMES),
});

/// The interned stacks and the generation their ids belong to (`None` while off).
struct Stacks {
    table: StackTable,
    generation: u64,
}

/// Held to intern a stack (a per-thread cache miss), to collect stacks, and by snapshots.
static STACKS: SpinLock<Option<Stacks>> = SpinLock::new(None);

/// Shards of the live blocks: a power of two, a few times the cores of the boxes Home
/// Assistant runs on, so two threads rarely want the same one.
const SHARD_COUNT: usize = 8;

/// Per stack id in a shard: estimated bytes and count (in 1/65536 units) of the shard's
/// live blocks, blocks ever recorded, and the sum of their squared estimated bytes (`f64`
/// bits).
type StackCounters = [u64; 4];

/// One shard: its blocks, and per stack id the totals of those blocks.
struct Shard {
    /// Its index in [`SHARDS`] (its counters in the filter).
    index: usize,
    blocks: BlockTable,
    /// Per stack id ([`StackCounters`]). Grown on demand up to `MAX_STACKS + 1` entries.
    totals: RawBuf<StackCounters>,
    /// The generation of the ids this shard's records use.
    generation: u64,
    weights: Weights,
}

/// Weights by block size, with the recent ones cached (sampled mode): each costs an
/// `expm1`, a division and two roundings, ~25 ns, paid twice per sampled block (record and
/// retire) without this. Same size, same integers, so totals stay exact.
struct Weights {
    /// `None` in exact mode.
    interval: Option<u64>,
    cache: [Weight; WEIGHT_CACHE],
}

impl Weights {
    fn new(interval: Option<u64>) -> Self {
        Weights {
            interval,
            cache: [NO_WEIGHT; WEIGHT_CACHE],
        }
    }

    /// (estimated bytes, estimated count × 65536) of one recorded block of `size` bytes.
    fn of(&mut self, size: u64) -> (u64, u64) {
        if self.interval.is_none() {
            return sampler::weigh(size, None);
        }
        let slot = (size.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % WEIGHT_CACHE;
        let (key, bytes, count) = self.cache[slot];
        if key == size {
            return (bytes, count);
        }
        let (bytes, count) = sampler::weigh(size, self.interval);
        self.cache[slot] = (size, bytes, count);
        (bytes, count)
    }
}

/// A cached weight: (size, estimated bytes, estimated count × 65536).
type Weight = (u64, u64, u64);
/// Entries of the weight cache: a few distinct sizes carry most of the sampled blocks.
const WEIGHT_CACHE: usize = 16;
/// A key no block has (sizes are at most `table::MAX_SIZE`).
const NO_WEIGHT: Weight = (u64::MAX, 0, 0);

impl Shard {
    /// Records a block (the shard lock is held and `id` is of this shard's generation).
    fn record(&mut self, addr: usize, size: usize, id: u16) {
        let birth = MARK.load(Relaxed);
        let size = (size as u64).min(table::MAX_SIZE);
        if !self.room_for(id) {
            // System is out of memory: the block goes unrecorded.
            return;
        }
        // Err: the table cannot grow (System out of memory); the block goes unrecorded.
        if let Ok(stale) = self
            .blocks
            .insert(addr as u64, table::pack(size, id), birth)
        {
            if let Some(stale) = stale {
                // A record whose free we never saw (cannot happen in a correct program;
                // be safe): retire it before counting the new block.
                self.retire(addr, stale);
            }
            self.weigh_in(table::pack(size, id), true);
            filter::add(addr, self.index);
        }
    }

    fn retire(&mut self, addr: usize, packed: u64) {
        self.weigh_in(packed, false);
        filter::remove(addr, self.index);
    }

    /// Ends the record of `addr` if this shard holds it; whether it did.
    fn forget(&mut self, addr: usize) -> bool {
        let Some(packed) = self.blocks.remove(addr as u64) else {
            return false;
        };
        self.retire(addr, packed);
        true
    }

    /// Grows the per-stack totals to hold `id`; false if `System` is out of memory.
    fn room_for(&mut self, id: u16) -> bool {
        let need = usize::from(id) + 1;
        if need > self.totals.len() {
            let want = (self.totals.len() * 2)
                .max(need)
                .min(stacks::MAX_STACKS + 1);
            return self.totals.grow(want);
        }
        true
    }

    /// Adds (or with `sign` false, takes) one block's weight to its stack's totals.
    fn weigh_in(&mut self, packed: u64, add: bool) {
        let (size, id) = table::unpack(packed);
        let (bytes, count) = self.weights.of(size);
        if let Some(t) = self.totals.as_mut_slice().get_mut(usize::from(id)) {
            if add {
                t[0] = t[0].wrapping_add(bytes);
                t[1] = t[1].wrapping_add(count);
                t[2] += 1;
                let b = bytes as f64;
                t[3] = (f64::from_bits(t[3]) + b * b).to_bits();
            } else {
                t[0] = t[0].wrapping_sub(bytes);
                t[1] = t[1].wrapping_sub(count);
            }
        }
    }

    /// Records a region block (the shard lock is held and `id` is of this shard's
    /// generation). Without room for the stack's totals (System out of memory) the block
    /// stays live, unrecorded.
    fn record_region(&mut self, area: &mut Area, addr: usize, size: usize, id: u16) {
        if !self.room_for(id) {
            return;
        }
        let packed = table::pack(size as u64, id);
        area.set_record(addr, region_record(packed, MARK.load(Relaxed)));
        self.weigh_in(packed, true);
    }

    /// Whether any block of this shard is attributed to stack `id`.
    fn holds(&self, id: u16) -> bool {
        self.totals
            .as_slice()
            .get(usize::from(id))
            .is_some_and(|t| t[1] != 0)
    }
}

/// Bits of a region record above the packed size and id (sizes there are at most
/// `region::MAX_BLOCK`, 2^16, so the packed word is below 2^33): the birth mark, modulo
/// 2^28 (a session would take a snapshot a second for eight years to wrap it).
const REGION_BIRTH_SHIFT: u32 = 34;
const REGION_BIRTH_MASK: u64 = (1 << 28) - 1;
const REGION_PACKED_MASK: u64 = (1 << REGION_BIRTH_SHIFT) - 1;
const _: () = assert!(region::MAX_BLOCK as u64 <= 1 << 16);

/// A region record: the packed size and id, and the birth mark.
fn region_record(packed: u64, birth: u64) -> u64 {
    packed | (birth & REGION_BIRTH_MASK) << REGION_BIRTH_SHIFT
}

/// A region record's (packed size and id, birth mark).
fn split_region_record(record: u64) -> (u64, u64) {
    (
        record & REGION_PACKED_MASK,
        record >> REGION_BIRTH_SHIFT & REGION_BIRTH_MASK,
    )
}

/// The mark blocks recorded now are born at: the snapshots the session has taken. Set to
/// 0 at start; bumped by each snapshot while it holds every shard lock, and read by
/// recording threads under a shard lock, so a block is either in a snapshot or born after
/// its mark.
static MARK: AtomicU64 = AtomicU64::new(0);

/// What one shard lock guards: the session's part of the live blocks (`None` while off)
/// and the region area of the same index, which outlives sessions (its blocks do).
/// Aligned to 128 bytes (two lines, for adjacent-line prefetch) so that the lock of one
/// shard never shares a line with the data of the one before: in exact mode each thread
/// records into its own area's shard, and a shared line would bounce between their cores.
#[repr(align(128))]
struct ShardCell {
    session: Option<Shard>,
    area: Area,
}

impl ShardCell {
    /// Live records of the running session in this shard (its table's and its area's).
    fn live_records(&self) -> usize {
        self.session
            .as_ref()
            .map_or(0, |s| s.blocks.len() + self.area.recorded())
    }

    const fn new(index: usize) -> Self {
        ShardCell {
            session: None,
            area: Area::new(index),
        }
    }
}

// Each shard owns the region area of its index, and has a counter in each filter row.
const _: () = assert!(SHARD_COUNT == region::AREAS && SHARD_COUNT == filter::SHARDS);

static SHARDS: [SpinLock<ShardCell>; SHARD_COUNT] = [
    SpinLock::new(ShardCell::new(0)),
    SpinLock::new(ShardCell::new(1)),
    SpinLock::new(ShardCell::new(2)),
    SpinLock::new(ShardCell::new(3)),
    SpinLock::new(ShardCell::new(4)),
    SpinLock::new(ShardCell::new(5)),
    SpinLock::new(ShardCell::new(6)),
    SpinLock::new(ShardCell::new(7)),
];

/// Runs `f` on each shard that may hold a record of the block at `addr` (outside the
/// region), as the filter says, with its lock held, until `f` returns true; whether one
/// did.
fn in_shards_of(addr: usize, mut f: impl FnMut(&mut Shard) -> bool) -> bool {
    let mut candidates = filter::shards(addr);
    while candidates != 0 {
        let index = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        let mut cell = SHARDS[index].lock();
        if cell.session.as_mut().is_some_and(&mut f) {
            return true;
        }
    }
    false
}

/// Every shard lock, taken in order (after `STATE` and `STACKS` if those are needed).
struct AllShards {
    // Fields drop in order: the shard guards first, then the outer reentrancy guard, so
    // the thread stays "inside" until the last lock is released.
    shards: [SpinGuard<'static, ShardCell>; SHARD_COUNT],
    _inside: Guard,
}

fn lock_all_shards() -> AllShards {
    let inside = Guard::enter(GuardLevel::Inside);
    AllShards {
        shards: std::array::from_fn(|i| SHARDS[i].lock()),
        _inside: inside,
    }
}

/// Generations handed out so far (0 is never one, so a zeroed cache entry never matches).
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Relaxed) + 1
}

/// Frames kept per stack by the running session (user frames plus the allowance), read
/// without a lock before the walk is hashed; the stack table clamps to its own stride.
static KEEP_FRAMES: AtomicUsize = AtomicUsize::new(0);

/// Per-thread cache of recently interned stacks: hash → (generation, id), direct-mapped.
/// Const-initialised `Cell`s without `Drop`: reading it never allocates.
const CACHE_WAYS: usize = 16;
thread_local! {
    static STACK_CACHE: [Cell<(u64, u64)>; CACHE_WAYS] =
        const { [const { Cell::new((0, 0)) }; CACHE_WAYS] };
}

fn cache_slot(h: u64) -> usize {
    (h >> 60) as usize % CACHE_WAYS
}

/// The cached (generation, id) of the stack with hash `h`. A stack is known by its 64-bit
/// hash here (two distinct stacks of one process sharing one is a ~2^-40 event); the
/// stack table itself compares frames.
fn cache_get(h: u64) -> Option<(u64, u16)> {
    STACK_CACHE
        .try_with(|c| {
            let (hash, tagged) = c[cache_slot(h)].get();
            (hash == h && tagged != 0).then_some((tagged >> 16, tagged as u16))
        })
        .ok()
        .flatten()
}

fn cache_put(h: u64, generation: u64, id: u16) {
    let _ = STACK_CACHE.try_with(|c| c[cache_slot(h)].set((h, (generation << 16) | u64::from(id))));
}

/// Frames `status` reports before any session ran (the server's default setting).
const DEFAULT_FRAMES: u32 = 32;

/// The id of the stack `frames` (hash `h`) and the generation it belongs to; `None`
/// when tracking is off. Takes the stack lock, and for a collection every shard lock.
fn intern(h: u64, frames: &[usize], walk: unwind::Walk) -> Option<(u64, u16)> {
    let truncated = walk.depth > frames.len();
    let mut stacks = STACKS.lock();
    let s = stacks.as_mut()?;
    let id = match s.table.intern(h, frames, walk.depth, truncated, true) {
        Interned::Id(id) => id,
        Interned::CollectFirst => {
            let mut all = lock_all_shards();
            s.table.collect(|id| {
                all.shards
                    .iter()
                    .any(|g| g.session.as_ref().is_some_and(|sh| sh.holds(id)))
            });
            // A collected id may name another stack from now on: its counters of blocks
            // ever recorded start again from zero.
            let ids = all
                .shards
                .iter()
                .filter_map(|g| g.session.as_ref().map(|sh| sh.totals.len()))
                .max()
                .unwrap_or(0);
            for id in 0..ids {
                let held = all
                    .shards
                    .iter()
                    .any(|g| g.session.as_ref().is_some_and(|sh| sh.holds(id as u16)));
                if !held {
                    for sh in all.shards.iter_mut().filter_map(|g| g.session.as_mut()) {
                        if let Some(t) = sh.totals.as_mut_slice().get_mut(id) {
                            *t = [0; 4];
                        }
                    }
                }
            }
            s.generation = next_generation();
            for shard in all.shards.iter_mut().filter_map(|g| g.session.as_mut()) {
                shard.generation = s.generation;
            }
            drop(all);
            match s.table.intern(h, frames, walk.depth, truncated, false) {
                Interned::Id(id) => id,
                Interned::CollectFirst => OVERFLOW,
            }
        }
    };
    if id != OVERFLOW {
        // The overflow bucket is not cached: each drop must be counted by the table.
        cache_put(h, s.generation, id);
    }
    Some((s.generation, id))
}

/// Runs `f` on the shard `index` with the id of the stack `frames` (hash `h`), under the
/// shard lock, once the id is known to belong to the shard's generation; `None` when
/// tracking is off (or, twice in a row, a collection raced the lookup).
fn with_stack_id<R>(
    index: usize,
    h: u64,
    frames: &[usize],
    walk: unwind::Walk,
    f: impl FnOnce(&mut Shard, &mut Area, u16) -> R,
) -> Option<R> {
    let mut cached = cache_get(h);
    // Twice at most: a cached id may belong to an older generation (then it is looked up
    // again under the stack lock).
    for _ in 0..2 {
        let (generation, id) = cached.or_else(|| intern(h, frames, walk))?;
        let mut guard = SHARDS[index].lock();
        let cell = &mut *guard;
        let s = cell.session.as_mut()?;
        if s.generation == generation {
            return Some(f(s, &mut cell.area, id));
        }
        cached = None;
    }
    None
}

/// A new block chosen for recording (sampled, or any block in exact mode): walks the
/// stack (from the frame record `from`, see `unwind::capture`) and serves the block from
/// the region area `area` with its record, or, when the region cannot hold it, takes it
/// from `alloc_system` (an address, 0 if out of memory) and records it in the block
/// table of the area's shard. Returns the block's address (0: out of memory).
/// Blocks the tracker itself asks for (reentrancy guard raised) are plain `System`
/// blocks.
pub(crate) fn alloc_recorded(
    size: usize,
    align: usize,
    area: usize,
    zeroed: bool,
    from: usize,
    alloc_system: impl FnOnce() -> usize,
) -> usize {
    if guard_level() != GuardLevel::None {
        return alloc_system();
    }
    let _inside = Guard::enter(GuardLevel::Inside);
    let mut raw = unwind::Frames::<MAX_RAW_FRAMES>::new();
    let walk = unwind::capture(&mut raw, KEEP_FRAMES.load(Relaxed), from);
    let frames = raw.as_slice();
    // The area's shard records the block, in the region or in its block table.
    let shard = area % SHARD_COUNT;
    if region::eligible(size, align, WORD.load(Relaxed) & MODE_MASK == MODE_EXACT)
        && region::available()
    {
        let placed = with_stack_id(shard, walk.hash, frames, walk, |s, a, id| {
            let Some(addr) = a.alloc(size, align, zeroed) else {
                // The area's span of this class is full: this block goes to System and
                // into the table, so small frees must look there from now on.
                spill();
                return None;
            };
            s.record_region(a, addr, size, id);
            Some(addr)
        });
        match placed {
            Some(Some(addr)) => return addr,
            Some(None) => {}
            // Tracking stopped meanwhile.
            None => return alloc_system(),
        }
    }
    let addr = alloc_system();
    if addr != 0 {
        with_stack_id(shard, walk.hash, frames, walk, |s, _, id| {
            s.record(addr, size, id)
        });
    }
    addr
}

/// Records a `System` block that was already chosen for recording (`realloc`'s new
/// block when it stays out of the region) in the block table of the region area `area`'s
/// shard (the allocating thread's, as in [`alloc_recorded`]).
pub(crate) fn record_system(addr: usize, size: usize, area: usize) {
    if guard_level() != GuardLevel::None {
        return;
    }
    let _inside = Guard::enter(GuardLevel::Inside);
    let mut raw = unwind::Frames::<MAX_RAW_FRAMES>::new();
    let walk = unwind::capture(&mut raw, KEEP_FRAMES.load(Relaxed), 0);
    with_stack_id(
        area % SHARD_COUNT,
        walk.hash,
        raw.as_slice(),
        walk,
        |s, _, id| s.record(addr, size, id),
    );
}

/// The size above which a free outside the region may have to end a record under
/// `word`: never while off; blocks the region does not take while sampling (every small
/// sampled block is in the region); every block in exact mode or spilled.
pub(crate) fn lookup_above(word: u64) -> usize {
    match word & MODE_MASK {
        MODE_OFF => usize::MAX,
        MODE_SAMPLED => region::SAMPLED_MAX_BLOCK,
        _ => 0,
    }
}

/// Sets the tracking word, with its lookup threshold.
fn publish(word: u64) {
    set_word(word, lookup_above(word));
}

/// Sampling continues with every free outside the region looked up (a small recorded
/// block is in `System` memory). Called with a shard lock held, which orders it against
/// `start` and `stop` (they set the word holding every shard lock). Another shard's spill
/// may run at once: both publish the same word, and the acquire load makes one that finds
/// the word already spilled see every slot's copy of it (see `set_word`).
fn spill() {
    let word = WORD.load(Acquire);
    if word & MODE_MASK == MODE_SAMPLED {
        publish((word & !MODE_MASK) | MODE_SAMPLED_SPILL);
    }
}

/// `dealloc` (or `realloc`'s move) of a block in the region: its record ends and its slot
/// goes back to its area. Freed while this thread is inside the tracker (a signal handler
/// interrupting it, which may hold that very lock), the block is leaked instead: its slot
/// and record stay until the session ends.
pub(crate) fn free_region(addr: usize) {
    if guard_level() == GuardLevel::Inside {
        return;
    }
    let mut guard = SHARDS[region::area_of(addr)].lock();
    let cell = &mut *guard;
    if let Some(record) = cell.area.free(addr)
        && let Some(s) = cell.session.as_mut()
    {
        s.weigh_in(split_region_record(record).0, false);
    }
}

/// Whether the block at `addr` (outside the region) may have a record: one load of the
/// counting filter, for the allocator's `dealloc` (then [`forget`]).
#[inline(always)]
pub(crate) fn may_have_record(addr: usize) -> bool {
    filter::may_contain(addr)
}

/// The tracked path of `dealloc`/`realloc` for a block outside the region.
#[inline]
pub(crate) fn on_free(addr: usize) {
    if !filter::may_contain(addr) {
        return;
    }
    forget(addr);
}

/// Ends the record of the block at `addr` (outside the region), if it has one: the lock
/// and a block-table lookup of the shard the filter names (of each, after a collision).
/// Callers ask the filter first.
#[inline(never)]
pub(crate) fn forget(addr: usize) {
    if guard_level() == GuardLevel::Inside {
        return;
    }
    in_shards_of(addr, |s| s.forget(addr));
}

/// What [`start`] did.
pub(crate) enum Started {
    /// This call started a session.
    Now,
    /// A session with the same settings runs.
    AlreadyRunning,
    /// A session with other settings runs (kept): (running, requested).
    OtherSettings(TrackingConfig, TrackingConfig),
    /// `System` is out of memory: tracking stays off.
    OutOfMemory,
}

/// Starts a session unless one runs (its configuration is kept).
pub(crate) fn start(config: TrackingConfig) -> Started {
    let requested = clamped(config);
    let frames = requested.frames;
    let interval = config.sample_interval_bytes.clamp(1, MAX_INTERVAL);
    let keep = frames as usize + OWN_FRAMES_ALLOWANCE;
    let mut state = STATE.lock();
    if let Some(running) = state.session.as_ref() {
        let running = clamped(running.config());
        return if running == requested {
            Started::AlreadyRunning
        } else {
            Started::OtherSettings(running, requested)
        };
    }
    let Some(table) = StackTable::new(keep) else {
        // System is out of memory: stay off rather than half on.
        return Started::OutOfMemory;
    };
    let mut stacks = STACKS.lock();
    let mut all = lock_all_shards();
    let generation = next_generation();
    let estimated = (config.mode == Mode::Sampled).then_some(interval);
    for (index, guard) in all.shards.iter_mut().enumerate() {
        let (Some(blocks), Some(totals)) = (BlockTable::new(), RawBuf::zeroed(INITIAL_TOTALS))
        else {
            for guard in &mut all.shards {
                guard.session = None;
            }
            return Started::OutOfMemory;
        };
        guard.session = Some(Shard {
            index,
            blocks,
            totals,
            generation,
            weights: Weights::new(estimated),
        });
    }
    *stacks = Some(Stacks { table, generation });
    filter::clear();
    MARK.store(0, Relaxed);
    sampler::configure(interval, requested.seed);
    KEEP_FRAMES.store(keep, Relaxed);
    state.session = Some(Tracking {
        mode: config.mode,
        frames,
        interval,
        seed: requested.seed,
        since: SystemTime::now(),
    });
    // Sampling keeps frees of small blocks outside the region free of lookups, unless
    // there is no region (then it runs spilled from the start).
    let mode = match config.mode {
        Mode::Sampled if region::reserve() => MODE_SAMPLED,
        Mode::Sampled => MODE_SAMPLED_SPILL,
        Mode::Exact => {
            region::reserve();
            MODE_EXACT
        }
    };
    let session = SESSIONS.fetch_add(1, Relaxed) + 1;
    publish((session << 2) | mode);
    state.last = (config.mode, frames);
    Started::Now
}

/// Sessions started so far: the high bits of the tracking word.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// Per-stack totals each shard starts with (grown by doubling as ids grow).
const INITIAL_TOTALS: usize = 256;

/// Ends the session and frees its tables.
pub(crate) fn stop() {
    let mut state = STATE.lock();
    let mut stacks = STACKS.lock();
    let mut all = lock_all_shards();
    // Off, under every shard lock (so no spill can follow it). Once the region was used,
    // the off word stays non-zero: frees must keep checking for region blocks.
    let word = WORD.load(Relaxed);
    publish(if region::available() {
        word & !MODE_MASK
    } else {
        WORD_OFF
    });
    // Dropping the tables frees their System-allocated memory (not through the tracker);
    // region blocks stay live, without records.
    for guard in &mut all.shards {
        guard.session = None;
        guard.area.forget_records();
    }
    *stacks = None;
    filter::clear();
    state.session = None;
}

pub(crate) fn status() -> TrackingStatus {
    let state = STATE.lock();
    match state.session.as_ref() {
        Some(s) => TrackingStatus {
            enabled: true,
            mode: s.mode,
            frames: s.frames,
            sample_interval_bytes: (s.mode == Mode::Sampled).then_some(s.interval),
            since: Some(s.since),
            seed: s.seed,
        },
        None => TrackingStatus {
            enabled: false,
            mode: state.last.0,
            frames: state.last.1,
            sample_interval_bytes: None,
            since: None,
            seed: None,
        },
    }
}

pub(crate) fn totals() -> Totals {
    let current = current_bytes();
    let mut totals = Totals {
        current_bytes: current,
        peak_bytes: peak_bytes(current),
        live_blocks: live_blocks(),
        total_allocations: total_allocations(),
        ..Totals::default()
    };
    let stacks = STACKS.lock();
    if let Some(s) = stacks.as_ref() {
        totals.tracked_stacks = s.table.tracked() as u64;
        totals.dropped_stacks = s.table.dropped();
        let mut overhead = s.table.bytes() + filter::BYTES;
        for shard in &SHARDS {
            let cell = shard.lock();
            if let Some(sh) = cell.session.as_ref() {
                overhead += sh.blocks.bytes() + sh.totals.bytes() + cell.area.meta_bytes();
            }
        }
        totals.overhead_bytes = overhead as u64;
    }
    totals
}

/// Whether the block at `addr` has a live record.
pub(crate) fn is_tracked(addr: usize) -> bool {
    if region::contains(addr) {
        let mut cell = SHARDS[region::area_of(addr)].lock();
        return cell.session.is_some() && cell.area.record(addr).is_some();
    }
    in_shards_of(addr, |s| s.blocks.get(addr as u64).is_some())
}

/// Live tracked blocks (table entries) of the current session.
pub(crate) fn tracked_blocks() -> usize {
    SHARDS.iter().map(|shard| shard.lock().live_records()).sum()
}

/// Copies per-stack totals, summed over the shards, and sums every live record into its
/// stack's cohort (see `snapshot::Cohort`), then bumps the mark. Buffers are allocated
/// before taking the locks (retrying if the tables grew meanwhile), so nothing allocates
/// while they are held; every lock is held for the copy, so it is consistent.
///
/// The records are summed as they are read: per stack id, the cohort of the birth mark
/// last seen (blocks of one stack and mark mostly come together); a record of another
/// mark sets that one aside in `spill`, whose room (one entry per live record at most) is
/// reserved from `System` (not counted in the heap totals, its pages touched only as
/// used). So a snapshot never copies records.
pub(crate) fn snapshot() -> Snapshot {
    let _untracked = Guard::enter(GuardLevel::Untracked);
    let taken_at = Some(SystemTime::now());
    let (mut stacks_cap, mut stride) = {
        let stacks = STACKS.lock();
        match stacks.as_ref() {
            None => {
                return Snapshot {
                    taken_at,
                    ..Snapshot::default()
                };
            }
            Some(s) => (s.table.used(), s.table.stride()),
        }
    };
    let mut records_cap = tracked_blocks();
    loop {
        // Slack so a few new stacks or blocks between the locks do not force a retry.
        let cap = stacks_cap + 64;
        let rcap = records_cap + records_cap / 8 + 256;
        let mut out: Vec<StackTotals> = Vec::with_capacity(cap);
        let mut frames: Vec<u64> = Vec::with_capacity(cap * stride);
        // Per stack id (ids are below MAX_STACKS + 1): the cohort being summed, and the
        // ones set aside (stack id first). Empty (None) only if System is out of memory:
        // the snapshot then has no cohorts.
        let mut current = RawBuf::<CohortWords>::zeroed(stacks::MAX_STACKS + 1);
        let mut spill = RawBuf::<[u64; 7]>::zeroed(rcap);
        let mut spilled = 0usize;
        let state = STATE.lock();
        let stacks = STACKS.lock();
        let (Some(session), Some(s)) = (state.session.as_ref(), stacks.as_ref()) else {
            return Snapshot {
                taken_at,
                ..Snapshot::default()
            };
        };
        if s.table.used() > cap || s.table.stride() != stride {
            stacks_cap = s.table.used();
            stride = s.table.stride();
            continue;
        }
        let mut all = lock_all_shards();
        let live: usize = all.shards.iter().map(|g| g.live_records()).sum();
        if live > rcap {
            records_cap = live;
            continue;
        }
        s.table.for_each_in_use(|v| {
            let mut sum = [0u64; 4];
            let mut square = 0f64;
            for shard in all.shards.iter().filter_map(|g| g.session.as_ref()) {
                if let Some(t) = shard.totals.as_slice().get(usize::from(v.id)) {
                    sum[0] = sum[0].wrapping_add(t[0]);
                    sum[1] = sum[1].wrapping_add(t[1]);
                    sum[2] += t[2];
                    square += f64::from_bits(t[3]);
                }
            }
            if sum[1] == 0 {
                return;
            }
            // Within capacity: these pushes never allocate.
            out.push(StackTotals {
                id: v.id,
                cohorts: (0, 0),
                births: sum[2],
                born_square: square,
                start: frames.len() as u32,
                len: v.frames.len() as u16,
                depth: v.depth,
                truncated: v.truncated,
                overflow: v.overflow,
                bytes: sum[0],
                count: sum[1],
            });
            frames.extend_from_slice(v.frames);
        });
        let mark = MARK.load(Relaxed);
        let interval = (session.mode == Mode::Sampled).then_some(session.interval);
        let mut weights = Weights::new(interval);
        let mut add = |packed: u64, birth: u64| {
            let (Some(current), Some(spill)) = (current.as_mut(), spill.as_mut()) else {
                return;
            };
            let (size, id) = table::unpack(packed);
            let (bytes, count) = weights.of(size);
            let Some(words) = current.as_mut_slice().get_mut(usize::from(id)) else {
                return;
            };
            let mut c = Cohort::from_words(words);
            if c.samples != 0 && c.mark != birth {
                // One entry per record at most: within the room reserved.
                if let Some(slot) = spill.as_mut_slice().get_mut(spilled) {
                    let w = c.to_words();
                    *slot = [u64::from(id), w[0], w[1], w[2], w[3], w[4], w[5]];
                    spilled += 1;
                }
                c = Cohort::default();
            }
            // w = count / 65536; a sample's variance S²(1 − p)/p² is b·S·(w − 1).
            let b = bytes as f64;
            let w = count as f64 / sampler::COUNT_ONE as f64;
            c.first = birth;
            c.mark = birth;
            c.samples += 1;
            c.bytes = c.bytes.wrapping_add(bytes);
            c.variance += (b * size as f64 * (w - 1.0)).max(0.0);
            c.square += b * b;
            *words = c.to_words();
        };
        for guard in all.shards.iter_mut() {
            let ShardCell { session, area } = &mut **guard;
            let Some(sh) = session.as_ref() else {
                continue;
            };
            sh.blocks.for_each(&mut add);
            area.for_each_record(|record| {
                let (packed, birth) = split_region_record(record);
                add(packed, birth);
            });
        }
        // Blocks recorded from now on are born after this snapshot.
        MARK.store(mark + 1, Relaxed);
        drop(all);
        let estimated = session.mode == Mode::Sampled;
        let frame_limit = session.frames;
        let tracking_since = Some(session.since);
        let sample_interval_bytes = interval;
        drop(stacks);
        drop(state);
        let set_aside: Vec<(u16, Cohort)> = spill.as_ref().map_or_else(Vec::new, |sp| {
            sp.as_slice()[..spilled]
                .iter()
                .map(|e| {
                    let words = [e[1], e[2], e[3], e[4], e[5], e[6]];
                    (e[0] as u16, Cohort::from_words(&words))
                })
                .collect()
        });
        drop(spill);
        let last = current.as_ref().map_or(&[][..], RawBuf::as_slice);
        let cohorts = cohorts(&mut out, last, set_aside, mark);
        drop(current);
        return Snapshot {
            taken_at,
            estimated,
            tracking_since,
            sample_interval_bytes,
            stacks: out,
            frames,
            frame_limit,
            cohorts,
            mark,
        };
    }
}

/// Each stack's cohorts from the sums made under the locks (`current`: the last per id;
/// `spill`: the ones set aside), by mark, equal marks merged, the oldest merged beyond
/// [`MAX_COHORTS`]; points each of `stacks` at its own. Region births are kept modulo
/// 2^28: they are put back next to `mark`.
fn cohorts(
    stacks: &mut [StackTotals],
    current: &[CohortWords],
    mut spill: Vec<(u16, Cohort)>,
    mark: u64,
) -> Vec<Cohort> {
    let unwrap = |b: u64| {
        let period = 1u64 << 28;
        if b >= period || mark < period {
            return b;
        }
        let candidate = (mark & !(period - 1)) | b;
        if candidate > mark {
            candidate - period
        } else {
            candidate
        }
    };
    for (_, c) in spill.iter_mut() {
        c.mark = unwrap(c.mark);
        c.first = c.mark;
    }
    spill.sort_unstable_by_key(|(id, c)| (*id, c.mark));
    let mut out: Vec<Cohort> = Vec::new();
    let mut mine: Vec<Cohort> = Vec::new();
    let mut i = 0;
    for stack in stacks.iter_mut() {
        let id = stack.id;
        mine.clear();
        while i < spill.len() && spill[i].0 < id {
            i += 1;
        }
        while i < spill.len() && spill[i].0 == id {
            mine.push(spill[i].1);
            i += 1;
        }
        if let Some(c) = current
            .get(usize::from(id))
            .map(Cohort::from_words)
            .filter(|c| c.samples > 0)
        {
            let m = unwrap(c.mark);
            mine.push(Cohort {
                first: m,
                mark: m,
                ..c
            });
        }
        mine.sort_unstable_by_key(|c| c.mark);
        let mut merged: Vec<Cohort> = Vec::with_capacity(mine.len());
        for c in &mine {
            match merged.last_mut() {
                Some(last) if last.mark == c.mark => last.absorb(c),
                _ => merged.push(*c),
            }
        }
        if merged.len() > MAX_COHORTS {
            let extra = merged.len() - MAX_COHORTS + 1;
            let mut oldest = merged[0];
            for c in &merged[1..extra] {
                oldest.absorb(c);
            }
            merged.drain(..extra);
            merged.insert(0, oldest);
        }
        let start = out.len();
        out.extend_from_slice(&merged);
        stack.cohorts = (start as u32, merged.len() as u32);
    }
    out
}
