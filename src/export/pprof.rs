//! The pprof format: a gzipped `perftools.profiles.Profile` (profile.proto) with two
//! sample types, `inuse_objects/count` and `inuse_space/bytes`, fully symbolized, so
//! `go tool pprof` shows functions, files and lines without the binary at hand.
//!
//! The messages are written here as prost-derive structs with profile.proto's field
//! numbers (only the fields we fill; readers skip absent ones). prost does the wire
//! encoding, flate2 the gzip.
//!
//! Mapping: one, for the running binary (its executable segment from /proc/self/maps,
//! its path and GNU build ID). Addresses in other objects (libc) get mapping 0. Values are
//! what the tracker reports: in sampled mode already-scaled unbiased estimates, which is
//! said in `period` (the mean sampling interval) and in a comment.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;
use std::time::SystemTime;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use crate::memory::{ExportStack, Snapshot};

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Index 0 must be "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// String-table indices.
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// String-table index of the sample type shown by default.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// `ValueType`: string-table indices of a type and its unit.
#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `Sample`: a stack (leaf first) and one value per sample type.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

/// `Mapping`: a mapped object file.
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `Location`: one address; its lines are the inlined functions, callee first.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

/// `Line`.
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// `Function`.
#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// The running binary as pprof's mapping describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinaryInfo {
    pub path: String,
    /// Lower-case hex of the GNU build-ID note; empty when the binary has none.
    pub build_id: String,
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
}

/// The running binary's mapping, read once (the build ID needs the ELF file's notes).
pub fn binary_info() -> &'static BinaryInfo {
    static INFO: OnceLock<BinaryInfo> = OnceLock::new();
    INFO.get_or_init(|| {
        let path = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let (memory_start, memory_limit, file_offset) =
            executable_segment(&maps, &path).unwrap_or((0, 0, 0));
        BinaryInfo {
            build_id: read_build_id("/proc/self/exe").unwrap_or_default(),
            path,
            memory_start,
            memory_limit,
            file_offset,
        }
    })
}

/// The GNU build ID of the ELF file at `path`, as lower-case hex. Reads only the headers
/// and the note (through `object`'s read cache), not the whole file.
pub fn read_build_id(path: &str) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).ok()?;
    let id = object::Object::build_id(&obj).ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// (start, end, offset) of `path`'s executable mapping in /proc/self/maps text: from
/// the first executable segment's start to the last one's end.
fn executable_segment(maps: &str, path: &str) -> Option<(u64, u64, u64)> {
    let mut found: Option<(u64, u64, u64)> = None;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(offset)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let file = fields.nth(2).unwrap_or("");
        if file != path || !perms.contains('x') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        found = Some(match found {
            None => (start, end, offset),
            Some((s, e, o)) => (s.min(start), e.max(end), o),
        });
    }
    found
}

