//! Grouped statistics and diffs over [`Snapshot`]s (tracemalloc's `statistics` and
//! `compare_to`).
//!
//! Per stack: symbolize its raw frames (see `symbolize`), trim the tracker's own frames
//! from the top, keep the session's `frames` limit of physical frames (all inline frames
//! at a kept address are shown), then pick the *site*: the first frame in the
//! application's own code (not a [library frame](Frame::library)). Where a stack has none
//! within the limit, the site is its *innermost* frame: the first that is not allocation
//! plumbing (std/alloc/core/hashbrown), or the first frame if all are.
//! [`GroupBy::Innermost`] groups by the innermost frame always.
//! Groups are keyed by that site's "function (file:line)", function, or file, or by the
//! whole traceback. Everything here runs with recording suppressed, so producing a
//! report never shows up in the next one.
//!
//! A report symbolizes only what it reads: grouping by site, function or file reads each
//! stack down to its site (the tracker's and the allocator's frames above it are shared
//! by nearly every stack), and only the rows returned need whole tracebacks. So
//! `statistics` and `compare` resolve in rounds through one [`Symbolizer`] — a cold
//! snapshot of 10,000 stacks reads the debug info for dozens of addresses, not all
//! 11,000. Exports (which show every stack whole) resolve everything with
//! [`symbols_of`].

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::evidence::{Evidence, Order, Parts};
use crate::guard::untracked;
use crate::snapshot::{Snapshot, StackTotals, round_count};
use crate::symbolize::{Frame, Frames, Symbolizer, resolve_all};

/// How statistics group stacks.
///
/// The *site* of a stack is its first frame in the application's own code: not the
/// standard library, not a crate from the cargo registry or a git checkout, not the
/// tracker (see [`Frame::library`]) — the line of your code whose call allocated, even
/// when the allocation itself happened deep inside a dependency. A stack with no such
/// frame within the frame limit falls back to its innermost frame (see
/// [`GroupBy::Innermost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// By site "function (file:line)". A row's traceback is the largest stack of the
    /// group from its site outwards (site first, then callers); the library frames
    /// between the allocation and the site are the row's `inner_frames`.
    Site,
    /// By the site's function. Traceback as for `Site`.
    Function,
    /// By the site's file. Traceback as for `Site`.
    File,
    /// By the whole trimmed stack, plumbing frames included; the traceback is that stack.
    Traceback,
    /// By the innermost frame "function (file:line)": the first outside the tracker and
    /// the allocation plumbing of std/alloc/core/hashbrown, wherever it is (often a
    /// dependency: `tokio::runtime::task::core::Cell::new`). Traceback from that frame
    /// outwards.
    Innermost,
}

/// One row of grouped statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Statistic {
    /// "function (file:line)" strings, the site first. Code without a symbol reads
    /// "libc.so.6+0x… (libc.so.6)", never a bare address. See [`GroupBy`] for which stack a row shows.
    pub traceback: Vec<String>,
    /// The same frames structured, in the same order: `traceback[i]` is `frames[i]`'s
    /// [`Display`](std::fmt::Display) form, except for the two placeholder rows, whose one
    /// frame has no file: the overflow bucket (`<other stacks>`, traceback
    /// `<other stacks> (stack table full)`) and a walk that recorded no frame
    /// (`<no frames>`).
    pub frames: Vec<Frame>,
    /// The library frames a `Site`, `Function` or `File` row hides above its site: from
    /// the innermost frame (the allocating call in a dependency or the standard library,
    /// allocation plumbing trimmed) to the frame the site called, innermost first. Empty
    /// when the site is the innermost frame, and for `Traceback` and `Innermost` rows.
    pub inner_frames: Vec<Frame>,
    /// Live bytes (an estimate in sampled mode).
    pub size_bytes: u64,
    /// `size_bytes` minus the old snapshot's (0 from `statistics`).
    pub size_diff_bytes: i64,
    /// Live blocks (an estimate in sampled mode, rounded).
    pub count: u64,
    /// `count` minus the old snapshot's (0 from `statistics`).
    pub count_diff: i64,
    /// The samples behind the numbers, their standard error and, in a compare, what
    /// became of them (see [`Evidence`]).
    pub evidence: Evidence,
}

