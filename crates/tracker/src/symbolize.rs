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
//! Every frame leaves here readable on its own: a qualified function name (a bare name
//! from line tables only is completed from the symbol table, or for inlined frames from
//! the module path of their file), a short path (`tokio-1.54.1/src/…`,
//! `library/std/src/…`, `src/http/upgrade.rs`) and never a bare address (`libc.so.6+0x2a1f4`
//! for code without symbols). Each is marked `library` or not (see [`Frame::library`]).
//!
//! Also decides which frames are the tracker's own (trimmed from tracebacks: its function
//! names, or a file of `sources::OWN_FILES`) and which are allocation plumbing
//! (std/alloc/core/hashbrown: skipped when picking the innermost site). Imports only
//! `guard` and `sources`.

use std::collections::HashMap;
use std::ffi::c_void;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use crate::guard::untracked;
use crate::sources::{is_own_crate, is_own_source};

/// One resolved (possibly inlined) function at a return address: what tracebacks,
/// statistic rows and exports show.
///
/// Its [`Display`](std::fmt::Display) form is the traceback line "function (file:line)",
/// "function (file)" without a line, "function (unknown)" without a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Demangled, qualified name without the hash (`heapwatch::http::upgrade::handle`).
    /// A shared library's frame is `symbol+0xoffset`; code without any symbol is named by
    /// its object file and the offset in it, `libc.so.6+0x2a1f4` (never a bare address).
    pub function: String,
    /// Source file, shortened: a registry crate's path from its `name-version` directory
    /// (`tokio-1.54.1/src/runtime/task/core.rs`), the standard library's from `library/`,
    /// the application's as the compiler named it (relative to its workspace), a shared
    /// library's file name (`libc.so.6`).
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// Library code: the Rust standard library, a crate from the cargo registry or a git
    /// checkout, the tracker itself, a shared library, or code without a source file
    /// (a dependency built without debug info). Sites are the first frame that is not
    /// (see `GroupBy::Site`); panels collapse these.
    pub library: bool,
    /// In one of the tracker's allocation-path files (decided on the full path, before
    /// it was shortened): trimmed from the top of tracebacks.
    own_file: bool,
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
    /// A frame named by its parts (an application frame unless `library`).
    pub fn new(function: impl Into<String>, file: Option<String>, line: Option<u32>) -> Frame {
        Frame {
            function: function.into(),
            file,
            line,
            library: false,
            own_file: false,
        }
    }

    /// "function (file:line)" (the [`Display`](std::fmt::Display) form).
    pub(crate) fn render(&self) -> String {
        self.to_string()
    }

    /// The function name (`file+0xoffset` for code without a symbol).
    pub(crate) fn function_key(&self) -> String {
        self.function.clone()
    }

    /// The file, or "unknown".
    pub(crate) fn file_key(&self) -> String {
        self.file.clone().unwrap_or_else(|| "unknown".to_owned())
    }

    /// The tracker's own frames, trimmed from the top of every traceback.
    pub(crate) fn is_tracker_internal(&self) -> bool {
        if self.own_file {
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
        if let (true, Some(file)) = (self.library, self.file.as_deref()) {
            // Standard library sources (shortened to `library/…`, see [`short_path`]) and
            // the hashbrown crate behind std's HashMap.
            return file.starts_with("library/") || file.starts_with("hashbrown-");
        }
        false
    }
}

/// Where a source file comes from, by its path as the debug info names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The Rust standard library (`/rustc/<hash>/library/…`, or a rust-src copy).
    Std,
    /// A crate from the cargo registry or a git checkout.
    Dependency,
    /// Anything else: the application's own code (its workspace, path dependencies).
    Application,
}