/// Interns strings into the profile's string table (index 0 is "").
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Builds the profile of `snapshot`, whose stacks (from
/// [`Snapshot::symbolized_stacks`]) are `stacks`.
pub fn profile(snapshot: &Snapshot, stacks: &[ExportStack], binary: &BinaryInfo) -> Profile {
    let mut strings = Strings::new();
    let objects = strings.get("inuse_objects");
    let count = strings.get("count");
    let space = strings.get("inuse_space");
    let bytes = strings.get("bytes");
    let mut comment =
        vec![strings.get(
            "heapwatch: live heap by allocation stack (blocks allocated since tracking started)",
        )];
    let (period, note) = match snapshot.sample_interval_bytes {
        Some(interval) => (
            to_i64(interval),
            format!(
                "sampled: values are unbiased estimates (Poisson sampling by bytes, mean interval {interval} bytes)"
            ),
        ),
        None => (
            1,
            "exact: every allocation recorded; values are exact".to_owned(),
        ),
    };
    comment.push(strings.get(&note));
    // The evidence the format has room for: how many recorded blocks the values rest on
    // (per-stack counts and standard errors are in debug/memory_snapshot's rows).
    let samples = format!(
        "samples: {} recorded blocks behind these values",
        snapshot.sample_count()
    );
    comment.push(strings.get(&samples));

    let mapping = Mapping {
        id: 1,
        memory_start: binary.memory_start,
        memory_limit: binary.memory_limit,
        file_offset: binary.file_offset,
        filename: strings.get(&binary.path),
        build_id: strings.get(&binary.build_id),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    };
    let in_binary = |addr: u64| {
        if (binary.memory_start..binary.memory_limit).contains(&addr) {
            1
        } else {
            0
        }
    };

    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut function_id = |strings: &mut Strings, name: &str, file: &str| -> u64 {
        let key = (name.to_owned(), file.to_owned());
        if let Some(&id) = function_ids.get(&key) {
            return id;
        }
        let id = functions.len() as u64 + 1;
        let name = strings.get(name);
        functions.push(Function {
            id,
            name,
            system_name: name,
            filename: strings.get(file),
        });
        function_ids.insert(key, id);
        id
    };
    let mut locations: Vec<Location> = Vec::new();
    let mut location_ids: HashMap<u64, u64> = HashMap::new();
    let mut synthetic: HashMap<&'static str, u64> = HashMap::new();
    let mut samples = Vec::with_capacity(stacks.len());

    for stack in stacks {
        let mut ids = Vec::with_capacity(stack.locations.len());
        for loc in &stack.locations {
            if let Some(&id) = location_ids.get(&loc.address) {
                ids.push(id);
                continue;
            }
            let line = loc
                .frames
                .iter()
                .map(|f| {
                    let name = f.function.clone();
                    Line {
                        function_id: function_id(
                            &mut strings,
                            &name,
                            f.file.as_deref().unwrap_or(""),
                        ),
                        line: i64::from(f.line.unwrap_or(0)),
                    }
                })
                .collect();
            let id = locations.len() as u64 + 1;
            locations.push(Location {
                id,
                mapping_id: in_binary(loc.address),
                address: loc.address,
                line,
            });
            location_ids.insert(loc.address, id);
            ids.push(id);
        }
        if ids.is_empty() {
            // The overflow bucket, or a walk that recorded nothing: one named frame, so
            // the bytes still show (and add up) in every view.
            let name = if stack.overflow {
                "<other stacks> (stack table full)"
            } else {
                "<no frames>"
            };
            let id = *synthetic.entry(name).or_insert_with(|| {
                let id = locations.len() as u64 + 1;
                let function_id = function_id(&mut strings, name, "");
                locations.push(Location {
                    id,
                    mapping_id: 0,
                    address: 0,
                    line: vec![Line {
                        function_id,
                        line: 0,
                    }],
                });
                id
            });
            ids.push(id);
        }
        samples.push(Sample {
            location_id: ids,
            value: vec![to_i64(stack.count), to_i64(stack.bytes)],
        });
    }

    let taken_at = snapshot.taken_at.unwrap_or_else(SystemTime::now);
    let duration = snapshot
        .tracking_since
        .and_then(|since| taken_at.duration_since(since).ok())
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Profile {
        sample_type: vec![
            ValueType {
                r#type: objects,
                unit: count,
            },
            ValueType {
                r#type: space,
                unit: bytes,
            },
        ],
        sample: samples,
        mapping: vec![mapping],
        location: locations,
        function: functions,
        time_nanos: nanos(taken_at),
        duration_nanos: duration,
        period_type: Some(ValueType {
            r#type: strings.get("space"),
            unit: bytes,
        }),
        period,
        comment,
        default_sample_type: space,
        string_table: strings.table,
    }
}

/// The profile encoded and gzipped, as `/api/memory/profile.pb.gz` serves it.
///
/// # Errors
/// Only if gzip fails writing to memory (it does not in practice).
pub fn encode_gzip(profile: &Profile) -> std::io::Result<Vec<u8>> {
    let raw = profile.encode_to_vec();
    let mut gz = GzEncoder::new(Vec::with_capacity(raw.len() / 3), Compression::default());
    gz.write_all(&raw)?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ExportLocation, Frame};
    use std::io::Read;

    fn frame(function: &str, line: u32) -> Frame {
        Frame::new(function, Some("src/x.rs".to_owned()), Some(line))
    }

    #[test]
    fn profile_round_trips_with_strings_locations_and_functions() {
        let binary = BinaryInfo {
            path: "/bin/x".into(),
            build_id: "abcd".into(),
            memory_start: 0x1000,
            memory_limit: 0x9000,
            file_offset: 0,
        };
        let stacks = vec![
            ExportStack {
                locations: vec![
                    ExportLocation {
                        address: 0x1100,
                        frames: vec![frame("leaf_inlined", 3), frame("leaf", 7)],
                    },
                    ExportLocation {
                        address: 0x2200,
                        frames: vec![frame("main", 9)],
                    },
                ],
                bytes: 4096,
                count: 2,
                overflow: false,
                truncated: false,
            },
            ExportStack {
                locations: Vec::new(),
                bytes: 10,
                count: 1,
                overflow: true,
                truncated: false,
            },
        ];
        // Field by field: the snapshot's other fields are private to the tracker crate.
        let mut snap = Snapshot::default();
        snap.taken_at = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100));
        snap.tracking_since = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(40));
        snap.sample_interval_bytes = Some(512 * 1024);
        snap.estimated = true;
        let p = profile(&snap, &stacks, &binary);
        let gz = encode_gzip(&p).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let back = Profile::decode(&raw[..]).unwrap();
        assert_eq!(back, p);
        let s = |i: i64| back.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(
            back.sample_type
                .iter()
                .map(|t| (s(t.r#type), s(t.unit)))
                .collect::<Vec<_>>(),
            [("inuse_objects", "count"), ("inuse_space", "bytes")]
        );
        assert_eq!(s(back.default_sample_type), "inuse_space");
        assert_eq!(back.period, 512 * 1024);
        assert_eq!(back.time_nanos, 100_000_000_000);
        assert_eq!(back.duration_nanos, 60_000_000_000);
        assert!(back.comment.iter().any(|&c| s(c).contains("estimates")));
        assert!(back.comment.iter().any(|&c| s(c).starts_with("samples: ")
            && s(c).ends_with(" recorded blocks behind these values")));
        assert_eq!(back.sample[0].value, [2, 4096]);
        assert_eq!(back.sample[0].location_id, [1, 2]);
        let leaf = &back.location[0];
        assert_eq!(leaf.mapping_id, 1);
        let names: Vec<_> = leaf
            .line
            .iter()
            .map(|l| s(back.function[l.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["leaf_inlined", "leaf"]);
        let other = &back.location[back.sample[1].location_id[0] as usize - 1];
        assert_eq!(
            s(back.function[other.line[0].function_id as usize - 1].name),
            "<other stacks> (stack table full)"
        );
        assert_eq!(s(back.mapping[0].build_id), "abcd");
    }

    #[test]
    fn maps_lines_give_the_executable_range() {
        let maps = "\
55d0a0000000-55d0a0100000 r--p 00000000 08:01 42 /opt/heapwatch
55d0a0100000-55d0a0500000 r-xp 00100000 08:01 42 /opt/heapwatch
55d0a0500000-55d0a0600000 r--p 00500000 08:01 42 /opt/heapwatch
7f0000000000-7f0000100000 r-xp 00000000 08:01 77 /usr/lib/libc.so.6
";
        assert_eq!(
            executable_segment(maps, "/opt/heapwatch"),
            Some((0x55d0a0100000, 0x55d0a0500000, 0x100000))
        );
        assert_eq!(executable_segment(maps, "/nope"), None);
    }

    #[test]
    fn this_test_binary_has_a_build_id() {
        let info = binary_info();
        assert!(info.memory_limit > info.memory_start, "{info:?}");
        // Debian's linker adds a GNU build ID by default; 20 bytes (SHA-1) is usual.
        assert!(
            info.build_id.len() >= 16 && info.build_id.chars().all(|c| c.is_ascii_hexdigit()),
            "{info:?}"
        );
    }
}