impl Snapshot {
    /// Symbolized top-`top_n` statistics grouped by `group_by`, largest size first
    /// (ties by name). `size_diff_bytes`/`count_diff` are 0. See [`GroupBy`] for what
    /// each row's `traceback` holds. Runs symbolization: call it off async worker threads.
    pub fn statistics(&self, group_by: GroupBy, top_n: usize) -> Vec<Statistic> {
        statistics(self, group_by, top_n)
    }

    /// tracemalloc's `compare_to`: per group size and count with their differences from
    /// `old`, sorted by absolute size difference, then size ([`Order::Change`]). Groups
    /// present on one side only appear with the other side as 0. Symbolizes both
    /// snapshots (off async threads).
    pub fn compare_to(&self, old: &Snapshot, group_by: GroupBy, top_n: usize) -> Vec<Statistic> {
        compare(self, old, group_by, Order::Change, top_n)
    }

    /// [`compare_to`](Self::compare_to) in the given [`Order`]: the top `top_n` rows
    /// after ordering and filtering. With [`Order::Suspects`], the rows whose samples show
    /// retained growth come first (see [`Retention::leak_score`](crate::Retention)).
    pub fn compare_ordered(
        &self,
        old: &Snapshot,
        group_by: GroupBy,
        order: Order,
        top_n: usize,
    ) -> Vec<Statistic> {
        compare(self, old, group_by, order, top_n)
    }
}

/// Traceback shown for the overflow bucket (stack table full).
const OVERFLOW_FRAME: &str = "<other stacks> (stack table full)";
/// Function name of the overflow bucket.
const OVERFLOW_FUNCTION: &str = "<other stacks>";
/// Shown when the walk recorded no frame (e.g. a thread whose stack bounds are unknown).
const NO_FRAMES: &str = "<no frames> (unknown)";
/// Function name of a walk that recorded no frame.
const NO_FRAMES_FUNCTION: &str = "<no frames>";

/// A row's traceback: the rendered lines and the frames they render, same order, and the
/// library frames above the site (see [`Statistic::inner_frames`]).
pub(crate) struct Traceback {
    pub(crate) lines: Vec<String>,
    pub(crate) frames: Vec<Frame>,
    pub(crate) inner_frames: Vec<Frame>,
}

impl Traceback {
    /// No traceback (a row without a representative stack).
    fn empty() -> Self {
        Traceback {
            lines: Vec::new(),
            frames: Vec::new(),
            inner_frames: Vec::new(),
        }
    }

    /// A placeholder row's one line and its frame, named `function`, without a file.
    fn placeholder(line: &str, function: &str) -> Self {
        Traceback {
            lines: vec![line.to_owned()],
            frames: vec![Frame::new(function, None, None)],
            inner_frames: Vec::new(),
        }
    }

    /// These frames, each line its rendering, below the `inner` ones.
    fn of(inner: &[&Frame], frames: &[&Frame]) -> Self {
        Traceback {
            lines: frames.iter().map(|f| f.render()).collect(),
            frames: frames.iter().map(|f| (*f).clone()).collect(),
            inner_frames: inner.iter().map(|f| (*f).clone()).collect(),
        }
    }
}

/// Which frame of a stack is its site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pick {
    /// The first application frame, else the innermost.
    Application,
    /// The first frame that is not allocation plumbing, else the first.
    Innermost,
}

impl Pick {
    fn of(group_by: GroupBy) -> Pick {
        match group_by {
            GroupBy::Innermost => Pick::Innermost,
            _ => Pick::Application,
        }
    }
}

/// Resolved frames by return address: what grouping and rendering read.
pub(crate) type Symbols = HashMap<u64, Frames>;