/// The path a traceback shows for `path`, and where it comes from. Registry crates start
/// at their `name-version` directory (any `CARGO_HOME`: matched on `registry/src/`; the
/// standard library's own dependencies are shipped under `/rust/deps/`), git
/// checkouts at the repository's directory, the standard library at `library/`; the
/// application's paths are made relative to `cwd` (the workspace, under `cargo run` and
/// `cargo test`) when inside it, else start at their last `src/`, `tests/`, `benches/` or
/// `examples/` directory (the debug info joins each path with the directory it was
/// compiled in, e.g. `/build` in an image).
fn short_path(path: &str, cwd: Option<&str>) -> (String, Origin) {
    /// The rest of `path` after `marker` and `skip` more components.
    fn after<'a>(path: &'a str, marker: &str, skip: usize) -> Option<&'a str> {
        let (_, mut rest) = path.split_once(marker)?;
        for _ in 0..skip {
            rest = rest.split_once('/')?.1;
        }
        (!rest.is_empty()).then_some(rest)
    }
    if let Some(rest) = after(path, "/registry/src/", 1) {
        return (rest.to_owned(), Origin::Dependency);
    }
    // The standard library's own dependencies (hashbrown, gimli, …), as shipped.
    if let Some(rest) = path.strip_prefix("/rust/deps/") {
        return (rest.to_owned(), Origin::Dependency);
    }
    if let Some(rest) = after(path, "/git/checkouts/", 0)
        && let Some((repo, tail)) = rest.split_once('/')
        && let Some((_rev, file)) = tail.split_once('/')
    {
        return (format!("{repo}/{file}"), Origin::Dependency);
    }
    if let Some(rest) = after(path, "/rustlib/src/rust/", 0) {
        return (rest.to_owned(), Origin::Std);
    }
    if let Some(rest) = path.strip_prefix("/rustc/")
        && let Some((_hash, file)) = rest.split_once('/')
    {
        return (file.to_owned(), Origin::Std);
    }
    if !path.starts_with('/') {
        return (path.to_owned(), Origin::Application);
    }
    if let Some(rest) = cwd
        .filter(|c| *c != "/")
        .and_then(|c| path.strip_prefix(c))
        .and_then(|rest| rest.strip_prefix('/'))
    {
        return (rest.to_owned(), Origin::Application);
    }
    let cut = ["/src/", "/tests/", "/benches/", "/examples/"]
        .iter()
        .filter_map(|m| path.rfind(m))
        .max();
    match cut {
        Some(i) => (path[i + 1..].to_owned(), Origin::Application),
        None => (path.to_owned(), Origin::Application),
    }
}

/// Whether `name` lacks a module path: `insert`, `new<tokio::…>`, `{closure#0}` (what line
/// tables alone give), as opposed to `a::b`, `<T as U>::f`.
fn is_bare(name: &str) -> bool {
    if name.starts_with('<') {
        return false;
    }
    let head = name.split('<').next().unwrap_or(name);
    !head.contains("::")
}

/// The module path a source file stands for inside its crate: `src/http/upgrade.rs` →
/// `http::upgrade`, `src/lib.rs` → ``, `src/ws/mod.rs` → `ws`; `None` for a file outside
/// a `src/` directory.
fn module_of(short: &str) -> Option<String> {
    let (_, inside) = short
        .rsplit_once("src/")
        .or_else(|| short.strip_prefix("src/").map(|rest| ("", rest)))?;
    let stem = inside.strip_suffix(".rs")?;
    let mut parts: Vec<&str> = stem.split('/').collect();
    if matches!(parts.last(), Some(&("mod" | "lib" | "main"))) {
        parts.pop();
    }
    if parts.first() == Some(&"bin") {
        return None;
    }
    Some(parts.join("::"))
}

/// The directory a source file's crate lives in (everything before its `src/`), so two
/// files of one crate can be told apart from files of another.
fn crate_root(short: &str) -> Option<&str> {
    if short.starts_with("src/") {
        return Some("");
    }
    short.rsplit_once("/src/").map(|(root, _)| root)
}

