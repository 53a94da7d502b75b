//! A file-level import graph of one crate's sources, and the check that it has no cycle
//! and no upward edge between layers.
//!
//! Reusable by any crate of the workspace: include it with
//! `#[path = "…/crates/tracker/tests/support/import_graph.rs"] mod import_graph;` and call
//! [`check`] with the crate's `src/` and its layers. It needs nothing but `std`.
//!
//! What counts as an edge: every path starting with `crate::` or `super::` in code (not in
//! comments or string literals), in `use` items and in expressions alike, resolved to the
//! file that defines the module it names (`super::super::x` from an inline `mod tests` is
//! followed too). An item of the crate root (`crate::Foo`) is an edge to the root file.
//! `mod x;` declarations, and a parent's plain paths to its own children (`recorder::start`
//! in `lib.rs`), are not edges: a parent owning a child is not an import, and a child
//! never reaches its parent without `super::`/`crate::`. Edges of a file to itself are
//! dropped, and so are paths through a root `use other_crate as name;` (they leave the
//! crate).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`symbolize::debuginfo`; `""` for the crate root) → file.
type Modules = BTreeMap<String, PathBuf>;

/// The rules a crate's graph is checked against.
pub struct Rules<'a> {
    /// Layers, lowest first: a name and the modules in it (`"symbolize"`,
    /// `"symbolize::debuginfo"`; `""` is the crate root). A module not listed belongs to
    /// the layer of its nearest listed ancestor. A file may import files of its own layer
    /// or lower ones; an import of a higher layer is an upward edge.
    pub layers: &'a [(&'a str, &'a [&'a str])],
    /// Edges exempted from both checks, as (from module, to module).
    pub allowed: &'a [(&'a str, &'a str)],
}

/// The graph: for each module, the modules it imports (self-edges dropped).
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = modules(src);
    // `pub use other_crate as name;` in the root: `crate::name::…` leaves the crate. Such
    // names are entered as modules without a file, so paths through them resolve to them,
    // and are then dropped as targets.
    let external = modules
        .get("")
        .map(|root| external_aliases(&strip(&std::fs::read_to_string(root).unwrap_or_default())))
        .unwrap_or_default();
    for name in &external {
        modules.entry(name.clone()).or_default();
    }
    let mut out = BTreeMap::new();
    for (module, file) in &modules {
        if external.contains(module) {
            continue;
        }
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let mut targets = BTreeSet::new();
        for target in imports(&strip(&text), module, &modules) {
            if &target != module && !external.contains(&target) {
                targets.insert(target);
            }
        }
        out.insert(module.clone(), targets);
    }
    out
}

/// The names that `use some_crate as name;` items give other crates in (stripped) `text`.
fn external_aliases(text: &str) -> BTreeSet<String> {
    let toks = tokens(text);
    toks.windows(5)
        .filter(|w| {
            w[0] == "use"
                && !matches!(w[1], "crate" | "self" | "super")
                && is_ident(w[1].as_bytes()[0])
                && w[2] == "as"
                && w[4] == ";"
        })
        .map(|w| w[3].to_owned())
        .collect()
}

