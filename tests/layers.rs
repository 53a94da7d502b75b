//! The add-on crate's layers run one way (docs/ARCHITECTURE.md, "Layers"): entry →
//! transport → commands → domain → base. The graph checker is the tracker's
//! (`crates/tracker/tests/support/import_graph.rs`): every `crate::…` and `super::…` path
//! in code (not in comments or strings) is an edge, and the test fails on an upward edge
//! or an import cycle between files.

#[path = "../crates/tracker/tests/support/import_graph.rs"]
mod import_graph;

use std::path::{Path, PathBuf};

use import_graph::{Rules, check, graph};

/// Each top-level module's layer, lowest first. A module in no layer fails the test: a new
/// room must be placed on purpose. `""` is the library root (`lib.rs`).
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["settings", "logging", "limits", "gate"]),
    (
        "domain",
        &["memory", "system", "trend", "export", "heap", "host"],
    ),
    ("commands", &["commands"]),
    ("transport", &["http", "ws"]),
    ("entry", &["app", "", "healthcheck"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_import_runs_upward_and_no_files_form_a_cycle() {
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
    assert!(edges("commands::debug").contains("heap"), "{g:?}");
    assert!(edges("ws::session").contains("commands"), "{g:?}");
    assert!(edges("app").contains("http"), "{g:?}");
    assert!(edges("trend").contains("system"), "{g:?}");
}