/// The crate a registry or standard library path belongs to: `tokio-1.54.1/src/…` →
/// `tokio`, `library/alloc/src/…` → `alloc`.
fn crate_of_dependency(short: &str, origin: Origin) -> Option<String> {
    let root = crate_root(short)?;
    match origin {
        Origin::Std => root.strip_prefix("library/").map(str::to_owned),
        Origin::Dependency => {
            let dir = root.rsplit('/').next().unwrap_or(root);
            // `name-1.2.3`: the name is everything before the last `-` followed by a digit.
            let cut = dir
                .char_indices()
                .filter(|&(i, c)| {
                    c == '-' && dir[i + 1..].starts_with(|d: char| d.is_ascii_digit())
                })
                .map(|(i, _)| i)
                .next_back()
                .unwrap_or(dir.len());
            Some(dir[..cut].replace('-', "_"))
        }
        Origin::Application => None,
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

/// Bytes the memo holds on the heap (its table, frames and their strings), roughly: what
/// a coverage report counts as the tracker's own memory.
pub(crate) fn memo_bytes() -> u64 {
    let memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    let Some(memo) = memo.as_ref() else {
        return 0;
    };
    let entry = std::mem::size_of::<(u64, Frames)>() + 8;
    let table = memo.capacity() * entry;
    let frames: usize = memo
        .values()
        .map(|frames| {
            frames
                .iter()
                .map(|f| {
                    std::mem::size_of::<Frame>()
                        + f.function.capacity()
                        + f.file.as_ref().map_or(0, String::capacity)
                })
                .sum::<usize>()
                + 16
        })
        .sum();
    (table + frames) as u64
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
    /// The working directory application paths are shown relative to (read with `maps`).
    cwd: Option<String>,
    /// The crate of each application source root (the directory before `src/`), learned
    /// from qualified physical frames: the crate a bare inlined name belongs to.
    crates: HashMap<String, String>,
    /// The executable's symbol table, read the first time a frame's name is bare (a
    /// build with line tables only); `Some(None)` when it could not be read.
    symtab: Option<Option<SymbolTable>>,
    used_backtrace: bool,
}

impl Symbolizer {
    pub(crate) fn new() -> Self {
        Symbolizer {
            maps: None,
            cwd: None,
            crates: HashMap::new(),
            symtab: None,
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
            // Cold addresses are read first and finished together, so every physical
            // frame of the batch can name the crate of another address's inlined frames.
            let mut cold: Vec<(u64, Cold)> = Vec::new();
            let mut pending = std::collections::HashSet::new();
            for addr in addrs {
                if out.contains_key(&addr) || pending.contains(&addr) {
                    continue;
                }
                if let Some(frames) = memo.get(&addr) {
                    out.insert(addr, frames.clone());
                    continue;
                }
                pending.insert(addr);
                cold.push((addr, self.resolve_cold(addr)));
            }
            for (_, c) in &cold {
                if let Cold::Raw { raw, .. } = c {
                    self.learn_crate(raw);
                }
            }
            for (addr, c) in cold {
                let frames: Frames = match c {
                    Cold::Done(frames) => frames.into(),
                    Cold::Raw { raw, mapping } => finish(
                        raw,
                        addr,
                        mapping.as_ref(),
                        self.cwd.as_deref(),
                        &self.crates,
                    )
                    .into(),
                };
                if memo.len() >= MEMO_MAX_ADDRS {
                    memo.clear();
                }
                memo.insert(addr, frames.clone());
                out.insert(addr, frames);
            }
        });
    }

    /// Records the crate of the physical frame's source root, when its name is qualified
    /// and its file is the application's.
    fn learn_crate(&mut self, raw: &[RawFrame]) {
        let Some(outer) = raw.last() else {
            return;
        };
        let (Some(name), Some(file)) = (outer.function.as_deref(), outer.file.as_deref()) else {
            return;
        };
        let (short, origin) = short_path(file, self.cwd.as_deref());
        if origin != Origin::Application {
            return;
        }
        if let (Some(krate), Some(root)) = (crate_of_name(name), crate_root(&short)) {
            self.crates
                .entry(root.to_owned())
                .or_insert_with(|| krate.to_owned());
        }
    }

    /// Reads `addr` from the debug info (names not finished yet).
    fn resolve_cold(&mut self, addr: u64) -> Cold {
        // A return address points after the call; addr - 1 is inside it, so the line
        // (and inline frames) are the call's.
        let pc = addr.saturating_sub(1);
        if self.maps.is_none() {
            self.cwd = std::env::current_dir()
                .ok()
                .and_then(|d| d.to_str().map(str::to_owned));
        }
        let maps = self.maps.get_or_insert_with(Maps::read);
        let mapping = maps.find(pc).cloned();
        let in_exe = mapping.as_ref().map(|m| maps.is_exe(m));
        if in_exe == Some(false) {
            // A shared library (libc, the loader): named from its dynamic symbols only.
            // Its debug info, where installed, is a separate compressed file: libc's alone
            // cost ~115 ms and ~50 MiB per cold report here, for the two or three frames
            // at the bottom of every thread.
            return Cold::Done(vec![library_frame(addr, pc, mapping.as_ref())]);
        }
        self.used_backtrace = true;
        let mut raw = resolve_with_backtrace(addr);
        // Line tables alone name every function bare (`handle`); the symbol table has the
        // full path of the function the address is physically in: the outermost frame.
        if let (Some(outer), Some(m)) = (raw.last_mut(), mapping.as_ref())
            && outer.function.as_deref().is_none_or(is_bare)
        {
            let symtab = self.symtab.get_or_insert_with(|| {
                let table = SymbolTable::read();
                // The crate whose `src/` holds `main`: the application's own, so its
                // inlined frames are named even before one of its physical frames is seen.
                if let Some(krate) = table.as_ref().and_then(|t| t.main_crate.clone()) {
                    self.crates.entry(String::new()).or_insert(krate);
                }
                table
            });
            if let Some(name) = symtab.as_ref().and_then(|t| t.lookup(pc, m)) {
                outer.function = Some(name);
            }
        }
        if raw.is_empty() || raw.iter().all(|f| f.function.is_none()) {
            return Cold::Done(vec![library_frame(addr, pc, mapping.as_ref())]);
        }
        Cold::Raw { raw, mapping }
    }
}

/// A cold address as read: finished already (a shared library's frame), or the frames
/// `backtrace` gave, to be finished with what the whole batch taught.
enum Cold {
    Done(Vec<Frame>),
    Raw {
        raw: Vec<RawFrame>,
        mapping: Option<Mapping>,
    },
}

/// The crate a qualified name starts with: `heapwatch::http::handle` and
/// `<heapwatch::Foo as Bar>::f` → `heapwatch`; `None` for a bare name or anything else.
fn crate_of_name(name: &str) -> Option<&str> {
    if is_bare(name) {
        return None;
    }
    let krate = name.strip_prefix('<').unwrap_or(name).split("::").next()?;
    (!krate.is_empty() && krate.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(krate)
}

/// A frame as `backtrace` gives it, before names are completed and paths shortened.
struct RawFrame {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

/// Completes the frames at one address (innermost first): bare names of inlined frames
/// get the module path of their file (with the crate of the physical frame, when the file
/// is in the same crate, or of the registry directory); paths are shortened and each
/// frame marked as library code or not.
fn finish(
    raw: Vec<RawFrame>,
    addr: u64,
    mapping: Option<&Mapping>,
    cwd: Option<&str>,
    crates: &HashMap<String, String>,
) -> Vec<Frame> {
    let shortened: Vec<Option<(String, Origin)>> = raw
        .iter()
        .map(|f| f.file.as_deref().map(|p| short_path(p, cwd)))
        .collect();
    // The physical frame's crate (from its qualified name) and the directory it lives in.
    let outer_crate = raw.last().and_then(|outer| {
        let krate = crate_of_name(outer.function.as_deref()?)?.to_owned();
        let root = shortened
            .last()?
            .as_ref()
            .and_then(|(p, _)| crate_root(p))?;
        Some((krate, root.to_owned()))
    });
    raw.into_iter()
        .zip(shortened)
        .map(|(f, short)| {
            let mut function = f.function.unwrap_or_default();
            // Linker-level names (`__rust_alloc`, `__rust_try`) are unique as they are.
            if let Some((path, origin)) = &short
                && is_bare(&function)
                && !function.starts_with("__")
            {
                let krate = match origin {
                    Origin::Application => outer_crate
                        .as_ref()
                        .filter(|(_, root)| crate_root(path) == Some(root.as_str()))
                        .map(|(k, _)| k.clone())
                        .or_else(|| crate_root(path).and_then(|r| crates.get(r)).cloned()),
                    _ => crate_of_dependency(path, *origin),
                };
                if let (Some(krate), Some(module)) = (krate, module_of(path)) {
                    function = if module.is_empty() {
                        format!("{krate}::{function}")
                    } else {
                        format!("{krate}::{module}::{function}")
                    };
                }
            }
            if function.is_empty() {
                function = object_offset_name(addr, mapping);
            }
            let long = f.file.as_deref();
            let library = match &short {
                None => true,
                Some((path, origin)) => {
                    *origin != Origin::Application
                        || is_own_crate(path)
                        || long.is_some_and(is_own_crate)
                }
            };
            Frame {
                function,
                file: short.map(|(p, _)| p),
                line: f.line,
                library,
                own_file: long.is_some_and(is_own_source),
            }
        })
        .collect()
}

impl Drop for Symbolizer {
    fn drop(&mut self) {
        untracked(|| {
            self.maps = None;
            self.symtab = None;
            if self.used_backtrace {
                backtrace::clear_symbol_cache();
            }
        });
    }
}

/// One file-backed mapping of /proc/self/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapping {
    start: u64,
    end: u64,
    /// Offset in the file of `start`.
    offset: u64,
    inode: u64,
    path: String,
}

impl Mapping {
    /// The object file's name without its directory (`libc.so.6`).
    fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// The process's file-backed mappings (from /proc/self/maps) and which file is the main
/// executable: enough to tell an executable frame from a shared library's.
struct Maps {
    mappings: Vec<Mapping>,
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

    /// The file-backed mapping that holds `pc`.
    fn find(&self, pc: u64) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.start <= pc && pc < m.end)
    }

    /// Whether `m` maps the main executable, as opposed to a shared library.
    fn is_exe(&self, m: &Mapping) -> bool {
        self.exe_inode == Some(m.inode)
    }
}

/// "start-end perms offset dev inode path" → a [`Mapping`], for lines with an absolute
/// path.
fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let path = fields.next()?;
    if !path.starts_with('/') {
        return None;
    }
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode: inode.parse().ok()?,
        path: path.to_owned(),
    })
}

