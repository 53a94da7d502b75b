//! Folded stacks: one line per distinct stack, `outer;…;inner bytes`, the input of
//! flame-graph tools (`flamegraph.pl`, `inferno-flamegraph`, speedscope).
//!
//! Frames are function names (inlined functions as their own frames), outermost first,
//! the tracker's own frames trimmed. Stacks that differ only in line numbers fold into
//! one line. A `;` inside a name (Rust array types such as `[u8; 4]`) becomes `,`, since
//! `;` separates frames. Lines are sorted, so the same heap gives the same text.
//!
//! The difference from a baseline uses the two-column form of Brendan Gregg's
//! differential flame graphs, `stack before after`, which `flamegraph.pl` and
//! `inferno-flamegraph` draw directly (widths are `after`, colour the change).

use std::collections::BTreeMap;

use crate::memory::ExportStack;

/// Shown for the overflow bucket (the stack table was full).
pub const OVERFLOW_FRAME: &str = "<other stacks>";
/// Shown for a stack whose walk recorded no frame.
pub const NO_FRAMES: &str = "<no frames>";

/// The folded key of one stack.
pub fn stack_key(stack: &ExportStack) -> String {
    if stack.overflow {
        return OVERFLOW_FRAME.to_owned();
    }
    if stack.locations.is_empty() {
        return NO_FRAMES.to_owned();
    }
    let mut names = Vec::new();
    for loc in stack.locations.iter().rev() {
        for f in loc.frames.iter().rev() {
            let name = f.function.replace(';', ",");
            names.push(name);
        }
    }
    names.join(";")
}

/// Bytes per folded stack (stacks with equal keys summed).
pub fn fold(stacks: &[ExportStack]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in stacks {
        if s.bytes > 0 {
            *out.entry(stack_key(s)).or_insert(0u64) += s.bytes;
        }
    }
    out
}

/// `stack bytes` lines, sorted by stack.
pub fn render(folded: &BTreeMap<String, u64>) -> String {
    let mut out = String::new();
    for (k, v) in folded {
        out.push_str(k);
        out.push(' ');
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

/// `stack before after` lines for every stack present on either side, sorted by stack.
pub fn render_diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = String::new();
    for k in keys {
        let b = before.get(k).copied().unwrap_or(0);
        let a = after.get(k).copied().unwrap_or(0);
        out.push_str(&format!("{k} {b} {a}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ExportLocation, Frame};

    fn stack(frames: &[&[&str]], bytes: u64) -> ExportStack {
        ExportStack {
            locations: frames
                .iter()
                .enumerate()
                .map(|(i, names)| ExportLocation {
                    address: 0x1000 + i as u64,
                    frames: names
                        .iter()
                        .map(|n| Frame::new(*n, None, Some(i as u32)))
                        .collect(),
                })
                .collect(),
            bytes,
            count: 1,
            overflow: false,
            truncated: false,
        }
    }

    #[test]
    fn outermost_first_inlined_frames_kept_semicolons_escaped() {
        let s = stack(
            &[
                &["inner_inlined", "inner"],
                &["<[u8; 4] as X>::f"],
                &["main"],
            ],
            64,
        );
        assert_eq!(stack_key(&s), "main;<[u8, 4] as X>::f;inner;inner_inlined");
    }

    #[test]
    fn equal_keys_sum_and_diff_has_both_sides() {
        let now = fold(&[
            stack(&[&["a"], &["main"]], 100),
            stack(&[&["a"], &["main"]], 28),
            stack(&[&["b"], &["main"]], 5),
            stack(&[&["z"], &["main"]], 0),
        ]);
        assert_eq!(render(&now), "main;a 128\nmain;b 5\n");
        let before = fold(&[stack(&[&["a"], &["main"]], 28), stack(&[&["c"]], 9)]);
        assert_eq!(
            render_diff(&before, &now),
            "c 9 0\nmain;a 28 128\nmain;b 0 5\n"
        );
        let overflow = ExportStack {
            overflow: true,
            ..stack(&[], 7)
        };
        assert_eq!(render(&fold(&[overflow])), "<other stacks> 7\n");
    }
}
