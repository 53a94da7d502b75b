//! Site tracking state and the tracked path of the allocator.
//!
//! Owns the tracking session (mode, frame limit, interval, start time) and its tables
//! (blocks, stacks) behind one [`SpinLock`], plus the counting [`filter`]. The allocator
//! calls [`on_alloc`] / [`on_free`] when the mode is not off; `mod.rs` calls the rest.
//!
//! Order of work in `on_alloc`: reentrancy check, sampling decision (thread-local, no
//! lock), stack walk (no lock), then the lock for interning and the table insert. In
//! `on_free`: one filter load; only on a hit the lock and a table lookup.

use std::time::SystemTime;

use super::allocator::{
    Guard, GuardLevel, MODE_EXACT, MODE_OFF, MODE_SAMPLED, current_bytes, guard_level, live_blocks,
    peak_bytes, set_mode, total_allocations,
};
use super::lock::SpinLock;
use super::sampler;
use super::snapshot::{Snapshot, StackTotals};
use super::stacks::StackTable;
use super::table::{self, BlockTable};
use super::unwind;
use super::{Mode, Totals, TrackingConfig, TrackingStatus, filter};

/// This file as the compiler names it: frames in it are the tracker's own (see
/// `symbolize::OWN_SOURCES`).
pub(crate) const SOURCE: &str = file!();

/// Raw frames recorded beyond the user's `frames`: the tracker's own frames (this
/// module, the `GlobalAlloc` impl, `__rg_alloc`/`__rust_alloc`) sit at the top of every
/// walk and are trimmed at symbolization. Measured: 3 in release, up to 5 in debug.
pub(crate) const OWN_FRAMES_ALLOWANCE: usize = 8;
/// Largest `frames` a config may ask for (the contract's 1..=64).
pub(crate) const MAX_FRAMES: u32 = 64;
/// Largest raw walk kept.
const MAX_RAW_FRAMES: usize = MAX_FRAMES as usize + OWN_FRAMES_ALLOWANCE;
/// Intervals are clamped to 1 byte..=1 TiB: beyond 1 TiB every block would weigh
/// ≥ 2^24 and the 1/65536-unit counts could overflow.
const MAX_INTERVAL: u64 = 1 << 40;

struct Session {
    mode: Mode,
    frames: u32,
    interval: u64,
    since: SystemTime,
    blocks: BlockTable,
    stacks: StackTable,
}

impl Session {
    fn weigh(&self, size: u64) -> (u64, u64) {
        match self.mode {
            Mode::Exact => sampler::weigh(size, None),
            Mode::Sampled => sampler::weigh(size, Some(self.interval)),
        }
    }

    fn record(&mut self, addr: usize, size: usize, frames: &[usize], walk: unwind::Walk) {
        let size = (size as u64).min(table::MAX_SIZE);
        let truncated = walk.depth > frames.len();
        let id = self.stacks.intern(frames, walk.depth, truncated);
        // Err: the table cannot grow (System out of memory); the block goes unrecorded.
        if let Ok(stale) = self.blocks.insert(addr as u64, table::pack(size, id)) {
            if let Some(stale) = stale {
                // A record whose free we never saw (cannot happen in a correct program;
                // be safe): retire it before counting the new block.
                self.retire(addr, stale);
            }
            let (bytes, count) = self.weigh(size);
            self.stacks.add(id, bytes, count);
            filter::add(addr);
        }
    }

    fn retire(&mut self, addr: usize, packed: u64) {
        let (size, id) = table::unpack(packed);
        let (bytes, count) = self.weigh(size);
        self.stacks.sub(id, bytes, count);
        filter::remove(addr);
    }

    fn forget(&mut self, addr: usize) {
        if let Some(packed) = self.blocks.remove(addr as u64) {
            self.retire(addr, packed);
        }
    }
}

struct State {
    session: Option<Session>,
    /// Mode and frames of the last session, reported by `status` while off.
    last: (Mode, u32),
}

/// The tracker lock. A spin lock that never allocates (see `lock.rs`); held for the
/// intern + insert of one block, the removal of one block, or a snapshot's copy.
static STATE: SpinLock<State> = SpinLock::new(State {
    session: None,
    last: (Mode::Sampled, DEFAULT_FRAMES),
});

/// Frames `status` reports before any session ran (the server's default setting).
const DEFAULT_FRAMES: u32 = 32;

/// The tracked path of `alloc`/`alloc_zeroed`/`realloc` (the new block).
#[inline(never)]
pub(crate) fn on_alloc(addr: usize, size: usize, mode: u8) {
    if guard_level() != GuardLevel::None {
        return;
    }
    if mode == MODE_SAMPLED && !sampler::should_sample(size) {
        return;
    }
    let _inside = Guard::enter(GuardLevel::Inside);
    let mut frames = [0usize; MAX_RAW_FRAMES];
    let walk = unwind::capture(&mut frames);
    let mut state = STATE.lock();
    if let Some(session) = state.session.as_mut() {
        let keep = (session.frames as usize + OWN_FRAMES_ALLOWANCE).min(walk.len);
        session.record(addr, size, &frames[..keep], walk);
    }
}