/// The name of code without a symbol: its object file and the offset in that file
/// (`libc.so.6+0x2a1f4`, what `addr2line -e libc.so.6 0x2a1f4` reads), or the address
/// itself marked as outside every file.
fn object_offset_name(addr: u64, mapping: Option<&Mapping>) -> String {
    match mapping {
        Some(m) => format!(
            "{}+{:#x}",
            m.file_name(),
            addr.wrapping_sub(m.start).wrapping_add(m.offset)
        ),
        None => format!("<unmapped>+{addr:#x}"),
    }
}

/// A frame in a shared library (or code without any symbol): "symbol+0xoffset" from the
/// nearest dynamic symbol below `pc` (`dladdr`), else "file+0xoffset"; in the library's
/// file, without a line.
#[allow(unsafe_code)]
fn library_frame(addr: u64, pc: u64, mapping: Option<&Mapping>) -> Frame {
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
    let file = mapping
        .map(|m| m.file_name().to_owned())
        .or_else(|| file.map(|f| f.rsplit('/').next().unwrap_or(&f).to_owned()))
        .filter(|f| !f.is_empty());
    Frame {
        function: function.unwrap_or_else(|| object_offset_name(addr, mapping)),
        file,
        line: None,
        library: true,
        own_file: false,
    }
}

