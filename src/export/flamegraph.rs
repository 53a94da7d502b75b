//! The SVG flame graph of folded stacks, drawn by the `inferno` crate (the Rust port of
//! `flamegraph.pl`), with its memory palette and deterministic colours (a frame's colour
//! comes from a hash of its name, so the same heap gives the same picture).
//!
//! Licence: inferno is CDDL-1.0, a file-level copyleft licence. We use it as an unmodified
//! dependency, which leaves Heapwatch's own files under MIT; whoever distributes a binary
//! must keep inferno's notice and say where its source is (crates.io). That is the whole
//! obligation, and far less work than keeping a flame-graph renderer of our own correct.
//! See `addon/DOCS.md` (third-party licences).
//!
//! An empty heap has no stacks, which inferno refuses to draw; we then draw one frame
//! saying so, so the endpoint always answers with an image.

use std::collections::BTreeMap;

use inferno::flamegraph::{self, Options, Palette, color::BasicPalette};

use super::folded;

/// The one frame drawn when there is nothing to draw.
pub const EMPTY_FRAME: &str = "no live tracked blocks";

fn options(title: String, subtitle: Option<String>) -> Options<'static> {
    let mut opt = Options::default();
    opt.title = title;
    opt.subtitle = subtitle;
    opt.count_name = "bytes".to_owned();
    opt.name_type = "Site:".to_owned();
    opt.colors = Palette::Basic(BasicPalette::Mem);
    opt.hash = true;
    opt.deterministic = true;
    opt
}

fn draw(lines: &str, opt: &mut Options<'_>) -> std::io::Result<Vec<u8>> {
    let mut svg = Vec::new();
    if lines.trim().is_empty() {
        flamegraph::from_lines(opt, [format!("{EMPTY_FRAME} 1").as_str()], &mut svg)?;
    } else {
        flamegraph::from_lines(opt, lines.lines(), &mut svg)?;
    }
    Ok(svg)
}

/// The flame graph of the live heap: frame widths are bytes.
///
/// # Errors
/// When inferno fails to write the SVG (it writes to memory, so only on malformed input).
pub fn live(stacks: &BTreeMap<String, u64>, subtitle: &str) -> std::io::Result<Vec<u8>> {
    let mut opt = options(
        "Heapwatch: live heap by allocation stack".to_owned(),
        Some(subtitle.to_owned()),
    );
    draw(&folded::render(stacks), &mut opt)
}

/// A differential flame graph: widths are the bytes now; red frames grew since the
/// baseline, blue ones shrank.
///
/// # Errors
/// As [`live`].
pub fn diff(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    baseline: &str,
    subtitle: &str,
) -> std::io::Result<Vec<u8>> {
    let mut opt = options(
        format!("Heapwatch: live heap compared with baseline {baseline:?}"),
        Some(format!("{subtitle}; red grew, blue shrank")),
    );
    let lines = if after.values().all(|&v| v == 0) {
        String::new()
    } else {
        folded::render_diff(before, after)
    };
    draw(&lines, &mut opt)
}
