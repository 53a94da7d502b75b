//! The cold path of symbolization: DWARF read straight from the mapped object's file, only
//! as much of it as the addresses asked for need.
//!
//! `backtrace` (the reference this must agree with) maps the whole executable and builds
//! an index of every compilation unit before answering the first address: on a 23 MiB
//! release binary with 1,655 units that is most of a cold snapshot's time and tens of MiB
//! of heap. A snapshot needs a few hundred addresses, which fall in a handful of units.
//! So here:
//!
//! - `.debug_aranges` (a few hundred KiB) says which unit covers an address;
//! - only those units are read (`pread`, no mmap: the crate has no `unsafe` outside the
//!   allocator): their entries, line program, and the strings and range lists they point
//!   at, a small block at a time;
//! - per unit read, one pass indexes its functions' address ranges and one its line table;
//!   inline frames come from the covering function's subtree, per address.
//!
//! The answers follow `backtrace` 0.3 (through `addr2line`) exactly: the same unit
//! choice, name attributes (linkage name, else name, else the abstract origin's), line
//! rows and file paths. Whatever this reader cannot answer the same way — an object
//! without its own uncompressed DWARF 2–4 (a system library with separate debug info, the
//! vDSO), an address outside `.debug_aranges`, a frame without a name (`backtrace` then
//! takes the ELF symbol table's) — it declines, and the caller asks `backtrace`.
//! Everything lives in a [`Reader`], dropped after each symbolization.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use gimli::{AttributeValue, EndianSlice, NativeEndian};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};

/// The bytes of one section as read from the file.
type Slice<'a> = EndianSlice<'a, NativeEndian>;

/// First read for a string or a range list: most are far shorter, and a longer one is
/// read again in full (each read is one `pread` of a few hundred bytes).
const FIRST_READ: usize = 256;

/// The largest page size a mapping's offset is rounded to (64 KiB pages exist on
/// aarch64); segments are at least this far apart unless they share a page.
const MAX_PAGE: u64 = 64 * 1024;

/// How deep `DW_AT_abstract_origin`/`DW_AT_specification` chains are followed for a
/// name, as `addr2line` does.
const NAME_DEPTH: u32 = 16;

/// Why an address is left to `backtrace`. Never shown: every variant just means "ask
/// the reference implementation".
#[derive(Debug)]
pub(super) enum Decline {
    /// Reading the file failed.
    Io,
    /// The object or its DWARF is of a kind this reader does not handle.
    Unsupported,
    /// Malformed or unexpected DWARF.
    Dwarf,
    /// Nothing here covers the address, or a frame has no name.
    NotFound,
}

impl From<std::io::Error> for Decline {
    fn from(_: std::io::Error) -> Self {
        Decline::Io
    }
}

impl From<gimli::Error> for Decline {
    fn from(_: gimli::Error) -> Self {
        Decline::Dwarf
    }
}

impl From<object::Error> for Decline {
    fn from(_: object::Error) -> Self {
        Decline::Unsupported
    }
}

/// One resolved (possibly inlined) frame: the raw (mangled) name, file and line.
pub(super) struct RawFrame {
    pub name: Vec<u8>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// One file-backed mapping of /proc/self/maps.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    inode: u64,
    path: String,
}

/// The process's mappings and the objects opened so far (by path; `None`: declined).
pub(super) struct Reader {
    mappings: Vec<Mapping>,
    objects: HashMap<String, Option<Object>>,
    /// The inode of the main executable (/proc/self/exe), read once.
    exe_inode: Option<u64>,
}

impl Reader {
    /// Reads /proc/self/maps; objects are opened when an address first falls in them.
    pub(super) fn new() -> Self {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        Reader {
            mappings: maps.lines().filter_map(parse_mapping).collect(),
            objects: HashMap::new(),
            exe_inode: std::fs::metadata("/proc/self/exe").ok().map(|m| m.ino()),
        }
    }

    /// Whether `pc` lies in the main executable (the file /proc/self/exe names), as
    /// opposed to a shared library; `None` when no file-backed mapping holds it.
    pub(super) fn in_main_executable(&self, pc: u64) -> Option<bool> {
        let mapping = self.mappings.iter().find(|m| m.start <= pc && pc < m.end)?;
        Some(self.exe_inode? == mapping.inode)
    }