/// One group's running totals and its representative: the index (in the snapshot's
/// stacks) of its largest stack. Tracebacks are rendered only for the rows returned
/// (profiled: rendering every stack's traceback took most of a 10,000-stack snapshot).
pub(crate) struct Group {
    pub(crate) bytes: u64,
    pub(crate) count: u64,
    /// The evidence sums of its stacks.
    pub(crate) parts: Parts,
    rep_bytes: u64,
    rep: Option<usize>,
}

impl Group {
    /// The traceback this group's row shows (rendered on demand: see the type's doc).
    pub(crate) fn traceback(
        &self,
        snap: &Snapshot,
        group_by: GroupBy,
        symbols: &Symbols,
    ) -> Traceback {
        render(snap, self.rep, group_by, symbols)
    }
}

/// Symbolized frames of one stack, own frames trimmed and frame limit applied.
fn trace<'a>(snap: &Snapshot, stack: &StackTotals, symbols: &'a Symbols) -> Vec<&'a Frame> {
    let mut out = Vec::new();
    trace_into(snap, stack, symbols, &mut out);
    out
}

/// [`trace`] into a reused buffer (cleared first).
fn trace_into<'a>(
    snap: &Snapshot,
    stack: &StackTotals,
    symbols: &'a Symbols,
    out: &mut Vec<&'a Frame>,
) {
    out.clear();
    let mut started = false;
    let mut kept = 0u32;
    for addr in snap.raw_frames(stack) {
        let Some(frames) = symbols.get(addr) else {
            continue;
        };
        let mut any = false;
        for f in frames.iter() {
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
}

/// How far a search for a stack's site has got: the same walk as [`trace_into`], stopped at
/// the site, and resumable where an address is not resolved yet.
#[derive(Default)]
struct SiteWalk {
    /// Next raw frame to look at.
    pos: usize,
    /// Physical frames kept so far (counted against the frame limit).
    kept: u32,
    /// Past the tracker's own frames.
    started: bool,
    /// The first frame kept (address and index in its frames): the site when every
    /// kept frame is plumbing.
    first: Option<(u64, usize)>,
    /// The first frame kept that is not plumbing: the site when no frame is the
    /// application's.
    innermost: Option<(u64, usize)>,
}

enum SiteStep<'a> {
    /// The walk needs this address resolved to go on.
    Need(u64),
    /// The site, or `None` when the walk kept no frame.
    Done(Option<&'a Frame>),
}

fn site_step<'a>(
    snap: &Snapshot,
    stack: &StackTotals,
    symbols: &'a Symbols,
    pick: Pick,
    walk: &mut SiteWalk,
) -> SiteStep<'a> {
    let raw = snap.raw_frames(stack);
    while walk.pos < raw.len() && walk.kept < snap.frame_limit.max(1) {
        let addr = raw[walk.pos];
        let Some(frames) = symbols.get(&addr) else {
            return SiteStep::Need(addr);
        };
        walk.pos += 1;
        let mut any = false;
        for (i, f) in frames.iter().enumerate() {
            if !walk.started && f.is_tracker_internal() {
                continue;
            }
            walk.started = true;
            any = true;
            match pick {
                Pick::Application if !f.library => return SiteStep::Done(Some(f)),
                Pick::Innermost if !f.is_plumbing() => return SiteStep::Done(Some(f)),
                _ => {}
            }
            if walk.innermost.is_none() && !f.is_plumbing() {
                walk.innermost = Some((addr, i));
            }
            walk.first.get_or_insert((addr, i));
        }
        if any {
            walk.kept += 1;
        }
    }
    let fallback = walk.innermost.or(walk.first);
    SiteStep::Done(fallback.and_then(|(addr, i)| symbols.get(&addr)?.get(i)))
}