/// The frames at return address `addr` as `backtrace` resolves them, innermost first
/// (its caches stay until `backtrace::clear_symbol_cache()`).
fn resolve_with_backtrace(addr: u64) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    // `backtrace::resolve` takes a return address and looks up the byte before it
    // itself: the same `addr - 1` the debug-info path looks up.
    backtrace::resolve(addr as usize as *mut c_void, |sym| {
        frames.push(RawFrame {
            function: sym.name().map(|n| format!("{n:#}")),
            file: sym.filename().map(|p| p.display().to_string()),
            line: sym.lineno(),
        });
    });
    frames
}

/// The main executable's function symbols (`.symtab`), sorted by address, for naming the
/// physical frame when the debug info holds only line tables. Read through `object`'s
/// read cache (the headers, the symbol and string tables, not the whole file), kept for
/// one symbolization.
struct SymbolTable {
    /// The file, read on demand.
    file: object::ReadCache<std::fs::File>,
    /// (start, end, index) of each defined function symbol, by start.
    ranges: Vec<(u64, u64, object::SymbolIndex)>,
    /// (file offset, size, link address) of each loadable segment, to turn a runtime
    /// address into a link-time one.
    segments: Vec<(u64, u64, u64)>,
    /// The crate of the program's `crate::main`, if it has one.
    main_crate: Option<String>,
}