    /// The frames at `pc` (an address inside a call instruction), innermost first.
    pub(super) fn frames(&mut self, pc: u64) -> Result<Vec<RawFrame>, Decline> {
        let mapping = self
            .mappings
            .iter()
            .find(|m| m.start <= pc && pc < m.end)
            .ok_or(Decline::NotFound)?;
        let object = self
            .objects
            .entry(mapping.path.clone())
            .or_insert_with(|| Object::open(mapping).ok());
        let object = object.as_mut().ok_or(Decline::Unsupported)?;
        let probe = pc.wrapping_sub(object.bias);
        object.frames(probe)
    }
}

/// The whole length, initial length field included, of the unit or line program whose
/// first 12 bytes are `head`: 4 + a 32-bit length, or 12 + a 64-bit one (64-bit DWARF).
fn entry_length(head: &[u8]) -> Result<u64, Decline> {
    let len32 = u32::from_ne_bytes(
        head.get(..4)
            .ok_or(Decline::Dwarf)?
            .try_into()
            .expect("4 bytes"),
    );
    if len32 != u32::MAX {
        return Ok(4 + u64::from(len32));
    }
    let len64 = u64::from_ne_bytes(
        head.get(4..12)
            .ok_or(Decline::Dwarf)?
            .try_into()
            .expect("8 bytes"),
    );
    Ok(12 + len64)
}

/// "start-end perms offset dev inode path" → a mapping, for lines with an absolute path.
fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    // The path is the rest of the line (it may contain spaces); a replaced file shows
    // as "… (deleted)" and is not the one mapped, which the inode check below catches.
    let path = line
        .splitn(6, |c: char| c.is_ascii_whitespace())
        .nth(5)?
        .trim();
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

/// Where a section lies in the file.
#[derive(Clone, Copy, Default)]
struct Section {
    offset: u64,
    size: u64,
}

/// One address range of a compilation unit, from `.debug_aranges`.
struct UnitRange {
    begin: u64,
    end: u64,
    /// The unit's offset in `.debug_info`.
    unit: u64,
    /// The smallest `begin` of this entry and all after it (entries are sorted by `end`),
    /// so a lookup can stop early.
    min_begin: u64,
}

/// One ELF object with its own DWARF.
struct Object {
    file: File,
    /// Runtime address minus the address in the file.
    bias: u64,
    info: Section,
    line: Section,
    ranges: Section,
    str: Section,
    line_str: Section,
    abbrev: Vec<u8>,
    /// Sorted by (`end`, `unit`): the order `addr2line` tries overlapping units in.
    unit_ranges: Vec<UnitRange>,
    /// Units read so far, by offset (`None`: declined).
    units: HashMap<u64, Option<Unit>>,
    /// Strings read so far, by (section offset, offset).
    strings: HashMap<(u64, u64), Vec<u8>>,
}

impl Object {
    fn open(mapping: &Mapping) -> Result<Object, Decline> {
        let file = File::open(&mapping.path)?;
        if file.metadata()?.ino() != mapping.inode {
            return Err(Decline::Unsupported);
        }
        // Headers only, through `object`'s read cache (dropped before the object is built).
        let (bias, found) = {
            let cache = object::ReadCache::new(&file);
            let header = object::elf::FileHeader64::<object::NativeEndian>::parse(&cache)?;
            let endian = header.endian()?;
            // The mapping starts `offset` bytes into the file. The loadable segment it
            // maps says which file address that is: the one starting within the
            // mapping's first page (two segments may share a page: the mapping belongs
            // to the later one), else the one the offset falls inside.
            let loads: Vec<_> = header
                .program_headers(endian, &cache)?
                .iter()
                .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
                .collect();
            let starts_here = |p: &&&object::elf::ProgramHeader64<object::NativeEndian>| {
                p.p_offset(endian)
                    .checked_sub(mapping.offset)
                    .is_some_and(|d| d < MAX_PAGE)
            };
            let contains = |p: &&&object::elf::ProgramHeader64<object::NativeEndian>| {
                let off = p.p_offset(endian);
                off <= mapping.offset && mapping.offset < off + p.p_filesz(endian)
            };
            let segment = loads
                .iter()
                .find(starts_here)
                .or_else(|| loads.iter().find(contains))
                .ok_or(Decline::Unsupported)?;
            let file_address = segment
                .p_vaddr(endian)
                .wrapping_sub(segment.p_offset(endian))
                .wrapping_add(mapping.offset);
            let sections = header.sections(endian, &cache)?;
            let find = |name: &str| -> Result<Section, Decline> {
                let Some((_, s)) = sections.section_by_name(endian, name.as_bytes()) else {
                    return Ok(Section::default());
                };
                if s.sh_flags(endian).0 & object::elf::SHF_COMPRESSED.0 != 0
                    || s.sh_type(endian) == object::elf::SHT_NOBITS
                {
                    return Err(Decline::Unsupported);
                }
                Ok(Section {
                    offset: s.sh_offset(endian),
                    size: s.sh_size(endian),
                })
            };
            let names = [
                ".debug_info",
                ".debug_aranges",
                ".debug_abbrev",
                ".debug_line",
                ".debug_ranges",
                ".debug_str",
                ".debug_line_str",
            ];
            let mut found = [Section::default(); 7];
            for (slot, name) in found.iter_mut().zip(names) {
                *slot = find(name)?;
            }
            (mapping.start.wrapping_sub(file_address), found)
        };
        let [info, aranges, abbrev, line, ranges, str, line_str] = found;
        if info.size == 0 || aranges.size == 0 {
            return Err(Decline::Unsupported);
        }
        let mut object = Object {
            bias,
            info,
            line,
            ranges,
            str,
            line_str,
            abbrev: Vec::new(),
            unit_ranges: Vec::new(),
            units: HashMap::new(),
            strings: HashMap::new(),
            file,
        };
        object.abbrev = object.read(abbrev, 0, abbrev.size as usize)?;
        let aranges = object.read(aranges, 0, aranges.size as usize)?;
        object.unit_ranges = unit_ranges(&aranges)?;
        Ok(object)
    }