/// Checks `src` (a crate's source directory, holding `lib.rs` or `main.rs`) against
/// `rules`.
///
/// # Errors
/// One line per problem: a module in no layer, an upward edge, a cycle (its modules).
pub fn check(src: &Path, rules: &Rules) -> Result<(), Vec<String>> {
    let graph = graph(src);
    let allowed: BTreeSet<(&str, &str)> = rules.allowed.iter().copied().collect();
    let mut problems = Vec::new();
    let layer_of = |module: &str| -> Option<usize> {
        let mut m = module;
        loop {
            if let Some(i) = rules.layers.iter().position(|(_, ms)| ms.contains(&m)) {
                return Some(i);
            }
            if m.is_empty() {
                return None;
            }
            m = m.rfind("::").map_or("", |i| &m[..i]);
        }
    };
    let name = |m: &str| {
        if m.is_empty() {
            "(crate root)".to_owned()
        } else {
            m.to_owned()
        }
    };
    for (from, targets) in &graph {
        let Some(from_layer) = layer_of(from) else {
            problems.push(format!("{} is in no layer", name(from)));
            continue;
        };
        for to in targets {
            if allowed.contains(&(from.as_str(), to.as_str())) {
                continue;
            }
            if let Some(to_layer) = layer_of(to)
                && to_layer > from_layer
            {
                problems.push(format!(
                    "upward import: {} (layer {}) uses {} (layer {})",
                    name(from),
                    rules.layers[from_layer].0,
                    name(to),
                    rules.layers[to_layer].0
                ));
            }
        }
    }
    let kept: BTreeMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(from, targets)| {
            let to = targets
                .iter()
                .filter(|to| !allowed.contains(&(from.as_str(), to.as_str())))
                .map(String::as_str)
                .collect();
            (from.as_str(), to)
        })
        .collect();
    for cycle in cycles(&kept) {
        let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
        problems.push(format!("import cycle among: {}", names.join(", ")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The crate's file modules: `lib.rs` (else `main.rs`) is the root, `a.rs` and `a/mod.rs`
/// are `a`, `a/b.rs` is `a::b`. Beside a `lib.rs`, `main.rs` is the binary: it reaches the
/// library by the crate's name, never `crate::`, so it is left out.
fn modules(src: &Path) -> Modules {
    let mut out = Modules::new();
    let mut stack = vec![(src.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("UTF-8 file name")
                .to_owned();
            if path.is_dir() {
                let mut p = prefix.clone();
                p.push(stem);
                stack.push((path, p));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut p = prefix.clone();
                if prefix.is_empty() && stem == "main" && src.join("lib.rs").exists() {
                    continue;
                }
                let root = prefix.is_empty() && (stem == "lib" || stem == "main");
                if !root && stem != "mod" {
                    p.push(stem);
                }
                out.insert(p.join("::"), path);
            }
        }
    }
    out
}

/// `text` with comments, string and char literals blanked out (newlines kept), so that
/// paths in docs and messages are not read as imports.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        out.extend(b"  ");
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        out.extend(b"  ");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        blank(&mut out, b[i]);
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                // A raw string: r"…", r#"…"#, …
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    out.push(b[i]);
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let end = b[j + 1..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| j + 1 + p + close.len());
                for &c in &b[i..end] {
                    blank(&mut out, c);
                }
                i = end;
            }
            b'"' => {
                blank(&mut out, b[i]);
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        blank(&mut out, b[i]);
                        i += 1;
                    }
                    if i < b.len() {
                        blank(&mut out, b[i]);
                        i += 1;
                    }
                }
                if i < b.len() {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the former
                // has a closing quote right after one (possibly escaped) character.
                if b.get(i + 1) == Some(&b'\\') {
                    let end = b[i + 2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map_or(b.len(), |p| i + 2 + p + 1);
                    out.extend(std::iter::repeat_n(b' ', end - i));
                    i = end;
                } else {
                    let ch = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                    if ch > 0 && b.get(i + 1 + ch) == Some(&b'\'') {
                        out.extend(std::iter::repeat_n(b' ', 2 + ch));
                        i += 2 + ch;
                    } else {
                        out.push(b'\'');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Tokens of stripped source: identifiers, `::`, and single punctuation characters.
fn tokens(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push(&text[start..i]);
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push("::");
            i += 2;
        } else {
            let len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push(&text[i..i + len]);
            i += len;
        }
    }
    out
}

/// The modules `module`'s stripped source imports.
fn imports(text: &str, module: &str, modules: &Modules) -> Vec<String> {
    let toks = tokens(text);
    let base: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_owned).collect()
    };
    // Inline modules (`mod tests { … }`) open inside the file: (name, brace depth).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if toks.get(i + 2) == Some(&"{") => {
                inline.push((toks[i + 1].to_owned(), depth));
            }
            "crate" | "super"
                if toks.get(i + 1) == Some(&"::") && (i == 0 || toks[i - 1] != "::") =>
            {
                let mut here: Vec<String> = base.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let start = if t == "crate" { Vec::new() } else { here };
                i = path(&toks, i, start, modules, &mut out);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Follows the path starting at token `i` (`crate` or `super`) from module `at`, pushing
/// the file modules it names into `out`; returns the index of the first token after it.
fn path(
    toks: &[&str],
    mut i: usize,
    mut at: Vec<String>,
    modules: &Modules,
    out: &mut Vec<String>,
) -> usize {
    if toks[i] == "super" {
        at.pop();
    }
    i += 1;
    while toks.get(i) == Some(&"::") {
        match toks.get(i + 1) {
            Some(&"super") => {
                at.pop();
                i += 2;
            }
            Some(&"{") => return group(toks, i + 1, &at, modules, out),
            Some(name) if is_ident(name.as_bytes()[0]) => {
                let mut next = at.clone();
                next.push((*name).to_owned());
                if !modules.contains_key(&next.join("::")) {
                    // An item (or an inline module) of `at`.
                    break;
                }
                at = next;
                i += 2;
            }
            _ => break,
        }
    }
    out.push(nearest_file(&at, modules));
    i
}

/// The `{…}` group opening at token `open`, under module `at`: each item is a path from
/// there. Returns the index after the closing brace.
fn group(
    toks: &[&str],
    open: usize,
    at: &[String],
    modules: &Modules,
    out: &mut Vec<String>,
) -> usize {
    let mut j = open + 1;
    let mut item_start = j;
    let mut level = 0;
    while j < toks.len() {
        match toks[j] {
            "{" => level += 1,
            "}" if level == 0 => break,
            "}" => level -= 1,
            "," if level == 0 => {
                group_item(&toks[item_start..j], at, modules, out);
                item_start = j + 1;
            }
            _ => {}
        }
        j += 1;
    }
    group_item(&toks[item_start..j], at, modules, out);
    j + 1
}

/// One item of a group under module `at`: `filter`, `Snapshot`, `self`, `*`,
/// `stacks::{self, X}`, `a::b as c`.
fn group_item(item: &[&str], at: &[String], modules: &Modules, out: &mut Vec<String>) {
    if item.is_empty() {
        return;
    }
    let mut here = at.to_vec();
    let mut k = 0;
    while let Some(&t) = item.get(k) {
        if t == "{" {
            group(item, k, &here, modules, out);
            return;
        }
        if t == "self" || !is_ident(t.as_bytes()[0]) {
            break;
        }
        let mut next = here.clone();
        next.push(t.to_owned());
        if !modules.contains_key(&next.join("::")) {
            break;
        }
        here = next;
        if item.get(k + 1) != Some(&"::") {
            break;
        }
        k += 2;
    }
    out.push(nearest_file(&here, modules));
}

/// The file module that defines `at` (an inline module belongs to its file).
fn nearest_file(at: &[String], modules: &Modules) -> String {
    let mut m = at.to_vec();
    loop {
        let key = m.join("::");
        if modules.contains_key(&key) || m.is_empty() {
            return key;
        }
        m.pop();
    }
}

/// Strongly connected components of more than one module (Tarjan), each sorted.
fn cycles<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, g: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in g.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            if !s.index.contains_key(w) {
                visit(w, g, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w);
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort_unstable();
                s.found.push(scc);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, graph, &mut s);
        }
    }
    s.found
}
