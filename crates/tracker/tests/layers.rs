//! The tracker's import graph: no cycle between its files and no upward import between
//! its layers; and the crate depends on nothing of HTTP, WebSocket, the CLI, Prometheus or
//! the async runtime. The graph checker itself is `support/import_graph.rs`, which other
//! crates of the workspace can include for their own layers.

#[path = "support/import_graph.rs"]
mod import_graph;

use std::path::Path;

use import_graph::{Rules, check, graph};

/// The tracker's layers, lowest first (see docs/ARCHITECTURE.md, "The tracker"). A file
/// imports only from its own layer or lower ones.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base: no tracker imports",
        &[
            "config", "counters", "error", "filter", "guard", "region", "sampler", "sources",
            "sysmem",
        ],
    ),
    (
        "structures",
        &[
            "lock",
            "stacks",
            "table",
            "unwind",
            "snapshot",
            "symbolize",
            "evidence",
        ],
    ),
    (
        "recording and reports",
        &["recorder", "stats", "baselines", "checkpoints"],
    ),
    ("glue", &["allocator", "export"]),
    ("public API", &[""]),
];

fn src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn tracker_files_form_no_cycle_and_import_only_downwards() {
    let rules = Rules {
        layers: LAYERS,
        allowed: &[],
    };
    if let Err(problems) = check(&src(), &rules) {
        panic!("{}", problems.join("\n"));
    }
}

#[test]
fn the_graph_sees_the_edges_the_layers_rest_on() {
    // A checker that reads nothing would pass the test above: pin a few known edges.
    let g = graph(&src());
    let edges = |from: &str| g.get(from).cloned().unwrap_or_default();
    assert!(edges("allocator").contains("recorder"), "{g:?}");
    assert!(edges("allocator").contains("counters"), "{g:?}");
    assert!(edges("recorder").contains("guard"), "{g:?}");
    assert!(edges("lock").contains("guard"), "{g:?}");
    assert!(edges("stats").contains("snapshot"), "{g:?}");
    assert!(edges("symbolize").contains("sources"), "{g:?}");
    // The cycles this layout removed stay removed.
    assert!(!edges("snapshot").contains("stats"), "{g:?}");
    assert!(!edges("recorder").contains("allocator"), "{g:?}");
    assert!(!edges("symbolize").contains("recorder"), "{g:?}");
}

/// Writes `files` (path under src/, contents) into a fresh directory.
fn fixture(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("layers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    dir
}

#[test]
fn the_checker_reports_cycles_and_upward_imports() {
    let dir = fixture(
        "bad",
        &[
            ("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::A;\n"),
            ("a.rs", "use crate::b::B;\npub struct A(B);\n"),
            // The cycle goes through a group and an expression path; a path in a comment
            // or a string does not count.
            (
                "b.rs",
                "use super::{c, a};\n// use crate::lib_only;\npub struct B;\nfn f() { let _ = \"crate::x\"; super::a::g(); }\n",
            ),
            (
                "c.rs",
                "pub fn h() { crate::inner::deep(); }\n#[cfg(test)]\nmod tests { use super::super::a; }\n",
            ),
        ],
    );
    let layers: &[(&str, &[&str])] = &[("low", &["b", "c"]), ("high", &["a", ""])];
    let problems = check(
        &dir,
        &Rules {
            layers,
            allowed: &[],
        },
    )
    .expect_err("problems");
    let text = problems.join("\n");
    assert!(text.contains("import cycle among: a, b, c"), "{text}");
    assert!(
        text.contains("upward import: b (layer low) uses a (layer high)"),
        "{text}"
    );
    assert!(
        text.contains("upward import: c (layer low) uses a (layer high)"),
        "{text}"
    );
    assert!(
        text.contains("upward import: c (layer low) uses (crate root)"),
        "{text}"
    );
    // Allowing the edges that close the loop and climb clears everything.
    let allowed = [("b", "a"), ("c", "a"), ("c", "")];
    assert_eq!(
        check(
            &dir,
            &Rules {
                layers,
                allowed: &allowed
            }
        ),
        Ok(())
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A crate with a binary beside its library, whose root re-exports another crate under a
/// module-like name: `main.rs` is not the root, and a path through the alias is no edge.
#[test]
fn the_checker_skips_the_binary_and_paths_into_other_crates() {
    let dir = fixture(
        "alias",
        &[
            (
                "lib.rs",
                "pub mod low;
pub use other_crate as mem;
pub struct Root;
",
            ),
            (
                "main.rs",
                "fn main() { mycrate::low::f(); }
",
            ),
            (
                "low.rs",
                "use crate::mem::Thing;
pub fn f() {}
",
            ),
            (
                "up.rs",
                "use crate::Root;
",
            ),
        ],
    );
    let g = graph(&dir);
    assert_eq!(g.get("low").map(|t| t.len()), Some(0), "{g:?}");
    assert!(
        g["up"].contains(""),
        "a real root item is still an edge: {g:?}"
    );
    assert!(!g.contains_key("mem"), "{g:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_tracker_depends_on_no_transport_runtime_or_cli_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let deps: Vec<&str> = manifest
        .split("\n[")
        .find(|section| section.starts_with("dependencies]"))
        .expect("[dependencies]")
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .collect();
    let allowed = [
        "backtrace",
        "flate2",
        "gimli",
        "libc",
        "object",
        "thiserror",
    ];
    for dep in &deps {
        assert!(
            allowed.contains(dep),
            "{dep}: the tracker takes only what tracking and symbolizing need ({allowed:?})"
        );
    }
}