    /// `len` bytes at `at` in `section` (fewer at the section's end).
    fn read(&self, section: Section, at: u64, len: usize) -> Result<Vec<u8>, Decline> {
        let len = len.min(section.size.saturating_sub(at) as usize);
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, section.offset + at)?;
        Ok(buf)
    }

    /// The NUL-terminated string at `at` in `section`, without the NUL.
    fn string(&mut self, section: Section, at: u64) -> Result<Vec<u8>, Decline> {
        if let Some(s) = self.strings.get(&(section.offset, at)) {
            return Ok(s.clone());
        }
        let mut len = FIRST_READ;
        let s = loop {
            let buf = self.read(section, at, len)?;
            if let Some(end) = buf.iter().position(|&b| b == 0) {
                break buf[..end].to_vec();
            }
            if buf.len() < len {
                return Err(Decline::Dwarf);
            }
            len *= 4;
        };
        self.strings.insert((section.offset, at), s.clone());
        Ok(s)
    }

    /// The bytes of a string attribute, `None` for a non-string form.
    fn attr_string(
        &mut self,
        value: &AttributeValue<Slice<'_>>,
    ) -> Result<Option<Vec<u8>>, Decline> {
        Ok(Some(match value {
            AttributeValue::String(s) => s.slice().to_vec(),
            AttributeValue::DebugStrRef(o) => self.string(self.str, o.0 as u64)?,
            AttributeValue::DebugLineStrRef(o) => self.string(self.line_str, o.0 as u64)?,
            _ => return Ok(None),
        }))
    }

    /// Calls `f(begin, end)` for each non-empty address range an entry's attributes
    /// give: its range list if it has one, else low..high or low..low+size.
    fn for_each_range(
        &self,
        ranges: &Ranges,
        encoding: gimli::Encoding,
        base: u64,
        mut f: impl FnMut(u64, u64),
    ) -> Result<(), Decline> {
        let mut add = |b: u64, e: u64| {
            if b < e {
                f(b, e);
            }
        };
        if let Some(at) = ranges.list {
            // A list is read a block at a time: most are a few entries long.
            let mut len = FIRST_READ;
            loop {
                let buf = self.read(self.ranges, at, len)?;
                let lists = gimli::RangeLists::new(
                    gimli::DebugRanges::new(&buf, NativeEndian),
                    gimli::DebugRngLists::new(&[], NativeEndian),
                );
                let empty = gimli::DebugAddr::from(EndianSlice::new(&[], NativeEndian));
                let mut iter = lists.ranges(
                    gimli::RangeListsOffset(0),
                    encoding,
                    base,
                    &empty,
                    gimli::DebugAddrBase(0),
                )?;
                let mut found = Vec::new();
                let end = loop {
                    match iter.next() {
                        Ok(Some(r)) => found.push(r),
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                match end {
                    Ok(()) => {
                        found.into_iter().for_each(|r| add(r.begin, r.end));
                        return Ok(());
                    }
                    Err(gimli::Error::UnexpectedEof(_)) if buf.len() == len => len *= 4,
                    Err(e) => return Err(e.into()),
                }
            }
        } else if let (Some(b), Some(e)) = (ranges.low, ranges.high) {
            add(b, e);
        } else if let (Some(b), Some(size)) = (ranges.low, ranges.size) {
            add(b, b.wrapping_add(size));
        }
        Ok(())
    }

    /// The frames at `probe` (a file address), innermost first.
    fn frames(&mut self, probe: u64) -> Result<Vec<RawFrame>, Decline> {
        // Like `addr2line`, the first unit (in `unit_ranges` order) that has a function or
        // a line for the address answers.
        let first = self.unit_ranges.partition_point(|r| r.end <= probe);
        let candidates: Vec<u64> = self.unit_ranges[first..]
            .iter()
            .take_while(|r| r.min_begin <= probe)
            .filter(|r| r.begin <= probe && probe < r.end)
            .map(|r| r.unit)
            .collect();
        for unit in candidates {
            if !self.units.contains_key(&unit) {
                let read = Unit::read(self, unit).ok();
                self.units.insert(unit, read);
            }
            let Some(Some(u)) = self.units.get(&unit) else {
                return Err(Decline::Unsupported);
            };
            let function = u.function_at(probe);
            let location = u.location_at(probe);
            match (function, location) {
                (None, None) => continue,
                (None, Some(_)) => return Err(Decline::NotFound),
                (Some(die), location) => return self.function_frames(unit, die, probe, location),
            }
        }
        Err(Decline::NotFound)
    }

    /// The frames of the function whose entry is at `die` in `unit`: its inlined calls
    /// covering `probe`, innermost first, then the function itself.
    fn function_frames(
        &mut self,
        unit: u64,
        die: u64,
        probe: u64,
        location: Option<Location>,
    ) -> Result<Vec<RawFrame>, Decline> {
        let (name, inlined) = {
            let u = self
                .units
                .get(&unit)
                .and_then(Option::as_ref)
                .ok_or(Decline::Dwarf)?;
            u.inline_chain(self, die, probe)?
        };
        let mut frames = Vec::with_capacity(inlined.len() + 1);
        let mut here = location;
        // Innermost first: each inlined call's frame shows where in it the address is;
        // its call site is where its caller (the next frame out) is.
        for call in inlined.iter().rev() {
            let name = self.name(unit, &call.name, NAME_DEPTH)?;
            frames.push(frame(name, here.take()));
            let u = self
                .units
                .get(&unit)
                .and_then(Option::as_ref)
                .ok_or(Decline::Dwarf)?;
            here = Some(Location {
                file: call.file.and_then(|f| u.file(f)).map(str::to_owned),
                line: (call.line != 0).then_some(call.line),
            });
        }
        let name = self.name(unit, &name, NAME_DEPTH)?;
        frames.push(frame(name, here));
        Ok(frames)
    }

    /// A name from its attributes (see [`NameAttrs`]); declines when there is none.
    fn name(&mut self, unit: u64, attrs: &NameAttrs, depth: u32) -> Result<Vec<u8>, Decline> {
        let mut name = None;
        for attr in &attrs.0 {
            match attr {
                NameAttr::Linkage(s) => name = Some(self.resolve_str(s)?),
                NameAttr::Name(s) => {
                    if name.is_none() {
                        name = Some(self.resolve_str(s)?);
                    }
                }
                NameAttr::Origin(target) => {
                    if name.is_none() && depth > 0 {
                        name = self.origin_name(unit, *target, depth)?;
                    }
                }
            }
        }
        name.ok_or(Decline::NotFound)
    }

    fn resolve_str(&mut self, s: &StrRef) -> Result<Vec<u8>, Decline> {
        match s {
            StrRef::Inline(bytes) => Ok(bytes.clone()),
            StrRef::Str(at) => self.string(self.str, *at),
            StrRef::LineStr(at) => self.string(self.line_str, *at),
        }
    }

    /// The name of the entry an abstract origin or specification points at: its linkage
    /// name, else its name, else its own origin's, as `addr2line`'s `name_entry`.
    fn origin_name(
        &mut self,
        unit: u64,
        target: Ref,
        depth: u32,
    ) -> Result<Option<Vec<u8>>, Decline> {
        let (unit, die) = match target {
            Ref::Unit(die) => (unit, die),
            Ref::Info(at) => {
                let unit = self.unit_containing(at)?;
                (unit, at - unit)
            }
        };
        let attrs = {
            let u = self
                .units
                .get(&unit)
                .and_then(Option::as_ref)
                .ok_or(Decline::Dwarf)?;
            u.name_attrs(die)?
        };
        let mut name = None;
        let mut next = None;
        for attr in &attrs.0 {
            match attr {
                NameAttr::Linkage(s) => return Ok(Some(self.resolve_str(s)?)),
                NameAttr::Name(s) => name = Some(self.resolve_str(s)?),
                NameAttr::Origin(t) => next = Some(*t),
            }
        }
        if name.is_some() {
            return Ok(name);
        }
        match next {
            Some(t) if depth > 1 => self.origin_name(unit, t, depth - 1),
            _ => Ok(None),
        }
    }

    /// The unit holding the `.debug_info` offset `at` (for references across units, as
    /// link-time optimisation makes), read if not yet.
    fn unit_containing(&mut self, at: u64) -> Result<u64, Decline> {
        if let Some(unit) = self
            .units
            .iter()
            .filter_map(|(start, u)| Some((*start, u.as_ref()?)))
            .find(|(start, u)| *start <= at && at < start + u.bytes.len() as u64)
            .map(|(start, _)| start)
        {
            return Ok(unit);
        }
        // Units that have code are all in .debug_aranges: the nearest start below.
        let unit = self
            .unit_ranges
            .iter()
            .map(|r| r.unit)
            .filter(|&u| u <= at)
            .max()
            .ok_or(Decline::NotFound)?;
        if !self.units.contains_key(&unit) {
            let read = Unit::read(self, unit).ok();
            self.units.insert(unit, read);
        }
        match self.units.get(&unit) {
            Some(Some(u)) if at < unit + u.bytes.len() as u64 => Ok(unit),
            _ => Err(Decline::NotFound),
        }
    }
}

fn frame(name: Vec<u8>, location: Option<Location>) -> RawFrame {
    let (file, line) = match location {
        Some(l) => (l.file, l.line),
        None => (None, None),
    };
    RawFrame { name, file, line }
}

/// Every address range of `.debug_aranges`, sorted for [`Object::frames`].
fn unit_ranges(aranges: &[u8]) -> Result<Vec<UnitRange>, Decline> {
    let aranges = gimli::DebugAranges::new(aranges, NativeEndian);
    let mut out = Vec::new();
    let mut headers = aranges.headers();
    while let Some(header) = headers.next()? {
        let unit = header.debug_info_offset().0 as u64;
        let mut entries = header.entries();
        // Like `addr2line`, an entry that fails to parse (an address overflow has been
        // seen in the wild) is skipped; the iterator stops on errors it cannot skip.
        while let Some(entry) = entries.next().transpose() {
            let Ok(entry) = entry else { continue };
            let range = entry.range();
            if range.begin < range.end {
                out.push(UnitRange {
                    begin: range.begin,
                    end: range.end,
                    unit,
                    min_begin: 0,
                });
            }
        }
    }
    out.sort_unstable_by_key(|r| (r.end, r.unit));
    let mut min = u64::MAX;
    for r in out.iter_mut().rev() {
        min = min.min(r.begin);
        r.min_begin = min;
    }
    Ok(out)
}

/// A source location: the file (as `addr2line` renders it) and a non-zero line.
struct Location {
    file: Option<String>,
    line: Option<u32>,
}

/// A string attribute not read yet.
#[derive(Clone)]
enum StrRef {
    Inline(Vec<u8>),
    Str(u64),
    LineStr(u64),
}

/// A reference to another entry.
#[derive(Clone, Copy)]
enum Ref {
    /// Offset within the same unit.
    Unit(u64),
    /// Offset in `.debug_info`.
    Info(u64),
}

#[derive(Clone)]
enum NameAttr {
    Linkage(StrRef),
    Name(StrRef),
    Origin(Ref),
}

/// An entry's name-bearing attributes, in the order they appear (the order matters: see
/// [`Object::name`]).
#[derive(Clone, Default)]
struct NameAttrs(Vec<NameAttr>);

/// One inlined call covering the address.
struct InlinedCall {
    name: NameAttrs,
    file: Option<u64>,
    line: u32,
}

/// One row of a line table.
#[derive(Clone, Copy)]
struct Row {
    address: u64,
    file: u64,
    line: u32,
}

/// One sequence of a line table: rows `rows` of [`Unit::rows`], covering `start..end`.
struct Sequence {
    start: u64,
    end: u64,
    rows: std::ops::Range<usize>,
}

/// One compilation unit, read whole, with its functions and line table indexed.
struct Unit {
    /// The unit's bytes in `.debug_info`, header included (offsets within it are the
    /// unit offsets DWARF uses).
    bytes: Vec<u8>,
    abbrevs: gimli::Abbreviations,
    /// (begin, end, entry offset) of every function's address ranges, sorted by begin.
    functions: Vec<(u64, u64, u64)>,
    sequences: Vec<Sequence>,
    rows: Vec<Row>,
    /// File paths by line-table file index, rendered as `addr2line` does.
    files: Vec<Option<String>>,
    /// The unit's base address (its `DW_AT_low_pc`), for range lists.
    base: u64,
}

/// What [`Unit::read`]'s pass over a DIE collects: its address ranges.
#[derive(Default)]
struct Ranges {
    low: Option<u64>,
    high: Option<u64>,
    size: Option<u64>,
    list: Option<u64>,
}

impl Unit {
    fn header(&self) -> Result<gimli::UnitHeader<Slice<'_>>, Decline> {
        let info = gimli::DebugInfo::new(&self.bytes, NativeEndian);
        info.units().next()?.ok_or(Decline::Dwarf)
    }

    fn read(object: &mut Object, at: u64) -> Result<Unit, Decline> {
        // The unit's length first, then all of it.
        let total = entry_length(&object.read(object.info, at, 12)?)?;
        let bytes = object.read(object.info, at, total as usize)?;
        let mut unit = Unit {
            bytes,
            abbrevs: gimli::Abbreviations::default(),
            functions: Vec::new(),
            sequences: Vec::new(),
            rows: Vec::new(),
            files: Vec::new(),
            base: 0,
        };
        let header = unit.header()?;
        if !(2..=4).contains(&header.version()) {
            // DWARF 5 keeps addresses, strings and range lists behind indexes this
            // reader does not follow.
            return Err(Decline::Unsupported);
        }
        let encoding = header.encoding();
        let abbrevs =
            header.abbreviations(&gimli::DebugAbbrev::new(&object.abbrev, NativeEndian))?;

        let mut entries = header.entries_raw(&abbrevs, None)?;
        let root = entries.read_abbreviation()?.ok_or(Decline::Dwarf)?;
        if root.tag() != gimli::DW_TAG_compile_unit {
            return Err(Decline::Unsupported);
        }
        let mut comp_dir = None;
        let mut comp_name = None;
        let mut stmt_list = None;
        let mut base = 0;
        for spec in root.attributes() {
            let attr = entries.read_attribute(*spec)?;
            match attr.name() {
                gimli::DW_AT_comp_dir => comp_dir = object.attr_string(&attr.value())?,
                gimli::DW_AT_name => comp_name = object.attr_string(&attr.value())?,
                gimli::DW_AT_stmt_list => {
                    if let AttributeValue::DebugLineRef(o) = attr.value() {
                        stmt_list = Some(o.0 as u64);
                    }
                }
                gimli::DW_AT_low_pc => {
                    if let AttributeValue::Addr(a) = attr.value() {
                        base = a;
                    }
                }
                _ => {}
            }
        }

        // Every function's ranges (nested ones too, as `addr2line` indexes them).
        let mut functions = Vec::new();
        while !entries.is_empty() {
            let offset = entries.next_offset().0 as u64;
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            if abbrev.tag() != gimli::DW_TAG_subprogram {
                entries.skip_attributes(abbrev.attributes())?;
                continue;
            }
            let mut ranges = Ranges::default();
            for spec in abbrev.attributes() {
                let attr = entries.read_attribute(*spec)?;
                ranges.note(&attr);
            }
            object.for_each_range(&ranges, encoding, base, |b, e| {
                functions.push((b, e, offset))
            })?;
        }
        functions.sort_unstable_by_key(|f| f.0);
        unit.functions = functions;
        unit.abbrevs = abbrevs;
        unit.base = base;

        if let Some(at) = stmt_list {
            unit.read_lines(object, at, encoding.address_size, comp_dir, comp_name)?;
        }
        Ok(unit)
    }

    /// Runs the unit's line program once: its rows by sequence (at one address the last
    /// row wins; empty sequences dropped) and its file paths.
    fn read_lines(
        &mut self,
        object: &mut Object,
        at: u64,
        address_size: u8,
        comp_dir: Option<Vec<u8>>,
        comp_name: Option<Vec<u8>>,
    ) -> Result<(), Decline> {
        let total = entry_length(&object.read(object.line, at, 12)?)?;
        let program_bytes = object.read(object.line, at, total as usize)?;
        let program = gimli::DebugLine::new(&program_bytes, NativeEndian).program(
            gimli::DebugLineOffset(0),
            address_size,
            comp_dir
                .as_deref()
                .map(|d| EndianSlice::new(d, NativeEndian)),
            comp_name
                .as_deref()
                .map(|n| EndianSlice::new(n, NativeEndian)),
        )?;
        let mut rows = program.rows();
        let mut seq_start = self.rows.len();
        while let Some((_, row)) = rows.next_row()? {
            if row.end_sequence() {
                let end = row.address();
                if let Some(first) = self.rows.get(seq_start) {
                    if first.address < end {
                        self.sequences.push(Sequence {
                            start: first.address,
                            end,
                            rows: seq_start..self.rows.len(),
                        });
                    } else {
                        self.rows.truncate(seq_start);
                    }
                }
                seq_start = self.rows.len();
                continue;
            }
            let new = Row {
                address: row.address(),
                file: row.file_index(),
                line: row.line().map_or(0, |l| l.get() as u32),
            };
            let in_sequence = self.rows.len() > seq_start;
            match self.rows.last_mut() {
                Some(last) if in_sequence && last.address == new.address => *last = new,
                _ => self.rows.push(new),
            }
        }
        self.rows.truncate(seq_start);
        self.sequences.sort_unstable_by_key(|s| s.start);

        let header = rows.header();
        let comp_dir = match &comp_dir {
            Some(d) => String::from_utf8_lossy(d).into_owned(),
            None => String::new(),
        };
        let mut files = Vec::new();
        let mut index = 0;
        loop {
            let Some(entry) = header.file(index) else {
                if index == 0 {
                    // DWARF 4 may have no entry 0; `addr2line` keeps an empty path there.
                    files.push(Some(String::new()));
                    index += 1;
                    continue;
                }
                break;
            };
            let mut path = comp_dir.clone();
            if entry.directory_index() != 0
                && let Some(dir) = entry.directory(header)
            {
                let dir = object.attr_string(&dir)?.ok_or(Decline::Dwarf)?;
                path_push(&mut path, &String::from_utf8_lossy(&dir));
            }
            let name = object
                .attr_string(&entry.path_name())?
                .ok_or(Decline::Dwarf)?;
            path_push(&mut path, &String::from_utf8_lossy(&name));
            files.push(Some(path));
            index += 1;
        }
        self.files = files;
        Ok(())
    }

    fn file(&self, index: u64) -> Option<&str> {
        self.files.get(usize::try_from(index).ok()?)?.as_deref()
    }

    /// The entry offset of the function covering `probe`.
    fn function_at(&self, probe: u64) -> Option<u64> {
        let i = self
            .functions
            .partition_point(|f| f.0 <= probe)
            .checked_sub(1)?;
        let (_, end, die) = self.functions[i];
        (probe < end).then_some(die)
    }

    /// The line table's location for `probe`.
    fn location_at(&self, probe: u64) -> Option<Location> {
        let s = self
            .sequences
            .partition_point(|s| s.start <= probe)
            .checked_sub(1)?;
        let seq = &self.sequences[s];
        if probe >= seq.end {
            return None;
        }
        let rows = &self.rows[seq.rows.clone()];
        let r = rows
            .partition_point(|r| r.address <= probe)
            .checked_sub(1)?;
        let row = rows[r];
        Some(Location {
            file: self.file(row.file).map(str::to_owned),
            line: (row.line != 0).then_some(row.line),
        })
    }

    /// The function at `die`'s name attributes and the inlined calls under it that cover
    /// `probe`, outermost first.
    fn inline_chain(
        &self,
        object: &Object,
        die: u64,
        probe: u64,
    ) -> Result<(NameAttrs, Vec<InlinedCall>), Decline> {
        let header = self.header()?;
        let encoding = header.encoding();
        let mut entries =
            header.entries_raw(&self.abbrevs, Some(gimli::UnitOffset(die as usize)))?;
        let depth = entries.next_depth();
        let abbrev = entries.read_abbreviation()?.ok_or(Decline::Dwarf)?;
        let mut name = NameAttrs::default();
        for spec in abbrev.attributes() {
            let attr = entries.read_attribute(*spec)?;
            name.note(&attr);
        }
        let mut chain = Vec::new();
        // Walk the function's subtree. An inlined call not covering the probe is skipped
        // with everything under it; one covering it joins the chain and the walk goes on
        // inside it; leaving it ends the walk. Other entries (lexical blocks) are
        // transparent; nested functions are skipped.
        let mut inside = depth;
        loop {
            let d = entries.next_depth();
            if d <= inside || entries.is_empty() {
                break;
            }
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            match abbrev.tag() {
                gimli::DW_TAG_inlined_subroutine => {
                    let mut ranges = Ranges::default();
                    let mut call = InlinedCall {
                        name: NameAttrs::default(),
                        file: None,
                        line: 0,
                    };
                    for spec in abbrev.attributes() {
                        let attr = entries.read_attribute(*spec)?;
                        ranges.note(&attr);
                        call.name.note(&attr);
                        match attr.name() {
                            gimli::DW_AT_call_file => {
                                if let AttributeValue::FileIndex(f) = attr.value()
                                    && f > 0
                                {
                                    call.file = Some(f);
                                }
                            }
                            gimli::DW_AT_call_line => {
                                call.line = attr.udata_value().unwrap_or(0) as u32;
                            }
                            _ => {}
                        }
                    }
                    let mut covers = false;
                    object.for_each_range(&ranges, encoding, self.base, |b, e| {
                        covers |= b <= probe && probe < e;
                    })?;
                    if covers {
                        chain.push(call);
                        inside = d;
                    } else if abbrev.has_children() {
                        skip_subtree(&mut entries, d)?;
                    }
                }
                gimli::DW_TAG_subprogram => {
                    entries.skip_attributes(abbrev.attributes())?;
                    if abbrev.has_children() {
                        skip_subtree(&mut entries, d)?;
                    }
                }
                _ => entries.skip_attributes(abbrev.attributes())?,
            }
        }
        Ok((name, chain))
    }

    /// The name attributes of the entry at `die`.
    fn name_attrs(&self, die: u64) -> Result<NameAttrs, Decline> {
        let header = self.header()?;
        let mut entries =
            header.entries_raw(&self.abbrevs, Some(gimli::UnitOffset(die as usize)))?;
        let abbrev = entries.read_abbreviation()?.ok_or(Decline::Dwarf)?;
        let mut name = NameAttrs::default();
        for spec in abbrev.attributes() {
            let attr = entries.read_attribute(*spec)?;
            name.note(&attr);
        }
        Ok(name)
    }
}