impl SymbolTable {
    fn read() -> Option<SymbolTable> {
        use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
        let file = object::ReadCache::new(std::fs::File::open("/proc/self/exe").ok()?);
        let (ranges, segments, main_crate) = {
            let obj = object::File::parse(&file).ok()?;
            let mut ranges: Vec<(u64, u64, object::SymbolIndex)> = obj
                .symbols()
                .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.size() > 0)
                .map(|s| (s.address(), s.address() + s.size(), s.index()))
                .collect();
            ranges.sort_unstable_by_key(|r| r.0);
            // `crate::main`: few symbols contain `4main` (legacy mangling) or `main`
            // (v0), so only those are demangled.
            let main_crate = obj
                .symbols()
                .filter(|s| s.kind() == SymbolKind::Text)
                .filter_map(|s| s.name_bytes().ok())
                .filter(|n| n.windows(4).any(|w| w == b"main"))
                .find_map(|n| {
                    let name = format!("{:#}", backtrace::SymbolName::new(n));
                    let (krate, rest) = name.split_once("::")?;
                    (rest == "main" && crate_of_name(&name) == Some(krate))
                        .then(|| krate.to_owned())
                });
            let segments = obj
                .segments()
                .map(|s| {
                    let (offset, size) = s.file_range();
                    (offset, size, s.address())
                })
                .collect();
            (ranges, segments, main_crate)
        };
        if ranges.is_empty() {
            return None;
        }
        Some(SymbolTable {
            file,
            ranges,
            segments,
            main_crate,
        })
    }

    /// The demangled name (without hash) of the function holding runtime address `pc`,
    /// which lies in the executable's mapping `m`.
    fn lookup(&self, pc: u64, m: &Mapping) -> Option<String> {
        use object::{Object, ObjectSymbol};
        let file_offset = pc - m.start + m.offset;
        let &(seg_offset, _, seg_addr) = self
            .segments
            .iter()
            .find(|&&(o, size, _)| o <= file_offset && file_offset < o + size)?;
        let link = seg_addr + (file_offset - seg_offset);
        let i = self
            .ranges
            .partition_point(|r| r.0 <= link)
            .checked_sub(1)?;
        let (start, end, index) = self.ranges[i];
        if !(start <= link && link < end) {
            return None;
        }
        let obj = object::File::parse(&self.file).ok()?;
        let symbol = obj.symbol_by_index(index).ok()?;
        let name = symbol.name_bytes().ok()?;
        Some(format!("{:#}", backtrace::SymbolName::new(name)))
    }
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
            f.file.as_deref().is_some_and(|p| p.starts_with("libc")),
            "the file name alone: {f:?}"
        );
        assert_eq!(f.line, None);
        assert!(f.library);
    }

    #[test]
    fn code_without_a_symbol_is_named_by_its_file_and_offset_never_a_bare_address() {
        let exe = Mapping {
            start: 0x7fd5_cbf8_0000,
            end: 0x7fd5_cc00_0000,
            offset: 0x28_000,
            inode: 1,
            path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        };
        assert_eq!(
            object_offset_name(0x7fd5_cbf8_21f4, Some(&exe)),
            "libc.so.6+0x2a1f4"
        );
        assert_eq!(object_offset_name(0x1234, None), "<unmapped>+0x1234");
        // An address in no mapping at all still gets a name that is not just hex.
        let resolved = resolve_all([0x10]);
        let f = &resolved[&0x10][0];
        assert!(!f.function.starts_with("0x"), "{f:?}");
        assert!(f.library);
    }

    #[test]
    fn paths_are_shortened_and_classified() {
        let cases = [
            (
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/core.rs",
                "tokio-1.54.1/src/runtime/task/core.rs",
                Origin::Dependency,
            ),
            (
                "/usr/local/cargo/git/checkouts/hyper-0a1b2c3d/5e6f7a8/src/proto/h1/io.rs",
                "hyper-0a1b2c3d/src/proto/h1/io.rs",
                Origin::Dependency,
            ),
            (
                "/rustc/17067e9ac6d7e98f18d4d5e1a8b5d4ec2dd0ad0c/library/alloc/src/vec/mod.rs",
                "library/alloc/src/vec/mod.rs",
                Origin::Std,
            ),
            (
                "/home/u/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/std/src/io/mod.rs",
                "library/std/src/io/mod.rs",
                Origin::Std,
            ),
            (
                "/rust/deps/hashbrown-0.16.1/src/raw/mod.rs",
                "hashbrown-0.16.1/src/raw/mod.rs",
                Origin::Dependency,
            ),
            (
                "src/http/upgrade.rs",
                "src/http/upgrade.rs",
                Origin::Application,
            ),
            ("/work/other/src/lib.rs", "src/lib.rs", Origin::Application),
        ];
        for (long, short, origin) in cases {
            assert_eq!(short_path(long, None), (short.to_owned(), origin), "{long}");
        }
        // The application's absolute paths: relative to the working directory inside it,
        // else from the last src/ or tests/ directory.
        let app = |p: &str, cwd| short_path(p, cwd).0;
        assert_eq!(
            app("/work/ws/crates/tracker/src/stats.rs", Some("/work/ws")),
            "crates/tracker/src/stats.rs"
        );
        assert_eq!(
            app("/build/src/http/upgrade.rs", Some("/")),
            "src/http/upgrade.rs"
        );
        assert_eq!(app("/home/u/src/proj/tests/a.rs", None), "tests/a.rs");
    }

    #[test]
    fn bare_names_of_inlined_frames_get_their_module_path() {
        let raw = vec![
            RawFrame {
                function: Some("insert<u64, u64>".into()),
                file: Some(
                    "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hashbrown-0.15.2/src/map.rs"
                        .into(),
                ),
                line: Some(1),
            },
            RawFrame {
                function: Some("handle".into()),
                file: Some("src/http/upgrade.rs".into()),
                line: Some(78),
            },
            RawFrame {
                function: Some("{closure#0}".into()),
                file: Some("src/ws/mod.rs".into()),
                line: Some(3),
            },
            RawFrame {
                function: Some("heapwatch::http::router::route".into()),
                file: Some("src/http/router.rs".into()),
                line: Some(9),
            },
        ];
        let frames = finish(raw, 0x1000, None, None, &HashMap::new());
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "hashbrown::map::insert<u64, u64>",
                "heapwatch::http::upgrade::handle",
                "heapwatch::ws::{closure#0}",
                "heapwatch::http::router::route",
            ]
        );
        let library: Vec<bool> = frames.iter().map(|f| f.library).collect();
        assert_eq!(library, [true, false, false, false]);
        assert_eq!(
            frames[0].file.as_deref(),
            Some("hashbrown-0.15.2/src/map.rs")
        );
        assert!(frames[0].is_plumbing(), "hashbrown is allocation plumbing");
        assert!(!frames[1].is_plumbing());
        // Without a file nothing is known: library code, named as given.
        let frames = finish(
            vec![RawFrame {
                function: Some("tokio::runtime::park".into()),
                file: None,
                line: None,
            }],
            0x1000,
            None,
            None,
            &HashMap::new(),
        );
        assert!(frames[0].library);
        assert_eq!(frames[0].function, "tokio::runtime::park");
        // An inlined application frame whose physical frame is a dependency's (an async
        // block polled by tokio): its crate comes from what the batch learned; linker
        // names stay as they are.
        let crates = HashMap::from([(String::new(), "heapwatch".to_owned())]);
        let frames = finish(
            vec![
                RawFrame {
                    function: Some("__rust_alloc".into()),
                    file: Some("src/main.rs".into()),
                    line: Some(17),
                },
                RawFrame {
                    function: Some("{async_fn#0}<tokio::net::TcpStream>".into()),
                    file: Some("/build/src/http/mod.rs".into()),
                    line: Some(168),
                },
                RawFrame {
                    function: Some(
                        "<tokio_util::task::TrackedFuture<F> as core::future::Future>::poll".into(),
                    ),
                    file: None,
                    line: None,
                },
            ],
            0x1000,
            None,
            Some("/"),
            &crates,
        );
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "__rust_alloc",
                "heapwatch::http::{async_fn#0}<tokio::net::TcpStream>",
                "<tokio_util::task::TrackedFuture<F> as core::future::Future>::poll",
            ]
        );
        assert!(frames[0].is_tracker_internal(), "the allocator shim");
        assert_eq!(frames[1].file.as_deref(), Some("src/http/mod.rs"));
        assert!(!frames[1].library);
        assert!(
            frames[2].library,
            "no file: a dependency without debug info"
        );
        assert_eq!(
            crate_of_name("<heapwatch::Foo as Bar>::f"),
            Some("heapwatch")
        );
        assert_eq!(crate_of_name("handle"), None);
    }

    #[test]
    fn bare_names_and_modules() {
        for bare in ["insert", "new<tokio::task::Id>", "{closure#0}"] {
            assert!(is_bare(bare), "{bare}");
        }
        for full in ["a::b", "<T as U>::f", "heapwatch::x<y::z>"] {
            assert!(!is_bare(full), "{full}");
        }
        assert_eq!(module_of("src/lib.rs").as_deref(), Some(""));
        assert_eq!(module_of("src/ws/mod.rs").as_deref(), Some("ws"));
        assert_eq!(
            module_of("tokio-1.54.1/src/runtime/task/core.rs").as_deref(),
            Some("runtime::task::core")
        );
        assert_eq!(module_of("tests/exports.rs"), None);
        assert_eq!(
            crate_of_dependency("tokio-util-0.7.20/src/lib.rs", Origin::Dependency).as_deref(),
            Some("tokio_util")
        );
        assert_eq!(
            crate_of_dependency("library/alloc/src/vec/mod.rs", Origin::Std).as_deref(),
            Some("alloc")
        );
    }

    /// A function of this file that is never inlined: its symbol is in `.symtab`.
    #[inline(never)]
    fn named_in_the_symbol_table() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn the_symbol_table_names_non_inlined_functions_in_full() {
        let addr = named_in_the_symbol_table as fn() -> u64 as usize as u64 + 1;
        let maps = Maps::read();
        let mapping = maps.find(addr).expect("this test's code is mapped");
        assert!(maps.is_exe(mapping));
        let table = SymbolTable::read().expect("a test binary has a symbol table");
        assert_eq!(
            table.lookup(addr, mapping).as_deref(),
            Some("heapwatch_tracker::symbolize::tests::named_in_the_symbol_table")
        );
        // The test harness's `main` is the test crate's.
        assert_eq!(table.main_crate.as_deref(), Some("heapwatch_tracker"));
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
            resolve_with_backtrace as fn(u64) -> Vec<RawFrame> as usize as u64,
            parse_mapping as fn(&str) -> Option<Mapping> as usize as u64,
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