/// A stack's site as `pick` chooses it (see [`GroupBy`]) from its [`trace`]; from
/// resolved `symbols` (an address missing there is skipped, as [`trace_into`] skips it).
/// The one definition of a site: grouping keys by it and rows show their traceback from
/// it.
fn site_frame<'a>(
    snap: &Snapshot,
    stack: &StackTotals,
    symbols: &'a Symbols,
    pick: Pick,
) -> Option<&'a Frame> {
    let mut walk = SiteWalk::default();
    loop {
        match site_step(snap, stack, symbols, pick, &mut walk) {
            SiteStep::Need(_) => walk.pos += 1,
            SiteStep::Done(site) => return site,
        }
    }
}

/// Resolves into `symbols` every address that grouping `snaps` by `group_by` reads: all
/// of them for whole tracebacks; else each stack's frames down to its site, in rounds
/// (each round resolves the next unresolved address of every stack still searching).
fn resolve_for_groups(
    snaps: &[&Snapshot],
    group_by: GroupBy,
    session: &mut Symbolizer,
    symbols: &mut Symbols,
) {
    if group_by == GroupBy::Traceback {
        session.resolve(distinct_addrs(snaps.iter().copied()), symbols);
        return;
    }
    let mut searching: Vec<(&Snapshot, &StackTotals, SiteWalk)> = snaps
        .iter()
        .flat_map(|snap| snap.stacks.iter().map(move |stack| (*snap, stack)))
        .filter(|(_, stack)| !stack.overflow)
        .map(|(snap, stack)| (snap, stack, SiteWalk::default()))
        .collect();
    let mut need = Vec::new();
    let pick = Pick::of(group_by);
    while !searching.is_empty() {
        need.clear();
        searching.retain_mut(|(snap, stack, walk)| {
            match site_step(snap, stack, symbols, pick, walk) {
                SiteStep::Need(addr) => {
                    need.push(addr);
                    true
                }
                SiteStep::Done(_) => false,
            }
        });
        need.sort_unstable();
        need.dedup();
        session.resolve(need.iter().copied(), symbols);
    }
}

/// Resolves into `symbols` the whole stack `index` of `snap` (a row's traceback).
fn resolve_stack(
    snap: &Snapshot,
    index: Option<usize>,
    session: &mut Symbolizer,
    symbols: &mut Symbols,
) {
    if let Some(stack) = index.and_then(|i| snap.stacks.get(i)) {
        session.resolve(snap.raw_frames(stack).iter().copied(), symbols);
    }
}

/// The traceback a row shows for stack `index` (see [`GroupBy`]).
fn render(
    snap: &Snapshot,
    index: Option<usize>,
    group_by: GroupBy,
    symbols: &Symbols,
) -> Traceback {
    let Some(stack) = index.map(|i| &snap.stacks[i]) else {
        return Traceback::empty();
    };
    if stack.overflow {
        return Traceback::placeholder(OVERFLOW_FRAME, OVERFLOW_FUNCTION);
    }
    let frames = trace(snap, stack, symbols);
    if frames.is_empty() {
        return Traceback::placeholder(NO_FRAMES, NO_FRAMES_FUNCTION);
    }
    if group_by == GroupBy::Traceback {
        return Traceback::of(&[], &frames);
    }
    let from = site_frame(snap, stack, symbols, Pick::of(group_by))
        .and_then(|site| frames.iter().position(|f| std::ptr::eq(*f, site)))
        .unwrap_or(0);
    // The library frames above an application site, from the innermost one (the
    // allocation plumbing above that is trimmed, as everywhere).
    let innermost = frames.iter().position(|f| !f.is_plumbing()).unwrap_or(0);
    let inner = if innermost < from {
        &frames[innermost..from]
    } else {
        &[]
    };
    Traceback::of(inner, &frames[from..])
}