/// Skips everything below the entry just read (at depth `depth`).
fn skip_subtree(
    entries: &mut gimli::EntriesRaw<'_, Slice<'_>>,
    depth: isize,
) -> Result<(), Decline> {
    while entries.next_depth() > depth && !entries.is_empty() {
        if let Some(abbrev) = entries.read_abbreviation()? {
            entries.skip_attributes(abbrev.attributes())?;
        }
    }
    Ok(())
}

impl NameAttrs {
    fn note(&mut self, attr: &gimli::Attribute<Slice<'_>>) {
        let string = |v: AttributeValue<Slice<'_>>| match v {
            AttributeValue::String(s) => Some(StrRef::Inline(s.slice().to_vec())),
            AttributeValue::DebugStrRef(o) => Some(StrRef::Str(o.0 as u64)),
            AttributeValue::DebugLineStrRef(o) => Some(StrRef::LineStr(o.0 as u64)),
            _ => None,
        };
        match attr.name() {
            gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                if let Some(s) = string(attr.value()) {
                    self.0.push(NameAttr::Linkage(s));
                }
            }
            gimli::DW_AT_name => {
                if let Some(s) = string(attr.value()) {
                    self.0.push(NameAttr::Name(s));
                }
            }
            gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => match attr.value() {
                AttributeValue::UnitRef(o) => self.0.push(NameAttr::Origin(Ref::Unit(o.0 as u64))),
                AttributeValue::DebugInfoRef(o) => {
                    self.0.push(NameAttr::Origin(Ref::Info(o.0 as u64)));
                }
                _ => {}
            },
            _ => {}
        }
    }
}