/// The tracked path of `dealloc`/`realloc` (the old block).
#[inline]
pub(crate) fn on_free(addr: usize) {
    if !filter::may_contain(addr) {
        return;
    }
    forget_slow(addr);
}

#[inline(never)]
fn forget_slow(addr: usize) {
    if guard_level() == GuardLevel::Inside {
        return;
    }
    let mut state = STATE.lock();
    if let Some(session) = state.session.as_mut() {
        session.forget(addr);
    }
}

/// Starts a session; false if one is running (its configuration is kept).
pub(crate) fn start(config: TrackingConfig) -> bool {
    let frames = config.frames.clamp(1, MAX_FRAMES);
    let interval = config.sample_interval_bytes.clamp(1, MAX_INTERVAL);
    let mut state = STATE.lock();
    if state.session.is_some() {
        return false;
    }
    let (Some(blocks), Some(stacks)) = (
        BlockTable::new(),
        StackTable::new(frames as usize + OWN_FRAMES_ALLOWANCE),
    ) else {
        // System is out of memory: stay off rather than half on.
        return false;
    };
    filter::clear();
    sampler::configure(interval);
    state.session = Some(Session {
        mode: config.mode,
        frames,
        interval,
        since: SystemTime::now(),
        blocks,
        stacks,
    });
    let mode = match config.mode {
        Mode::Sampled => MODE_SAMPLED,
        Mode::Exact => MODE_EXACT,
    };
    set_mode(mode);
    state.last = (config.mode, frames);
    true
}

/// Ends the session and frees its tables.
pub(crate) fn stop() {
    let mut state = STATE.lock();
    set_mode(MODE_OFF);
    // Dropping the session frees its System-allocated tables (not through the tracker).
    state.session = None;
    filter::clear();
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
        },
        None => TrackingStatus {
            enabled: false,
            mode: state.last.0,
            frames: state.last.1,
            sample_interval_bytes: None,
            since: None,
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
    let state = STATE.lock();
    if let Some(s) = state.session.as_ref() {
        totals.tracked_stacks = s.stacks.tracked() as u64;
        totals.dropped_stacks = s.stacks.dropped();
        totals.overhead_bytes = (s.blocks.bytes() + s.stacks.bytes() + filter::BYTES) as u64;
    }
    totals
}

/// Whether the block at `addr` has a live record.
pub(crate) fn is_tracked(addr: usize) -> bool {
    let state = STATE.lock();
    state
        .session
        .as_ref()
        .is_some_and(|s| s.blocks.get(addr as u64).is_some())
}

/// Live tracked blocks (table entries) of the current session.
pub(crate) fn tracked_blocks() -> usize {
    let state = STATE.lock();
    state.session.as_ref().map_or(0, |s| s.blocks.len())
}

/// Copies per-stack totals. Buffers are allocated before taking the lock (retrying if
/// the table grew meanwhile), so nothing allocates while the lock is held.
pub(crate) fn snapshot() -> Snapshot {
    let _untracked = Guard::enter(GuardLevel::Untracked);
    let taken_at = Some(SystemTime::now());
    let (mut stacks_cap, mut stride) = {
        let state = STATE.lock();
        match state.session.as_ref() {
            None => {
                return Snapshot {
                    taken_at,
                    ..Snapshot::default()
                };
            }
            Some(s) => (s.stacks.used(), s.stacks.stride()),
        }
    };
    loop {
        // Slack so a few new stacks between the two locks do not force a retry.
        let cap = stacks_cap + 64;
        let mut stacks: Vec<StackTotals> = Vec::with_capacity(cap);
        let mut frames: Vec<u64> = Vec::with_capacity(cap * stride);
        let state = STATE.lock();
        let Some(s) = state.session.as_ref() else {
            return Snapshot {
                taken_at,
                ..Snapshot::default()
            };
        };
        if s.stacks.used() > cap || s.stacks.stride() != stride {
            stacks_cap = s.stacks.used();
            stride = s.stacks.stride();
            continue;
        }
        s.stacks.for_each_live(|v| {
            // Within capacity: these pushes never allocate.
            stacks.push(StackTotals {
                start: frames.len() as u32,
                len: v.frames.len() as u16,
                depth: v.depth,
                truncated: v.truncated,
                overflow: v.overflow,
                bytes: v.bytes,
                count: v.count,
            });
            frames.extend_from_slice(v.frames);
        });
        let estimated = s.mode == Mode::Sampled;
        let frame_limit = s.frames;
        let tracking_since = Some(s.since);
        let sample_interval_bytes = estimated.then_some(s.interval);
        drop(state);
        return Snapshot {
            taken_at,
            estimated,
            tracking_since,
            sample_interval_bytes,
            stacks,
            frames,
            frame_limit,
        };
    }
}
