//! Turning raw return addresses into "function (file:line)" frames.
//!
//! Runs only from `statistics`/`compare_to` (never in the allocation path): each distinct
//! address is resolved once (at `addr − 1`, inside the call instruction), inline frames
//! expanded innermost first, then `backtrace::clear_symbol_cache()` drops the DWARF
//! caches, which otherwise keep tens of MiB for the life of the process. The resolved
//! frames themselves are memoised (bounded), so repeated snapshots skip the debug info. Everything runs
//! with recording suppressed, so symbolization's own allocations never become sites.
//!
//! Also decides which frames are the tracker's own (trimmed from tracebacks) and which
//! are allocation plumbing (std/alloc/core/hashbrown: skipped when picking a site).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use super::{allocator, filter, lock, recorder, sampler, unwind};

/// Source files of the allocation path. Frames located in them are the tracker's own
/// whatever their names: with `debug = "line-tables-only"` (our release profile) debug
/// info holds short names like `on_alloc` without the module path, so names alone cannot
/// tell. `file!()` matches the debug info's path (which may be absolute) as a suffix.
const OWN_SOURCES: [&str; 6] = [
    allocator::SOURCE,
    recorder::SOURCE,
    unwind::SOURCE,
    lock::SOURCE,
    sampler::SOURCE,
    filter::SOURCE,
];

/// One (possibly inlined) frame.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub addr: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Frame {
    /// "function (file:line)", or "0x… (unknown)" when nothing resolved.
    pub(crate) fn render(&self) -> String {
        let name = match &self.function {
            Some(f) => f.clone(),
            None => format!("{:#x}", self.addr),
        };
        match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{name} ({file}:{line})"),
            (Some(file), None) => format!("{name} ({file})"),
            (None, _) => format!("{name} (unknown)"),
        }
    }

    /// The function name, or the address when unresolved.
    pub(crate) fn function_key(&self) -> String {
        match &self.function {
            Some(f) => f.clone(),
            None => format!("{:#x}", self.addr),
        }
    }

    /// The file, or "unknown".
    pub(crate) fn file_key(&self) -> String {
        self.file.clone().unwrap_or_else(|| "unknown".to_owned())
    }

    /// The tracker's own frames, trimmed from the top of every traceback.
    pub(crate) fn is_tracker_internal(&self) -> bool {
        if let Some(file) = self.file.as_deref()
            && OWN_SOURCES.iter().any(|own| file.ends_with(own))
        {
            return true;
        }
        let Some(f) = self.function.as_deref() else {
            return false;
        };
        const PREFIXES: [&str; 6] = [
            "heapwatch::memory::",
            "<heapwatch::memory::",
            "__rustc::",
            "__rust_",
            "__rdl_",
            "__rg_",
        ];
        PREFIXES.iter().any(|p| f.starts_with(p))
            || f.starts_with("<std::alloc::System as core::alloc::global::GlobalAlloc>")
            || f.starts_with("std::alloc::System")
    }

    /// Allocation plumbing: the standard library, hashbrown, allocator shims. The site of
    /// a stack is its first frame that is not plumbing.
    pub(crate) fn is_plumbing(&self) -> bool {
        if self.is_tracker_internal() {
            return true;
        }
        if let Some(f) = self.function.as_deref() {
            // Full paths (debug info with linkage names). Release builds with line tables
            // only give short names; the file test below covers those.
            const PREFIXES: [&str; 10] = [
                "alloc::",
                "core::",
                "std::",
                "<alloc::",
                "<core::",
                "<std::",
                "hashbrown::",
                "<hashbrown::",
                "__rust",
                "__rdl",
            ];
            if PREFIXES.iter().any(|p| f.starts_with(p)) {
                return true;
            }
        }
        if let Some(file) = self.file.as_deref() {
            // Standard library sources (as shipped: /rustc/<hash>/library/…) and the
            // hashbrown crate behind std's HashMap.
            return file.starts_with("/rustc/")
                || file.contains("/library/alloc/src/")
                || file.contains("/library/core/src/")
                || file.contains("/library/std/src/")
                || file.contains("/hashbrown-");
        }
        false
    }
}

/// Resolved frames kept between snapshots, so a snapshot whose addresses were all seen
/// before needs no debug info at all (loading it costs tens of milliseconds and tens of
/// MiB, and is dropped again after every resolve). The memo holds only the rendered
/// frames of addresses that appeared in a stack, at most [`MEMO_MAX_ADDRS`] of them (a few
/// MiB at worst): past that it is cleared and refilled. `stop()` clears it too.
static MEMO: Mutex<Option<HashMap<u64, Vec<Frame>>>> = Mutex::new(None);

/// The memo's bound: 16,384 stacks of up to 72 frames share most of their addresses, so
/// real programs stay far below this.
pub(crate) const MEMO_MAX_ADDRS: usize = 65_536;

/// Forgets every memoised frame (with recording suppressed, so the free is not tracked
/// as growth).
pub(crate) fn clear_memo() {
    super::allocator::untracked(|| {
        let old = MEMO.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
    });
}

/// Resolves every distinct address once: from the memo when it was seen before, else from
/// the debug info, whose caches are freed afterwards.
pub(crate) fn resolve_all(addrs: impl IntoIterator<Item = u64>) -> HashMap<u64, Vec<Frame>> {
    super::allocator::untracked(|| {
        let mut memo_guard = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        let memo = memo_guard.get_or_insert_with(HashMap::new);
        let mut out: HashMap<u64, Vec<Frame>> = HashMap::new();
        let mut loaded = false;
        for addr in addrs {
            if out.contains_key(&addr) {
                continue;
            }
            if let Some(frames) = memo.get(&addr) {
                out.insert(addr, frames.clone());
                continue;
            }
            loaded = true;
            let mut frames = Vec::new();
            // A return address points after the call; addr - 1 is inside it, so the
            // line (and inline frames) are the call's.
            let pc = addr.saturating_sub(1) as usize as *mut c_void;
            backtrace::resolve(pc, |sym| {
                frames.push(Frame {
                    addr,
                    function: sym.name().map(|n| format!("{n:#}")),
                    file: sym.filename().map(|p| p.display().to_string()),
                    line: sym.lineno(),
                });
            });
            if frames.is_empty() {
                frames.push(Frame {
                    addr,
                    function: None,
                    file: None,
                    line: None,
                });
            }
            if memo.len() >= MEMO_MAX_ADDRS {
                memo.clear();
            }
            memo.insert(addr, frames.clone());
            out.insert(addr, frames);
        }
        if loaded {
            backtrace::clear_symbol_cache();
        }
        out
    })
}
