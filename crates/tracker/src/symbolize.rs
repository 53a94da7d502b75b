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
//! `sources`.

use std::collections::HashMap;
use std::ffi::c_void;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use crate::guard::untracked;
use crate::sources::is_own_source;

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

/// Resolves every distinct address once (see [`Symbolizer`]).
pub(crate) fn resolve_all(addrs: impl IntoIterator<Item = u64>) -> HashMap<u64, Frames> {
    let mut out = HashMap::new();
    Symbolizer::new().resolve(addrs, &mut out);
    out
}

/// One symbolization: resolves addresses from the memo, else from the debug info, and
/// holds whatever it read until dropped — so a report can resolve in several rounds (the
/// sites first, then the tracebacks of the rows it returns) and read the debug info once.
/// Dropping it frees all of that (`backtrace`'s caches included): nothing of the debug
/// info outlives the report.
///
/// Addresses in the main executable are resolved by `backtrace`, i.e. `addr2line`'s
/// `Context` over the memory-mapped executable (zlib-compressed debug sections included);
/// addresses in shared libraries are named from their dynamic symbols (`dladdr`), without
/// reading their debug info. (A hand-written unit-by-unit DWARF reader used to sit in
/// front of `backtrace`; measured against it, it was not faster: see docs/ARCHITECTURE.md.)
pub(crate) struct Symbolizer {
    /// The process's file mappings, read on the first cold address.
    maps: Option<Maps>,
    used_backtrace: bool,
}

impl Symbolizer {
    pub(crate) fn new() -> Self {
        Symbolizer {
            maps: None,
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
        let maps = self.maps.get_or_insert_with(Maps::read);
        let frames = if maps.in_main_executable(pc) == Some(false) {
            // A shared library (libc, the loader): named from its dynamic symbols only.
            // Its debug info, where installed, is a separate compressed file: libc's alone
            // cost ~115 ms and ~50 MiB per cold report here, for the two or three frames
            // at the bottom of every thread.
            vec![library_frame(addr, pc)]
        } else {
            self.used_backtrace = true;
            resolve_with_backtrace(addr)
        };
        frames.into()
    }
}

impl Drop for Symbolizer {
    fn drop(&mut self) {
        untracked(|| {
            self.maps = None;
            if self.used_backtrace {
                backtrace::clear_symbol_cache();
            }
        });
    }
}

/// The process's file-backed mappings (from /proc/self/maps) and which file is the main
/// executable: enough to tell an executable frame from a shared library's.
struct Maps {
    /// (start, end, inode) of each mapping with an absolute path.
    mappings: Vec<(u64, u64, u64)>,
    /// The inode of /proc/self/exe.
    exe_inode: Option<u64>,
}

impl Maps {
    fn read() -> Maps {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        Maps {
            mappings: maps.lines().filter_map(parse_mapping).collect(),
            exe_inode: std::fs::metadata("/proc/self/exe").ok().map(|m| m.ino()),
        }
    }

    /// Whether `pc` lies in the main executable, as opposed to a shared library; `None`
    /// when no file-backed mapping holds it (then `backtrace` is asked).
    fn in_main_executable(&self, pc: u64) -> Option<bool> {
        let &(_, _, inode) = self
            .mappings
            .iter()
            .find(|&&(start, end, _)| start <= pc && pc < end)?;
        Some(self.exe_inode? == inode)
    }
}

/// "start-end perms offset dev inode path" → (start, end, inode), for lines with an
/// absolute path.
fn parse_mapping(line: &str) -> Option<(u64, u64, u64)> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next()?;
    if !path.starts_with('/') {
        return None;
    }
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
        inode.parse().ok()?,
    ))
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
            parse_mapping as fn(&str) -> Option<(u64, u64, u64)> as usize as u64,
            sample_addresses as fn() -> Vec<u64> as usize as u64,
        ];
        for start in starts {
            addrs.extend((1..600).step_by(7).map(|k| start + k));
        }
        // The outermost frame of a walk may report address 0.
        addrs.retain(|&a| a > 1);
        addrs
    }

    /// Set in the copy of this test binary that
    /// `zlib_compressed_debug_sections_resolve_to_file_and_line` runs.
    const IN_COMPRESSED_COPY: &str = "HEAPWATCH_TEST_IN_COMPRESSED_COPY";

    /// A function of this file, and the frames of an address inside it.
    #[inline(never)]
    fn own_frames() -> Vec<Frame> {
        let addr = own_frames as fn() -> Vec<Frame> as usize as u64 + 16;
        let resolved = resolve_all([addr]);
        resolved[&addr].to_vec()
    }

    #[test]
    fn zlib_compressed_debug_sections_resolve_to_file_and_line() {
        if std::env::var_os(IN_COMPRESSED_COPY).is_some() {
            // In the copy: this executable's debug sections are compressed.
            let frames = own_frames();
            assert!(
                frames.iter().any(|f| f.function.contains("own_frames")
                    && f.file
                        .as_deref()
                        .is_some_and(|p| p.ends_with("symbolize.rs"))
                    && f.line.is_some()),
                "{frames:?}"
            );
            return;
        }
        // A copy of this test binary with its debug sections compressed, as
        // `-C link-arg=-Wl,--compress-debug-sections=zlib` links them, run on this test.
        let exe = std::fs::read_link("/proc/self/exe").expect("/proc/self/exe");
        let copy = std::env::temp_dir().join(format!("heapwatch-zdebug-{}", std::process::id()));
        let objcopy = std::process::Command::new("objcopy")
            .arg("--compress-debug-sections=zlib")
            .arg(&exe)
            .arg(&copy)
            .status()
            .expect("objcopy (binutils) runs");
        assert!(objcopy.success());
        let sections = std::process::Command::new("readelf")
            .arg("-SW")
            .arg(&copy)
            .output()
            .expect("readelf runs");
        let sections = String::from_utf8_lossy(&sections.stdout).into_owned();
        let info = sections
            .lines()
            .find(|l| l.contains(".debug_info"))
            .expect("a .debug_info section");
        let flags = info.split_whitespace().rev().nth(3).unwrap_or("");
        assert!(flags.contains('C'), "not compressed: {info}");
        let run = std::process::Command::new(&copy)
            .args([
                "--exact",
                "symbolize::tests::zlib_compressed_debug_sections_resolve_to_file_and_line",
                "--test-threads=1",
            ])
            .env(IN_COMPRESSED_COPY, "1")
            .output()
            .expect("the copy runs");
        std::fs::remove_file(&copy).expect("remove the copy");
        let out = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success() && out.contains("1 passed"),
            "{out}{}",
            String::from_utf8_lossy(&run.stderr)
        );
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
