//! The exports over real sockets, with the tracker as this process's global allocator in
//! exact mode: pprof read by a real `go tool pprof`, folded stacks and flame graphs with
//! exact byte counts at known functions, Prometheus metrics checked by a real `promtool`,
//! the 409/404 answers, and authentication on the direct listener.
//!
//! One test, in order, because tracking is process-wide.

mod support;
#[path = "support/tools.rs"]
mod tools;

use std::hint::black_box;

use heapwatch::app::Limits;
use heapwatch::settings::MemoryMode;
use serde_json::json;
use support::*;

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

const BLOCK: usize = 4096;
const BLOCKS: usize = 1024;
const MORE: usize = 100;
const MORE_BLOCK: usize = 8192;

/// Holds `BLOCKS` blocks of 4 KiB allocated here (the vector itself is the caller's).
#[inline(never)]
fn hold_blocks(held: &mut Vec<Vec<u8>>) {
    for i in 0..BLOCKS {
        held.push(black_box(vec![i as u8; BLOCK]));
    }
}

/// Holds `MORE` blocks of 8 KiB allocated here: the growth after the baseline.
#[inline(never)]
fn hold_more(held: &mut Vec<Vec<u8>>) {
    for i in 0..MORE {
        held.push(black_box(vec![i as u8; MORE_BLOCK]));
    }
}

/// Two functions with the same bare name in different modules: pprof must show them as
/// two rows (`go tool pprof -top` merges rows by function name).
mod same_name {
    pub mod one {
        #[inline(never)]
        pub fn new() -> Vec<u8> {
            std::hint::black_box(vec![1u8; 3 * 4096])
        }
    }
    pub mod two {
        #[inline(never)]
        pub fn new() -> Vec<u8> {
            std::hint::black_box(vec![2u8; 5 * 4096])
        }
    }
}

/// `0x7fd5cbfab1f4`: an address where a name should be.
fn is_bare_hex(name: &str) -> bool {
    name.strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The function names of `go tool pprof -top` rows (after the five number columns).
fn top_rows(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 5).then(|| fields[5..].join(" "))
        })
        .collect()
}

/// 1,000 distinct allocation sites: `sites::aX::bY::cZ`, each its own function.
mod sites {
    macro_rules! sites {
        ([$($a:ident)*] $b:tt $c:tt) => {
            $( pub mod $a { sites!(@b $b $c); } )*
            pub const ALL: [[[fn(usize) -> Vec<u8>; 10]; 10]; 10] = [$($a::ALL),*];
        };
        (@b [$($b:ident)*] $c:tt) => {
            $( pub mod $b { sites!(@c $c); } )*
            pub const ALL: [[fn(usize) -> Vec<u8>; 10]; 10] = [$($b::ALL),*];
        };
        (@c [$($c:ident)*]) => {
            $(
                #[inline(never)]
                pub fn $c(n: usize) -> Vec<u8> {
                    std::hint::black_box(vec![1u8; n])
                }
            )*
            pub const ALL: [fn(usize) -> Vec<u8>; 10] = [$($c),*];
        };
    }
    sites!(
        [a0 a1 a2 a3 a4 a5 a6 a7 a8 a9]
        [b0 b1 b2 b3 b4 b5 b6 b7 b8 b9]
        [c0 c1 c2 c3 c4 c5 c6 c7 c8 c9]
    );
}

/// Folded lines (with `counts` numbers after the stack) whose innermost frame ends with
/// `function`.
/// `go tool pprof -top` with `flags`, then the profiles (a base before the profile with
/// `-diff_base`).
fn pprof_top(flags: &[&str], profiles: &[&std::path::Path]) -> String {
    let mut args = vec!["tool", "pprof", "-top"];
    args.extend_from_slice(flags);
    args.extend(
        profiles
            .iter()
            .map(|p| p.to_str().expect("a UTF-8 temp path")),
    );
    tools::run("go", &args)
}

fn lines_ending_in<'a>(folded: &'a str, counts: usize, function: &str) -> Vec<&'a str> {
    folded
        .lines()
        .filter(|l| {
            let stack = l.rsplitn(counts + 1, ' ').last().expect("a stack");
            stack
                .rsplit(';')
                .next()
                .is_some_and(|f| f.ends_with(function))
        })
        .collect()
}

