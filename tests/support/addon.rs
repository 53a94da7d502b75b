//! Shared helpers for the add-on packaging tests (`tests/addon_config.rs`,
//! `tests/addon_rules.rs`): real reads of the files the Supervisor reads, from the
//! repository root.
#![allow(
    dead_code,
    reason = "each test file includes this module and uses a part of it"
)]

use std::path::PathBuf;

use serde_norway::Value;

/// The repository root (where Cargo.toml, addon/ and translations/ live).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of a file below the repository root.
pub fn read_text(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A YAML file below the repository root, parsed.
pub fn read_yaml(rel: &str) -> Value {
    parse_yaml(&read_text(rel), rel)
}

/// YAML text, parsed; `what` names it in the panic message.
pub fn parse_yaml(text: &str, what: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{what}: not valid YAML: {e}"))
}

/// Every `translations/*.yaml`, sorted by file name, as (file name, parsed YAML).
pub fn translations() -> Vec<(String, Value)> {
    let dir = root().join("translations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|name| {
            let yaml = read_yaml(&format!("translations/{name}"));
            (name, yaml)
        })
        .collect()
}

/// `version` from the `[package]` table of Cargo.toml: a line parse, so the tests need
/// no TOML parser.
pub fn cargo_version() -> String {
    let text = read_text("Cargo.toml");
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("version") {
            let value = rest.trim_start().strip_prefix('=').map(str::trim);
            if let Some(v) = value.and_then(|v| v.strip_prefix('"')?.strip_suffix('"')) {
                return v.to_string();
            }
        }
    }
    panic!("Cargo.toml: no version = \"…\" line in [package]");
}

/// The keys of a YAML mapping as strings, in file order (empty when `v` is no mapping).
pub fn keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .map(|m| m.keys().map(scalar_text).collect())
        .unwrap_or_default()
}

/// A scalar as YAML prints it, strings unquoted: a mapping key (`8100/tcp`, or `8100`
/// for a key YAML read as a number) or a value to compare with a default (`true`, `auto`).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .expect("a scalar serializes")
            .trim()
            .to_string(),
    }
}
