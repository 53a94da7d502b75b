//! Turning raw return addresses into [`Frame`]s ("function (file:line)").
//!
//! Runs only from `statistics`/`compare_to` (never in the allocation path): each distinct
//! address is resolved once (at `addr − 1`, inside the call instruction), inline frames
//! expanded innermost first, then `backtrace::clear_symbol_cache()` drops the DWARF
//! caches, which otherwise keep tens of MiB for the life of the process. The resolved
//! frames themselves are memoised (bounded), so repeated snapshots skip the debug info.
//! Everything runs with recording suppressed, so symbolization's own allocations never
//! become sites.
//!
//! Also decides which frames are the tracker's own (trimmed from tracebacks: its function
//! names, or a file of `sources::OWN_FILES`) and which are allocation plumbing
//! (std/alloc/core/hashbrown: skipped when picking a site). Imports only `guard` and
//! `sources` (and its own `debuginfo`).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use crate::guard::untracked;
use crate::sources::is_own_source;

mod debuginfo;

/// One resolved (possibly inlined) function at a return address: what tracebacks,
/// statistic rows and exports show.
///
/// Its [`Display`](std::fmt::Display) form is the traceback line "function (file:line)",
/// "function (file)" without a line, "function (unknown)" without a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled name without the hash (a shared library's frame: `symbol+0xoffset`); for
    /// an address that did not resolve, the return address itself, `0x…`.
    pub function: String,
    /// Source file as the debug info names it (a shared library's path for its frames).
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{} ({file}:{line})", self.function),
            (Some(file), None) => write!(f, "{} ({file})", self.function),
            (None, _) => write!(f, "{} (unknown)", self.function),
        }
    }
}

impl Frame {
    /// A frame the debug-info reader resolved, its name demangled.
    fn from_raw(raw: debuginfo::RawFrame) -> Frame {
        Frame {
            function: format!("{:#}", backtrace::SymbolName::new(&raw.name)),
            file: raw.file,
            line: raw.line,
        }
    }

    /// What an address shows when nothing resolved: the address, no file.
    pub(crate) fn unresolved(addr: u64) -> Frame {
        Frame {
            function: format!("{addr:#x}"),
            file: None,
            line: None,
        }
    }

    /// "function (file:line)" (the [`Display`](std::fmt::Display) form).
    pub(crate) fn render(&self) -> String {
        self.to_string()
    }

    /// The function name (the address when unresolved).
    pub(crate) fn function_key(&self) -> String {
        self.function.clone()
    }

    /// The file, or "unknown".
    pub(crate) fn file_key(&self) -> String {
        self.file.clone().unwrap_or_else(|| "unknown".to_owned())
    }