pub(crate) fn groups(
    snap: &Snapshot,
    group_by: GroupBy,
    symbols: &Symbols,
    old: Option<&Snapshot>,
) -> HashMap<String, Group> {
    let mut groups: HashMap<String, Group> = HashMap::new();
    // The old snapshot's stacks by id, when it is of the same session (ids are the
    // session's; frames are compared too, as a collection may give an id to another
    // stack).
    let old = old.filter(|o| snap.follows(o));
    let old_stacks: HashMap<u16, &StackTotals> = old
        .map(|o| o.stacks.iter().map(|s| (s.id, s)).collect())
        .unwrap_or_default();
    // Site, function and file keys depend on the site frame only: render each distinct
    // frame once, not once per stack (keyed by the frame's place in `symbols`).
    let mut site_keys: HashMap<*const Frame, String> = HashMap::new();
    let mut frames = Vec::new();
    for (index, stack) in snap.stacks.iter().enumerate() {
        let joined: String;
        let key: &str = if stack.overflow {
            match group_by {
                GroupBy::Function => OVERFLOW_FUNCTION,
                GroupBy::File => "unknown",
                GroupBy::Site | GroupBy::Traceback | GroupBy::Innermost => OVERFLOW_FRAME,
            }
        } else {
            if group_by == GroupBy::Traceback {
                trace_into(snap, stack, symbols, &mut frames);
                if frames.is_empty() {
                    NO_FRAMES
                } else {
                    joined = frames
                        .iter()
                        .map(|f| f.render())
                        .collect::<Vec<_>>()
                        .join("\n");
                    &joined
                }
            } else {
                match site_frame(snap, stack, symbols, Pick::of(group_by)) {
                    None => match group_by {
                        GroupBy::Function => NO_FRAMES_FUNCTION,
                        GroupBy::File => "unknown",
                        GroupBy::Site | GroupBy::Traceback | GroupBy::Innermost => NO_FRAMES,
                    },
                    Some(site) => {
                        site_keys
                            .entry(site as *const Frame)
                            .or_insert_with(|| match group_by {
                                GroupBy::Function => site.function_key(),
                                GroupBy::File => site.file_key(),
                                GroupBy::Site | GroupBy::Traceback | GroupBy::Innermost => {
                                    site.render()
                                }
                            })
                    }
                }
            }
        };
        if !groups.contains_key(key) {
            groups.insert(
                key.to_owned(),
                Group {
                    bytes: 0,
                    count: 0,
                    parts: Parts::default(),
                    rep_bytes: 0,
                    rep: None,
                },
            );
        }
        let group = groups.get_mut(key).expect("inserted above");
        group.bytes = group.bytes.wrapping_add(stack.bytes);
        group.count = group.count.wrapping_add(stack.count);
        let against = old.map(|o| {
            let same = old_stacks
                .get(&stack.id)
                .copied()
                .filter(|s| o.raw_frames(s) == snap.raw_frames(stack));
            (o, same)
        });
        group.parts.add(&Parts::of(snap, stack, against));
        if group.rep.is_none() || stack.bytes > group.rep_bytes {
            group.rep_bytes = stack.bytes;
            group.rep = Some(index);
        }
    }
    groups
}

/// Every distinct address of `snaps`, sorted.
fn distinct_addrs<'a>(snaps: impl IntoIterator<Item = &'a Snapshot>) -> Vec<u64> {
    let mut addrs: Vec<u64> = snaps
        .into_iter()
        .flat_map(|s| s.frames.iter().copied())
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// Every address of `snaps` resolved (for views that show every stack whole).
pub(crate) fn symbols_of<'a>(snaps: impl IntoIterator<Item = &'a Snapshot>) -> Symbols {
    resolve_all(distinct_addrs(snaps))
}

