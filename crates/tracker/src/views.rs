//! Symbolized per-stack views of a [`Snapshot`] for the exporters (pprof, folded stacks,
//! flame graphs), and per-site histories over several snapshots for the trend.
//!
//! The exporters need more than the grouped rows of `stats`: every stack on its own,
//! its frames still grouped by return address (one pprof `Location` per address, with
//! the functions inlined there as its lines). The tracker's own frames are trimmed and
//! the session's frame limit applied exactly as `stats` does, so an export and a
//! snapshot reply show the same stacks. Like `stats`, everything here symbolizes: call it
//! off async worker threads. The formats themselves live in the add-on crate (`heapwatch::export`).

use std::collections::HashMap;

use crate::guard::untracked;
use crate::snapshot::{Snapshot, StackTotals, round_count};
use crate::stats::{GroupBy, Symbols, groups, symbols_of};
use crate::symbolize::Frame;

/// One return address of a stack with the functions it resolves to, innermost (the
/// inlined callee) first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportLocation {
    /// The return address minus one: an address inside the call instruction.
    pub address: u64,
    /// At least one frame; an address without a symbol has one named by its object file
    /// and offset (`libc.so.6+0x2a1f4`), without a line.
    pub frames: Vec<Frame>,
}

/// One stack of a snapshot, symbolized, innermost location first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportStack {
    /// The allocation site first (plumbing above it trimmed), then its callers; empty for
    /// the overflow bucket and for a walk that recorded no frame.
    pub locations: Vec<ExportLocation>,
    /// Live bytes (an estimate in sampled mode).
    pub bytes: u64,
    /// Live blocks (an estimate in sampled mode, rounded).
    pub count: u64,
    /// The overflow bucket: blocks of stacks that found the stack table full.
    pub overflow: bool,
    /// The walk was cut at the frame limit.
    pub truncated: bool,
}

/// One allocation site's size in each of several snapshots (see [`site_history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteHistory {
    /// "function (file:line)" frames from the site outwards (as `GroupBy::Site` rows).
    pub traceback: Vec<String>,
    /// The same frames, structured (function, file, line), same order.
    pub frames: Vec<Frame>,
    /// The library frames above the site (as [`Statistic::inner_frames`](crate::Statistic::inner_frames)).
    pub inner_frames: Vec<Frame>,
    /// Bytes at the site in each snapshot, in the order given (0 where absent).
    pub bytes: Vec<u64>,
}

/// The locations of one stack, from its allocation site outwards: the tracker's own
/// frames are trimmed, and so is the allocation plumbing above the site (std, alloc,
/// hashbrown), as Go's heap profiles hide `mallocgc` — so a profile's leaf function and
/// a flame graph's top frame are the line of code that allocated. A stack with no frame
/// outside the plumbing keeps its plumbing.
fn locations(snap: &Snapshot, stack: &StackTotals, symbols: &Symbols) -> Vec<ExportLocation> {
    let site_first = collect_locations(snap, stack, symbols, true);
    if site_first.is_empty() {
        collect_locations(snap, stack, symbols, false)
    } else {
        site_first
    }
}

fn collect_locations(
    snap: &Snapshot,
    stack: &StackTotals,
    symbols: &Symbols,
    trim_plumbing: bool,
) -> Vec<ExportLocation> {
    let mut out = Vec::new();
    let mut started = false;
    let mut walked = 0u32;
    for &addr in snap.raw_frames(stack) {
        let Some(frames) = symbols.get(&addr) else {
            continue;
        };
        // The frame limit counts physical frames from the first after the tracker's own,
        // as `stats` does, whether or not plumbing is shown.
        if frames.iter().any(|f| !f.is_tracker_internal()) {
            walked += 1;
        }
        let kept: Vec<Frame> = frames
            .iter()
            .filter(|f| {
                let skip = if trim_plumbing {
                    f.is_plumbing()
                } else {
                    f.is_tracker_internal()
                };
                started = started || !skip;
                started
            })
            .cloned()
            .collect();
        if !kept.is_empty() {
            out.push(ExportLocation {
                address: addr.saturating_sub(1),
                frames: kept,
            });
        }
        if walked >= snap.frame_limit.max(1) {
            break;
        }
    }
    out
}

impl Snapshot {
    /// Every stack with its symbolized locations, largest first (ties in stack order).
    /// Runs symbolization: call it off async worker threads.
    pub fn symbolized_stacks(&self) -> Vec<ExportStack> {
        untracked(|| {
            let symbols = symbols_of([self]);
            let mut out: Vec<ExportStack> = self
                .stacks
                .iter()
                .map(|stack| ExportStack {
                    locations: if stack.overflow {
                        Vec::new()
                    } else {
                        locations(self, stack, &symbols)
                    },
                    bytes: stack.bytes,
                    count: round_count(stack.count),
                    overflow: stack.overflow,
                    truncated: stack.truncated,
                })
                .collect();
            out.sort_by_key(|s| std::cmp::Reverse(s.bytes));
            out
        })
    }
}

/// Per allocation site (grouped as [`GroupBy::Site`]), its bytes in each of `snaps`.
/// Sites are in no particular order. Symbolizes once for all snapshots: call it off
/// async worker threads.
pub fn site_history(snaps: &[&Snapshot]) -> Vec<SiteHistory> {
    untracked(|| {
        let symbols = symbols_of(snaps.iter().copied());
        let mut sites: HashMap<String, SiteHistory> = HashMap::new();
        for (i, snap) in snaps.iter().enumerate() {
            let newest = i + 1 == snaps.len();
            for (key, group) in groups(snap, GroupBy::Site, &symbols, None) {
                let entry = sites.entry(key).or_insert_with(|| SiteHistory {
                    traceback: Vec::new(),
                    frames: Vec::new(),
                    inner_frames: Vec::new(),
                    bytes: vec![0; snaps.len()],
                });
                entry.bytes[i] = group.bytes;
                // The newest snapshot's traceback is the one shown (rendered only there).
                if newest || entry.traceback.is_empty() {
                    let traceback = group.traceback(snap, GroupBy::Site, &symbols);
                    entry.traceback = traceback.lines;
                    entry.frames = traceback.frames;
                    entry.inner_frames = traceback.inner_frames;
                }
            }
        }
        sites.into_values().collect()
    })
}
