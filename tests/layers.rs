//! The add-on crate's layers run one way (docs/ARCHITECTURE.md, "Layers"): entry →
//! transport → commands → domain → base. This test reads every file under `src/`, finds
//! what each refers to through `crate::…` and `super::…` paths, and fails on
//! - an upward reference (a domain module naming a command, a command naming a transport),
//! - a cycle of modules that spans more than one top-level module (a cycle inside one
//!   module, such as `commands` and its submodules, is that module's own business).
//!
//! Comment lines are skipped, so docs may still mention a higher layer by name. Set
//! `LAYERS_SRC` to check another tree (the commit before the layers were fixed fails with
//! the cycle app → commands → http → … that this test was written against).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer, lowest first. A module missing here fails the test: a
/// new room must be placed on purpose.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["settings", "logging", "limits", "gate"]),
    (
        "domain",
        &["memory", "system", "trend", "export", "heap", "host"],
    ),
    ("commands", &["commands"]),
    ("transport", &["http", "ws"]),
    ("entry", &["app", "lib", "healthcheck"]),
];

fn rank(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, mods)| mods.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` has no layer in tests/layers.rs"))
}

/// `src/commands/debug.rs` → `commands::debug`; `src/http/mod.rs` → `http`;
/// `src/lib.rs` → `lib`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") && parts.len() > 1 {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `a::b::c` paths after every `crate::` or `super::` in the code lines of `text`
/// (with `{` groups flattened to their first segment: `crate::x::{a, b}` is `x`).
fn paths_after(text: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            // `foo_super::` is not `super::`.
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(path.trim_end_matches(':').to_string());
        }
    }
    found
}

/// The longest known module that `path` starts with (items are dropped).
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| modules.contains(candidate))
}

fn top(module: &str) -> &str {
    module.split("::").next().expect("non-empty")
}

/// The module graph of `src/`: module → the modules it refers to.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(src, f))
        .filter(|m| m != "main")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        if from == "main" {
            continue; // the binary's root: it uses the library as `heapwatch::…`
        }
        let text = std::fs::read_to_string(file).expect("readable");
        // `super` of `commands::debug` is `commands`; of `commands` (mod.rs) the root.
        let parent = from.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let mut targets = Vec::new();
        for p in paths_after(&text, "crate::") {
            targets.push(p);
        }
        for p in paths_after(&text, "super::") {
            targets.push(if parent.is_empty() {
                p
            } else {
                format!("{parent}::{p}")
            });
        }
        let entry = edges.entry(from.clone()).or_default();
        for t in targets {
            if let Some(to) = resolve(&t, &modules)
                && to != from
            {
                entry.insert(to);
            }
        }
    }
    edges
}

fn upward(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, tos) in edges {
        for to in tos {
            if rank(top(to)) > rank(top(from)) {
                bad.push(format!("{from} → {to}"));
            }
        }
    }
    bad
}

/// Strongly connected components with more than one member (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(tos) = s.edges.get(v) {
            for w in tos {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn src() -> PathBuf {
    std::env::var_os("LAYERS_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    )
}

#[test]
fn no_import_runs_upward() {
    let edges = graph(&src());
    assert!(
        edges.contains_key("commands::debug") && edges["commands::debug"].contains("heap"),
        "the scanner sees the crate's references: {edges:?}"
    );
    let bad = upward(&edges);
    assert!(bad.is_empty(), "upward references:\n{}", bad.join("\n"));
}

#[test]
fn no_cycle_spans_two_modules() {
    let edges = graph(&src());
    let spanning: Vec<_> = cycles(&edges)
        .into_iter()
        .filter(|c| c.iter().map(|m| top(m)).collect::<BTreeSet<_>>().len() > 1)
        .collect();
    assert!(spanning.is_empty(), "cycles across modules: {spanning:?}");
}

/// The checker itself: an upward edge and a cycle across modules, planted in a copy of a
/// tiny tree, are found.
#[test]
fn the_checker_finds_what_it_looks_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("commands")).unwrap();
    std::fs::write(root.join("lib.rs"), "pub mod commands;\npub mod trend;\n").unwrap();
    std::fs::write(
        root.join("commands/mod.rs"),
        "use crate::trend::Monitor;\n// use crate::http::x; (a comment)\n",
    )
    .unwrap();
    std::fs::write(root.join("trend.rs"), "use crate::commands::Shared;\n").unwrap();
    let edges = graph(root);
    assert_eq!(upward(&edges), vec!["trend → commands".to_string()]);
    assert_eq!(
        cycles(&edges),
        vec![vec!["commands".to_string(), "trend".to_string()]]
    );
}