impl Ranges {
    fn note(&mut self, attr: &gimli::Attribute<Slice<'_>>) {
        match (attr.name(), attr.value()) {
            (gimli::DW_AT_low_pc, AttributeValue::Addr(a)) => self.low = Some(a),
            (gimli::DW_AT_high_pc, AttributeValue::Addr(a)) => self.high = Some(a),
            (gimli::DW_AT_high_pc, AttributeValue::Udata(s)) => self.size = Some(s),
            (gimli::DW_AT_ranges, AttributeValue::RangeListsRef(o)) => self.list = Some(o.0 as u64),
            _ => {}
        }
    }
}

/// Joins `p` to `path` as `addr2line` does: an absolute `p` replaces it.
fn path_push(path: &mut String, p: &str) {
    let rooted = |s: &str| {
        s.starts_with('/')
            || s.starts_with('\\')
            || s.get(1..3) == Some(":/")
            || s.get(1..3) == Some(":\\")
    };
    if rooted(p) {
        *path = p.to_owned();
        return;
    }
    let windows = path.starts_with('\\') || path.get(1..3) == Some(":\\");
    let sep = if windows { '\\' } else { '/' };
    if !path.is_empty() && !path.ends_with(sep) {
        path.push(sep);
    }
    path.push_str(p);
}
