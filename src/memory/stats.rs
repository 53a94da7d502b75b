//! Grouped statistics and diffs over [`Snapshot`]s (tracemalloc's `statistics` and
//! `compare_to`).
//!
//! Per stack: symbolize its raw frames (see `symbolize`), trim the tracker's own frames
//! from the top, keep the session's `frames` limit of physical frames (all inline frames
//! at a kept address are shown), then pick the *site*: the first frame that is not
//! allocation plumbing (std/alloc/core/hashbrown), or the first frame if all are.
//! Groups are keyed by that site's "function (file:line)", function, or file, or by the
//! whole traceback. Everything here runs with recording suppressed, so producing a
//! report never shows up in the next one.

use std::cmp::Reverse;
use std::collections::HashMap;

use super::snapshot::{Snapshot, StackTotals, round_count};
use super::symbolize::{Frame, resolve_all};
use super::{GroupBy, Statistic};

/// Traceback shown for the overflow bucket (stack table full).
const OVERFLOW_FRAME: &str = "<other stacks> (stack table full)";
/// Function name of the overflow bucket.
const OVERFLOW_FUNCTION: &str = "<other stacks>";
/// Shown when the walk recorded no frame (e.g. a thread whose stack bounds are unknown).
const NO_FRAMES: &str = "<no frames> (unknown)";

pub(crate) type Symbols = HashMap<u64, Vec<Frame>>;

/// One group's running totals and its representative (largest stack's) traceback.
pub(crate) struct Group {
    pub(crate) bytes: u64,
    pub(crate) count: u64,
    rep_bytes: u64,
    pub(crate) traceback: Vec<String>,
}

/// Symbolized frames of one stack, own frames trimmed and frame limit applied.
fn trace<'a>(snap: &Snapshot, stack: &StackTotals, symbols: &'a Symbols) -> Vec<&'a Frame> {
    let mut out = Vec::new();
    let mut started = false;
    let mut kept = 0u32;
    for addr in snap.raw_frames(stack) {
        let Some(frames) = symbols.get(addr) else {
            continue;
        };
        let mut any = false;
        for f in frames {
            if !started && f.is_tracker_internal() {
                continue;
            }
            started = true;
            any = true;
            out.push(f);
        }
        if any {
            kept += 1;
            if kept >= snap.frame_limit.max(1) {
                break;
            }
        }
    }
    out
}

pub(crate) fn groups(
    snap: &Snapshot,
    group_by: GroupBy,
    symbols: &Symbols,
) -> HashMap<String, Group> {
    let mut groups: HashMap<String, Group> = HashMap::new();
    for stack in &snap.stacks {
        let (key, traceback) = if stack.overflow {
            let key = match group_by {
                GroupBy::Function => OVERFLOW_FUNCTION.to_owned(),
                GroupBy::File => "unknown".to_owned(),
                GroupBy::Site | GroupBy::Traceback => OVERFLOW_FRAME.to_owned(),
            };
            (key, vec![OVERFLOW_FRAME.to_owned()])
        } else {
            let frames = trace(snap, stack, symbols);
            if frames.is_empty() {
                let key = match group_by {
                    GroupBy::Function => "<no frames>".to_owned(),
                    GroupBy::File => "unknown".to_owned(),
                    GroupBy::Site | GroupBy::Traceback => NO_FRAMES.to_owned(),
                };
                (key, vec![NO_FRAMES.to_owned()])
            } else {
                let site = frames.iter().position(|f| !f.is_plumbing()).unwrap_or(0);
                let key = match group_by {
                    GroupBy::Site => frames[site].render(),
                    GroupBy::Function => frames[site].function_key(),
                    GroupBy::File => frames[site].file_key(),
                    GroupBy::Traceback => frames
                        .iter()
                        .map(|f| f.render())
                        .collect::<Vec<_>>()
                        .join("\n"),
                };
                let from = if group_by == GroupBy::Traceback {
                    0
                } else {
                    site
                };
                (key, frames[from..].iter().map(|f| f.render()).collect())
            }
        };
        let group = groups.entry(key).or_insert(Group {
            bytes: 0,
            count: 0,
            rep_bytes: 0,
            traceback: Vec::new(),
        });
        group.bytes = group.bytes.wrapping_add(stack.bytes);
        group.count = group.count.wrapping_add(stack.count);
        if group.traceback.is_empty() || stack.bytes > group.rep_bytes {
            group.rep_bytes = stack.bytes;
            group.traceback = traceback;
        }
    }
    groups
}

pub(crate) fn symbols_of<'a>(snaps: impl IntoIterator<Item = &'a Snapshot>) -> Symbols {
    let mut addrs: Vec<u64> = snaps
        .into_iter()
        .flat_map(|s| s.frames.iter().copied())
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    resolve_all(addrs)
}

pub(crate) fn statistics(snap: &Snapshot, group_by: GroupBy, top_n: usize) -> Vec<Statistic> {
    super::allocator::untracked(|| {
        let symbols = symbols_of([snap]);
        let mut rows: Vec<(String, Group)> = groups(snap, group_by, &symbols).into_iter().collect();
        rows.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(top_n);
        rows.into_iter()
            .map(|(_, g)| Statistic {
                traceback: g.traceback,
                size_bytes: g.bytes,
                size_diff_bytes: 0,
                count: round_count(g.count),
                count_diff: 0,
            })
            .collect()
    })
}

fn diff(new: u64, old: u64) -> i64 {
    i64::try_from(i128::from(new) - i128::from(old)).unwrap_or(if new > old {
        i64::MAX
    } else {
        i64::MIN
    })
}

pub(crate) fn compare(
    new: &Snapshot,
    old: &Snapshot,
    group_by: GroupBy,
    top_n: usize,
) -> Vec<Statistic> {
    super::allocator::untracked(|| {
        let symbols = symbols_of([new, old]);
        let mut new_groups = groups(new, group_by, &symbols);
        let old_groups = groups(old, group_by, &symbols);
        let mut rows: Vec<(String, Statistic)> = Vec::new();
        for (key, old_group) in old_groups {
            let (size, count, traceback) = match new_groups.remove(&key) {
                Some(g) => (g.bytes, round_count(g.count), g.traceback),
                None => (0, 0, old_group.traceback),
            };
            let old_count = round_count(old_group.count);
            rows.push((
                key,
                Statistic {
                    traceback,
                    size_bytes: size,
                    size_diff_bytes: diff(size, old_group.bytes),
                    count,
                    count_diff: diff(count, old_count),
                },
            ));
        }
        for (key, g) in new_groups {
            let count = round_count(g.count);
            rows.push((
                key,
                Statistic {
                    traceback: g.traceback,
                    size_bytes: g.bytes,
                    size_diff_bytes: diff(g.bytes, 0),
                    count,
                    count_diff: diff(count, 0),
                },
            ));
        }
        rows.sort_by(|a, b| {
            let key = |s: &Statistic| {
                (
                    Reverse(s.size_diff_bytes.unsigned_abs()),
                    Reverse(s.size_bytes),
                )
            };
            key(&a.1).cmp(&key(&b.1)).then_with(|| a.0.cmp(&b.0))
        });
        rows.truncate(top_n);
        rows.into_iter().map(|(_, s)| s).collect()
    })
}