    /// The tracker's own frames, trimmed from the top of every traceback.
    pub(crate) fn is_tracker_internal(&self) -> bool {
        if self.file.as_deref().is_some_and(is_own_source) {
            return true;
        }
        let f = self.function.as_str();
        const PREFIXES: [&str; 6] = [
            "heapwatch_tracker::",
            "<heapwatch_tracker::",
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
        {
            let f = self.function.as_str();
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

/// The frames at one address, innermost (inlined callee) first; shared between the memo
/// and a symbolization's map, so neither copies the strings.
pub(crate) type Frames = Arc<[Frame]>;

/// Resolved frames kept between snapshots, so a snapshot whose addresses were all seen
/// before needs no debug info at all. The memo holds only the frames of addresses a
/// report asked for, at most [`MEMO_MAX_ADDRS`] of them (a few MiB at worst): past that
/// it is cleared and refilled. `stop()` clears it too.
static MEMO: Mutex<Option<HashMap<u64, Frames>>> = Mutex::new(None);

/// The memo's bound: 16,384 stacks of up to 72 frames share most of their addresses, so
/// real programs stay far below this.
pub(crate) const MEMO_MAX_ADDRS: usize = 65_536;

/// Forgets every memoised frame (with recording suppressed, so the free is not tracked
/// as growth).
pub(crate) fn clear_memo() {
    untracked(|| {
        let old = MEMO.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
    });
}

/// Resolves every distinct address once (see [`Session`]).
pub(crate) fn resolve_all(addrs: impl IntoIterator<Item = u64>) -> HashMap<u64, Frames> {
    let mut out = HashMap::new();
    Session::new().resolve(addrs, &mut out);
    out
}

/// One symbolization: resolves addresses from the memo, else from the debug info, and
/// holds whatever debug info it read until dropped — so a report can resolve in several
/// rounds (the sites first, then the tracebacks of the rows it returns) and read each
/// compilation unit once. Dropping it frees all of that, and `backtrace`'s caches if it
/// was asked: nothing of the debug info outlives the report.
///
/// The debug info is read by [`debuginfo`] (only the units the addresses fall in);
/// addresses it declines (objects without their own DWARF, like a system library whose
/// debug info is a separate file) go to `backtrace`, the reference it agrees with.
pub(crate) struct Session {
    reader: Option<debuginfo::Reader>,
    used_backtrace: bool,
}

impl Session {
    pub(crate) fn new() -> Self {
        Session {
            reader: None,
            used_backtrace: false,
        }
    }

    /// Resolves each address of `addrs` not already in `out` into `out`.
    pub(crate) fn resolve(
        &mut self,
        addrs: impl IntoIterator<Item = u64>,
        out: &mut HashMap<u64, Frames>,
    ) {
        untracked(|| {
            let mut memo_guard = MEMO.lock().unwrap_or_else(|e| e.into_inner());
            let memo = memo_guard.get_or_insert_with(HashMap::new);
            for addr in addrs {
                if out.contains_key(&addr) {
                    continue;
                }
                if let Some(frames) = memo.get(&addr) {
                    out.insert(addr, frames.clone());
                    continue;
                }
                let frames = self.resolve_cold(addr);
                if memo.len() >= MEMO_MAX_ADDRS {
                    memo.clear();
                }
                memo.insert(addr, frames.clone());
                out.insert(addr, frames);
            }
        });
    }

    /// Resolves `addr` from the debug info.
    fn resolve_cold(&mut self, addr: u64) -> Frames {
        // A return address points after the call; addr - 1 is inside it, so the line
        // (and inline frames) are the call's.
        let pc = addr.saturating_sub(1);
        let reader = self.reader.get_or_insert_with(debuginfo::Reader::new);
        let frames = match reader.frames(pc) {
            Ok(raw) => raw.into_iter().map(Frame::from_raw).collect(),
            // A shared library (libc, the loader): named from its dynamic symbols only.
            // Its debug info, where installed, is a separate compressed file: libc's alone
            // cost ~115 ms and ~50 MiB per cold report here, for the two or three frames
            // at the bottom of every thread.
            Err(_) if reader.in_main_executable(pc) == Some(false) => {
                vec![library_frame(addr, pc)]
            }
            Err(_) => {
                self.used_backtrace = true;
                resolve_with_backtrace(addr)
            }
        };
        frames.into()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        untracked(|| {
            self.reader = None;
            if self.used_backtrace {
                backtrace::clear_symbol_cache();
            }
        });
    }
}

/// A frame in a shared library: "symbol+0xoffset" from the nearest dynamic symbol
/// below `pc` (`dladdr`), in the library's file, without a line.
#[allow(unsafe_code)]
fn library_frame(addr: u64, pc: u64) -> Frame {
    // SAFETY: dladdr only reads the loader's tables; `info` is plain storage it fills on
    // success. The strings it points at belong to loaded objects, which stay mapped
    // while they are read here (they are copied at once).
    let (file, function) = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(pc as usize as *const c_void, &mut info) == 0 {
            (None, None)
        } else {
            let text = |p: *const libc::c_char| {
                (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
            };
            let function = text(info.dli_sname).map(|name| {
                let offset = addr.wrapping_sub(info.dli_saddr as usize as u64);
                format!("{name}+{offset:#x}")
            });
            (text(info.dli_fname), function)
        }
    };
    Frame {
        function: function.unwrap_or_else(|| format!("{addr:#x}")),
        file,
        line: None,
    }
}

/// The frames at return address `addr` as `backtrace` resolves them (its caches stay
/// until `backtrace::clear_symbol_cache()`).
fn resolve_with_backtrace(addr: u64) -> Vec<Frame> {
    let mut frames = Vec::new();
    // `backtrace::resolve` takes a return address and looks up the byte before it
    // itself: the same `addr - 1` the debug-info path looks up.
    backtrace::resolve(addr as usize as *mut c_void, |sym| {
        frames.push(Frame {
            function: sym
                .name()
                .map_or_else(|| format!("{addr:#x}"), |n| format!("{n:#}")),
            file: sym.filename().map(|p| p.display().to_string()),
            line: sym.lineno(),
        });
    });
    if frames.is_empty() {
        frames.push(Frame::unresolved(addr));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_library_frames_are_named_from_dynamic_symbols_without_debug_info() {
        // A return address 5 bytes into libc's getpid (a dynamic symbol of libc.so.6).
        let addr = libc::getpid as *const () as usize as u64 + 5;
        let resolved = resolve_all([addr]);
        let frames = &resolved[&addr];
        assert_eq!(frames.len(), 1, "{frames:?}");
        let f = &frames[0];
        assert!(f.function.ends_with("getpid+0x5"), "{f:?}");
        assert!(
            f.file.as_deref().is_some_and(|p| p.contains("libc")),
            "{f:?}"
        );
        assert_eq!(f.line, None);
    }

    /// What a test compares: everything a frame shows.
    fn shown(frames: &[Frame]) -> Vec<(String, Option<String>, Option<u32>)> {
        frames
            .iter()
            .map(|f| (f.function.clone(), f.file.clone(), f.line))
            .collect()
    }

    /// Return addresses of a real call chain (through std's sort and a closure), plus
    /// addresses inside a few functions, one every few bytes: those land on inlined code
    /// at every depth.
    fn sample_addresses() -> Vec<u64> {
        let mut addrs = Vec::new();
        let mut v: Vec<u32> = (0..64).rev().collect();
        v.sort_by(|a, b| {
            if addrs.is_empty() {
                backtrace::trace(|f| {
                    addrs.push(f.ip() as u64);
                    true
                });
            }
            a.cmp(b)
        });
        let starts = [
            Frame::render as fn(&Frame) -> String as usize as u64,
            Frame::is_plumbing as fn(&Frame) -> bool as usize as u64,
            resolve_with_backtrace as fn(u64) -> Vec<Frame> as usize as u64,
            debuginfo::Reader::new as fn() -> debuginfo::Reader as usize as u64,
            sample_addresses as fn() -> Vec<u64> as usize as u64,
        ];
        for start in starts {
            addrs.extend((1..600).step_by(7).map(|k| start + k));
        }
        // The outermost frame of a walk may report address 0.
        addrs.retain(|&a| a > 1);
        addrs
    }

    #[test]
    fn cold_reader_matches_backtrace_frame_for_frame() {
        let addrs = sample_addresses();
        let mut reader = debuginfo::Reader::new();
        let mut answered = 0;
        for &addr in &addrs {
            let expected = resolve_with_backtrace(addr);
            let Ok(raw) = reader.frames(addr - 1) else {
                continue;
            };
            answered += 1;
            let got: Vec<Frame> = raw.into_iter().map(Frame::from_raw).collect();
            assert_eq!(shown(&got), shown(&expected), "at {addr:#x}");
        }
        backtrace::clear_symbol_cache();
        // The test binary carries its own DWARF: nearly everything is answered here, not
        // left to `backtrace` (the call chain's bottom frames are in libc).
        assert!(
            answered * 10 >= addrs.len() * 9,
            "answered {answered} of {}",
            addrs.len()
        );
        // Inline frames were among them.
        assert!(addrs.iter().any(|&a| resolve_with_backtrace(a).len() > 1));
        backtrace::clear_symbol_cache();
    }

    #[test]
    fn memoised_frames_equal_cold_frames() {
        clear_memo();
        let addrs = sample_addresses();
        let cold = resolve_all(addrs.iter().copied());
        let warm = resolve_all(addrs.iter().copied());
        for addr in &addrs {
            assert_eq!(shown(&cold[addr]), shown(&warm[addr]));
            assert!(
                Arc::ptr_eq(&cold[addr], &warm[addr]),
                "warm came from the memo"
            );
        }
        clear_memo();
    }
}