const PATHS: [&str; 3] = [
    "/api/memory/profile.pb.gz",
    "/api/memory/folded",
    "/api/memory/flamegraph.svg",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_in_exact_mode() {
    let s = TestServer::start_with(
        |st| {
            st.debug_memory_mode = MemoryMode::Exact;
            st.debug_memory_frames = 64;
        },
        Limits::default(),
    )
    .await;
    let auth = format!("Bearer {TOKEN}");
    let bearer = [("authorization", auth.as_str())];

    // Tracking off: 409 with the JSON error body, on both listeners.
    for path in PATHS {
        for (addr, headers) in [(s.ingress, &[][..]), (s.direct(), &bearer[..])] {
            let r = get(addr, path, headers).await;
            assert_eq!(r.status, 409, "{path}");
            assert_eq!(r.json()["error_code"], "precondition_failed");
            assert!(
                r.json()["details"]
                    .as_str()
                    .unwrap()
                    .starts_with("tracking is off"),
                "{path}: {}",
                r.json()
            );
        }
    }

    // The direct listener wants the token on every export path.
    for path in PATHS.iter().chain(&["/metrics", "/api/memory/trend"]) {
        let r = get(s.direct(), path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error_code"], "not_authenticated");
        let r = get(s.direct(), path, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(r.status, 401, "{path}");
    }

    // GET (and HEAD) only.
    for path in PATHS.iter().chain(&["/metrics", "/api/memory/trend"]) {
        let r = request(s.ingress, "POST", path, &[], None).await;
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.header("allow").unwrap(), "GET, HEAD");
    }

    // Start tracking (exact) with an empty starting point.
    let mut ws = ws(s.ingress).await;
    let r = ws
        .call("s", "debug/memory_snapshot", json!({"save_as": "start"}))
        .await;
    assert_eq!(r["result"]["tracking"]["mode"], "exact", "{r}");
    // The client runs in the server's process: replies it keeps count in the tracked heap.
    drop(r);

    let mut held: Vec<Vec<u8>> = Vec::with_capacity(BLOCKS + MORE + 2);
    hold_blocks(&mut held);
    held.push(same_name::one::new());
    held.push(same_name::two::new());

    // Unknown baseline: 404 on each export.
    for path in PATHS {
        let r = get(s.ingress, &format!("{path}?baseline=nope"), &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error_code"], "not_found");
        let r = get(s.ingress, &format!("{path}?bogus=1"), &[]).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(r.json()["details"].as_str().unwrap().contains("bogus"));
    }

    // Folded: exactly one line ends in hold_blocks, with exactly its bytes.
    let r = get(s.direct(), "/api/memory/folded", &bearer).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    let folded = String::from_utf8(r.body).unwrap();
    let lines = lines_ending_in(&folded, 1, "exports::hold_blocks");
    assert_eq!(lines.len(), 1, "{folded}");
    assert!(
        lines[0].ends_with(&format!(" {}", BLOCKS * BLOCK)),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("exports::exports_in_exact_mode::{{closure}};exports::hold_blocks "),
        "caller then site, outermost first: {}",
        lines[0]
    );
    // Sorted lines, each `stack bytes`.
    let keys: Vec<&str> = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    // No frame is a bare address (code without symbols reads `libc.so.6+0x…`).
    for key in &keys {
        for frame in key.split(';') {
            assert!(!is_bare_hex(frame), "{frame} in {key}");
        }
    }

    // Flame graph: the frame and its exact bytes are in the SVG.
    let r = get(s.ingress, "/api/memory/flamegraph.svg", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").unwrap(), "image/svg+xml");
    let svg = String::from_utf8(r.body).unwrap();
    assert!(svg.starts_with("<?xml"), "{}", &svg[..100.min(svg.len())]);
    assert!(svg.contains("Heapwatch: live heap by allocation stack"));
    assert!(svg.contains("exact; taken "), "subtitle says exact");
    assert!(
        svg.contains("<title>exports::hold_blocks (4,194,304 bytes, "),
        "frame title with exact bytes"
    );

    // pprof: the profile of now, and a baseline saved with the 1,024 blocks.
    let dir = tempfile::tempdir().unwrap();
    let r = get(s.direct(), "/api/memory/profile.pb.gz", &bearer).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").unwrap(),
        "application/octet-stream"
    );
    assert!(
        r.header("content-disposition")
            .unwrap()
            .contains("heapwatch-heap.pb.gz")
    );
    assert_eq!(&r.body[..2], &[0x1f, 0x8b], "gzip magic");
    let first = dir.path().join("first.pb.gz");
    std::fs::write(&first, &r.body).unwrap();

    let r = ws
        .call("b", "debug/memory_snapshot", json!({"save_as": "before"}))
        .await;
    assert!(r["result"].is_object(), "{r}");
    drop(r);
    hold_more(&mut held);

    let r = get(s.ingress, "/api/memory/profile.pb.gz?baseline=before", &[]).await;
    assert_eq!(r.status, 200);
    let base = dir.path().join("base.pb.gz");
    std::fs::write(&base, &r.body).unwrap();
    let r = get(s.ingress, "/api/memory/profile.pb.gz", &[]).await;
    let now = dir.path().join("now.pb.gz");
    std::fs::write(&now, &r.body).unwrap();

    // Folded and flame graph against the baseline: `stack before after`.
    let r = get(s.ingress, "/api/memory/folded?baseline=before", &[]).await;
    assert_eq!(r.status, 200);
    let diff = String::from_utf8(r.body).unwrap();
    let more = lines_ending_in(&diff, 2, "exports::hold_more");
    assert_eq!(more.len(), 1, "{diff}");
    assert!(
        more[0].ends_with(&format!(" 0 {}", MORE * MORE_BLOCK)),
        "{}",
        more[0]
    );
    let blocks = lines_ending_in(&diff, 2, "exports::hold_blocks");
    assert_eq!(blocks.len(), 1, "{diff}");
    assert!(
        blocks[0].ends_with(&format!(" {0} {0}", BLOCKS * BLOCK)),
        "unchanged: {}",
        blocks[0]
    );
    let r = get(s.ingress, "/api/memory/flamegraph.svg?baseline=before", &[]).await;
    assert_eq!(r.status, 200);
    let svg = String::from_utf8(r.body).unwrap();
    assert!(
        svg.contains("compared with baseline"),
        "title names the baseline"
    );
    assert!(
        svg.contains("<title>exports::hold_more (819,200 bytes, "),
        "the grown frame: {}",
        svg.lines()
            .filter(|l| l.contains("hold_more"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Differential titles end with the change as a share of the total: grown, unchanged.
    let title = |function: &str| {
        let start = svg
            .find(&format!("<title>exports::{function} ("))
            .unwrap_or_else(|| panic!("{function} frame"));
        svg[start..].split("</title>").next().unwrap().to_owned()
    };
    assert!(
        title("hold_more").contains("%; +"),
        "{}",
        title("hold_more")
    );
    assert!(
        title("hold_blocks").ends_with("; 0.00%)"),
        "{}",
        title("hold_blocks")
    );

    if tools::require("go", "golang-go") {
        // Every row a distinct, qualified function: the two `new`s are two rows, no row
        // is a bare address, and every row of Rust code has its module path.
        let all = pprof_top(
            &[
                "-unit=B",
                "-sample_index=inuse_space",
                "-nodecount=100000",
                "-nodefraction=0",
            ],
            &[&first],
        );
        let names = top_rows(&all);
        assert!(names.len() > 10, "{all}");
        for (name, bytes) in [
            ("exports::same_name::one::new", 3 * 4096),
            ("exports::same_name::two::new", 5 * 4096),
        ] {
            let row = all
                .lines()
                .find(|l| l.trim_end().ends_with(name))
                .unwrap_or_else(|| panic!("{name} missing: {all}"));
            assert!(row.trim_start().starts_with(&format!("{bytes}B ")), "{row}");
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "rows distinct by name: {all}");
        for name in &names {
            assert!(!is_bare_hex(name), "{name}: {all}");
            // C code (libc) is named by its symbol or `file+0xoffset`, and the standard
            // library's linker-level helpers (`__rust_try`) by their unique symbols; Rust
            // functions by their path.
            assert!(
                name.contains("::")
                    || name.contains("+0x")
                    || name.starts_with('<')
                    || name.starts_with("__"),
                "a bare name would merge unrelated functions: {name}\n{all}"
            );
        }

        // The known allocating function is first by inuse_space.
        let top = pprof_top(&["-unit=B", "-sample_index=inuse_space"], &[&first]);
        assert!(top.contains("Build ID: "), "{top}");
        assert!(top.contains("exact: every allocation recorded"), "{top}");
        let first_row = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or_else(|| panic!("no rows: {top}"));
        assert!(first_row.contains("hold_blocks"), "{top}");
        assert!(
            first_row
                .trim_start()
                .starts_with(&format!("{}B ", BLOCKS * BLOCK)),
            "{top}"
        );

        // -diff_base shows exactly the growth.
        let diff = pprof_top(
            &["-unit=B", "-sample_index=inuse_space", "-diff_base"],
            &[&base, &now],
        );
        let row = diff
            .lines()
            .find(|l| l.contains("hold_more"))
            .unwrap_or_else(|| panic!("hold_more missing: {diff}"));
        assert!(
            row.trim_start()
                .starts_with(&format!("{}B ", MORE * MORE_BLOCK)),
            "{diff}"
        );
        assert!(
            !diff
                .lines()
                .any(|l| l.contains("hold_blocks") && !l.trim_start().starts_with("0 ")),
            "unchanged site has no flat difference: {diff}"
        );
        // The objects count too.
        let objects = pprof_top(
            &["-sample_index=inuse_objects", "-diff_base"],
            &[&base, &now],
        );
        let row = objects
            .lines()
            .find(|l| l.contains("hold_more"))
            .unwrap_or_else(|| panic!("{objects}"));
        assert!(
            row.trim_start().starts_with(&format!("{MORE} ")),
            "{objects}"
        );
    }

    // Prometheus: 1,000 sites exist, the site label has 10 series, the largest ten.
    let mut many: Vec<Vec<u8>> = Vec::with_capacity(1000);
    let mut size = 64;
    for a in sites::ALL {
        for b in a {
            for c in b {
                many.push(c(size));
                size += 8;
            }
        }
    }
    let r = ws
        .call(
            "m",
            "debug/memory_snapshot",
            json!({"group_by": "function", "top_n": 200}),
        )
        .await;
    let site_rows = r["result"]["top_allocators"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| {
            row["traceback"][0]
                .as_str()
                .unwrap()
                .contains("exports::sites::a")
        })
        .count();
    assert!(site_rows >= 190, "the sites are distinct: {site_rows}");
    for (addr, headers) in [(s.ingress, &[][..]), (s.direct(), &bearer[..])] {
        let r = get(addr, "/metrics", headers).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type").unwrap(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = String::from_utf8(r.body).unwrap();
        let site_series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("heapwatch_site_bytes{"))
            .collect();
        assert_eq!(site_series.len(), 10, "{text}");
        assert!(
            text.lines().any(|l| l
                .starts_with("heapwatch_site_bytes{site=\"exports::hold_blocks ")
                && l.ends_with(&format!(" {}", BLOCKS * BLOCK))),
            "the largest site with its exact bytes: {text}"
        );
        assert!(text.contains("\nheapwatch_tracking_enabled 1\n"), "{text}");
        assert!(
            text.contains("heapwatch_tracking_mode{mode=\"exact\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(
            text.contains("\nheapwatch_tracker_overhead_bytes "),
            "{text}"
        );
        if tools::require("promtool", "prometheus") {
            let (ok, out) =
                tools::run_with_stdin("promtool", &["check", "metrics"], text.as_bytes());
            assert!(ok, "promtool check metrics: {out}\n{text}");
        }
    }
    drop(black_box(many));
    drop(black_box(held));
    s.stop().await;
}