fn statistics(snap: &Snapshot, group_by: GroupBy, top_n: usize) -> Vec<Statistic> {
    untracked(|| {
        let mut session = Symbolizer::new();
        let mut symbols = Symbols::new();
        resolve_for_groups(&[snap], group_by, &mut session, &mut symbols);
        let mut rows: Vec<(String, Group)> =
            groups(snap, group_by, &symbols, None).into_iter().collect();
        rows.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(top_n);
        for (_, g) in &rows {
            resolve_stack(snap, g.rep, &mut session, &mut symbols);
        }
        // The debug info is freed here, before rendering.
        drop(session);
        rows.into_iter()
            .map(|(_, g)| {
                let traceback = render(snap, g.rep, group_by, &symbols);
                Statistic {
                    traceback: traceback.lines,
                    frames: traceback.frames,
                    inner_frames: traceback.inner_frames,
                    size_bytes: g.bytes,
                    size_diff_bytes: 0,
                    count: round_count(g.count),
                    count_diff: 0,
                    evidence: g.parts.alone(),
                }
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

fn compare(
    new: &Snapshot,
    old: &Snapshot,
    group_by: GroupBy,
    order: Order,
    top_n: usize,
) -> Vec<Statistic> {
    untracked(|| {
        let mut session = Symbolizer::new();
        let mut symbols = Symbols::new();
        resolve_for_groups(&[new, old], group_by, &mut session, &mut symbols);
        let matched = new.follows(old);
        let mut new_groups = groups(new, group_by, &symbols, Some(old));
        let old_groups = groups(old, group_by, &symbols, None);
        // Each row remembers which snapshot's stack represents it; tracebacks are
        // rendered after truncation.
        let mut rows: Vec<(String, Statistic, &Snapshot, Option<usize>)> = Vec::new();
        let row = |size: u64, old_size: u64, count: u64, old_count: u64, evidence| Statistic {
            traceback: Vec::new(),
            frames: Vec::new(),
            inner_frames: Vec::new(),
            size_bytes: size,
            size_diff_bytes: diff(size, old_size),
            count,
            count_diff: diff(count, old_count),
            evidence,
        };
        for (key, old_group) in old_groups {
            let old_count = round_count(old_group.count);
            let (stat, source, rep) = match new_groups.remove(&key) {
                Some(g) => {
                    let d = diff(g.bytes, old_group.bytes);
                    let evidence = g.parts.against(&old_group.parts, matched, d);
                    let stat = row(
                        g.bytes,
                        old_group.bytes,
                        round_count(g.count),
                        old_count,
                        evidence,
                    );
                    (stat, new, g.rep)
                }
                None => {
                    let d = diff(0, old_group.bytes);
                    let evidence = Parts::default().against(&old_group.parts, matched, d);
                    (
                        row(0, old_group.bytes, 0, old_count, evidence),
                        old,
                        old_group.rep,
                    )
                }
            };
            rows.push((key, stat, source, rep));
        }
        for (key, g) in new_groups {
            let d = diff(g.bytes, 0);
            let evidence = g.parts.against(&Parts::default(), matched, d);
            let stat = row(g.bytes, 0, round_count(g.count), 0, evidence);
            rows.push((key, stat, new, g.rep));
        }
        if order != Order::Change {
            rows.retain(|r| r.1.size_diff_bytes > 0);
        }
        rows.sort_by(|a, b| {
            let by_change = |s: &Statistic| {
                (
                    Reverse(s.size_diff_bytes.unsigned_abs()),
                    Reverse(s.size_bytes),
                )
            };
            let score = |s: &Statistic| s.evidence.retention.map(|r| r.leak_score);
            let first = match order {
                Order::Change => by_change(&a.1).cmp(&by_change(&b.1)),
                Order::Growth => b.1.size_diff_bytes.cmp(&a.1.size_diff_bytes),
                Order::Suspects => match (score(&a.1), score(&b.1)) {
                    (Some(x), Some(y)) => y.total_cmp(&x),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                }
                .then_with(|| b.1.size_diff_bytes.cmp(&a.1.size_diff_bytes)),
            };
            first.then_with(|| a.0.cmp(&b.0))
        });
        rows.truncate(top_n);
        for (_, _, source, rep) in &rows {
            resolve_stack(source, *rep, &mut session, &mut symbols);
        }
        drop(session);
        rows.into_iter()
            .map(|(_, mut s, source, rep)| {
                let traceback = render(source, rep, group_by, &symbols);
                s.traceback = traceback.lines;
                s.frames = traceback.frames;
                s.inner_frames = traceback.inner_frames;
                s
            })
            .collect()
    })
}
