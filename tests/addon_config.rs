//! The add-on's options agree with the binary's settings table.
//!
//! `heapwatch::settings::KEYS` is the single source of truth for every key's name, type,
//! range, default and whether users see it. This file compares it with what the Supervisor
//! reads — `addon/config.yaml` (`options:` and `schema:`), every `translations/*.yaml` —
//! and with `addon/DOCS.md`. Each check is a function returning the problems it found, so
//! the `*_is_reported` tests can feed it a broken copy of the real files and assert the
//! exact complaint.

#[path = "support/addon.rs"]
mod support;

use heapwatch::settings::{DefaultValue, KEYS, KeyKind, KeySpec};
use serde_norway::Value;
use support::{keys, parse_yaml, read_text, scalar_text};

/// The `schema:` entry the Supervisor must see for `spec`; `None` for kinds that are not
/// add-on options (listen addresses, proxy lists, paths). A key without a default is
/// optional (`?`), so the Supervisor neither requires it nor shows it until the user asks
/// for unused optional options.
fn schema_for(spec: &KeySpec) -> Option<String> {
    let base = match spec.kind {
        KeyKind::Bool => "bool".to_string(),
        KeyKind::Int { min, max } => format!("int({min},{max})"),
        // Open above: the Supervisor's ints are Python's, unbounded.
        KeyKind::U64 => "int(0,)".to_string(),
        KeyKind::Choice(names) => format!("list({})", names.join("|")),
        KeyKind::Password { min_chars } => format!("password({min_chars},)"),
        KeyKind::SocketAddr | KeyKind::IpList | KeyKind::Path | KeyKind::HttpUrl => return None,
    };
    let optional = if spec.default.is_none() { "?" } else { "" };
    Some(base + optional)
}

/// A default as YAML spells it in `options:`.
fn default_yaml(default: &DefaultValue) -> Value {
    match *default {
        DefaultValue::Bool(b) => Value::Bool(b),
        DefaultValue::Int(i) => Value::Number(i.into()),
        DefaultValue::Str(s) => Value::String(s.to_string()),
        DefaultValue::StrList(items) => Value::Sequence(
            items
                .iter()
                .map(|s| Value::String((*s).to_string()))
                .collect(),
        ),
    }
}

fn user_facing() -> impl Iterator<Item = &'static KeySpec> {
    KEYS.iter().filter(|k| k.user_facing)
}

/// Where `config.yaml`'s `options:` and `schema:` disagree with `KEYS`.
fn option_drift(config: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let schema = &config["schema"];
    let options = &config["options"];
    let schema_keys = keys(schema);

    let expected: Vec<String> = user_facing().map(|k| k.name.to_string()).collect();
    for name in &expected {
        if !schema_keys.contains(name) {
            problems.push(format!("schema: `{name}` is missing (user-facing in KEYS)"));
        }
    }
    for name in &schema_keys {
        if !expected.contains(name) {
            problems.push(format!("schema: `{name}` is not a user-facing key in KEYS"));
        }
    }
    let common: Vec<&String> = schema_keys
        .iter()
        .filter(|k| expected.contains(k))
        .collect();
    let in_keys_order: Vec<&String> = expected
        .iter()
        .filter(|k| schema_keys.contains(k))
        .collect();
    if common != in_keys_order {
        problems.push(format!(
            "schema: keys are in the order {common:?}; the UI shows them in schema order, \
             keep the KEYS order {in_keys_order:?}"
        ));
    }
    // An option without a schema entry is a Supervisor rule: tests/addon_rules.rs.

    for spec in user_facing() {
        let name = spec.name;
        match (schema_for(spec), schema[name].as_str()) {
            (None, _) => problems.push(format!(
                "KEYS: `{name}` is user-facing but its kind {:?} has no add-on schema form",
                spec.kind
            )),
            (Some(want), Some(got)) if want != got => {
                problems.push(format!("schema.{name}: `{got}`, but KEYS says `{want}`"))
            }
            (Some(_), None) if schema_keys.iter().any(|k| k == name) => {
                problems.push(format!("schema.{name}: not a string"));
            }
            _ => {}
        }
        let got = options.get(name);
        match (&spec.default, got) {
            (Some(default), Some(got)) if default_yaml(default) != *got => problems.push(format!(
                "options.{name}: {}, but the binary's default is {}",
                yaml_inline(got),
                yaml_inline(&default_yaml(default))
            )),
            (Some(default), None) => problems.push(format!(
                "options.{name}: missing; the binary's default is {}",
                yaml_inline(&default_yaml(default))
            )),
            (None, Some(got)) => problems.push(format!(
                "options.{name}: {} given, but the binary has no default (leave it out so the \
                 option stays hidden and unset)",
                yaml_inline(got)
            )),
            _ => {}
        }
    }
    problems
}

fn yaml_inline(v: &Value) -> String {
    serde_norway::to_string(v)
        .expect("a YAML value serializes")
        .trim()
        .replace('\n', " ")
}

/// Where one translation file disagrees with `config.yaml`: every schema key needs a
/// `name` and a `description` (and nothing else), every port a `network` line, and there
/// is nothing extra.
fn translation_drift(file: &str, tr: &Value, config: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for top in keys(tr) {
        if top != "configuration" && top != "network" {
            problems.push(format!("{file}: unknown top-level key `{top}`"));
        }
    }
    let schema_keys = keys(&config["schema"]);
    let configuration = &tr["configuration"];
    let translated = keys(configuration);
    for name in &schema_keys {
        if !translated.contains(name) {
            problems.push(format!("{file}: configuration.{name} is missing"));
        }
    }
    for name in &translated {
        if !schema_keys.contains(name) {
            problems.push(format!("{file}: configuration.{name} is not a schema key"));
            continue;
        }
        let entry = &configuration[name.as_str()];
        for field in ["name", "description"] {
            if entry[field].as_str().is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!(
                    "{file}: configuration.{name}.{field} is missing or empty"
                ));
            }
        }
        for field in keys(entry) {
            if field != "name" && field != "description" {
                problems.push(format!(
                    "{file}: configuration.{name}.{field} is not a known field"
                ));
            }
        }
    }
    let ports = keys(&config["ports"]);
    let network = keys(&tr["network"]);
    for port in &ports {
        if !network.contains(port) {
            problems.push(format!("{file}: network.{port} is missing"));
        }
    }
    if let Some(map) = tr["network"].as_mapping() {
        for (k, v) in map {
            let port = scalar_text(k);
            if !ports.contains(&port) {
                problems.push(format!(
                    "{file}: network.{port} is not a port in config.yaml"
                ));
            } else if v.as_str().is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!("{file}: network.{port} is empty"));
            }
        }
    }
    problems
}

/// Options that DOCS.md never names (as `` `key` ``).
fn docs_drift(docs: &str, config: &Value) -> Vec<String> {
    keys(&config["schema"])
        .into_iter()
        .filter(|k| !docs.contains(&format!("`{k}`")))
        .map(|k| format!("DOCS.md: option `{k}` is not documented"))
        .collect()
}

fn config_text() -> String {
    read_text("addon/config.yaml")
}

fn config() -> Value {
    parse_yaml(&config_text(), "addon/config.yaml")
}

/// The real `config.yaml` with one edit; panics if `from` is not in it, so a test never
/// passes because the text it meant to break has moved.
fn edited(text: &str, from: &str, to: &str, what: &str) -> Value {
    assert!(text.contains(from), "{what}: `{from}` not found");
    parse_yaml(&text.replacen(from, to, 1), what)
}

#[test]
fn options_and_schema_match_settings_keys() {
    assert_eq!(option_drift(&config()), Vec::<String>::new());
}

#[test]
fn every_translation_names_and_describes_every_option_and_port() {
    let config = config();
    let files = support::translations();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["de.yaml", "en.yaml"],
        "translations/ holds exactly these"
    );
    for (file, tr) in &files {
        assert_eq!(translation_drift(file, tr, &config), Vec::<String>::new());
    }
}

#[test]
fn docs_describe_every_option() {
    assert_eq!(
        docs_drift(&read_text("addon/DOCS.md"), &config()),
        Vec::<String>::new()
    );
}

#[test]
fn schema_and_default_drift_is_reported() {
    let text = config_text();
    let cases = [
        (
            "debug_memory_frames: int(1,64)",
            "debug_memory_frames: int(1,65)",
            "schema.debug_memory_frames: `int(1,65)`, but KEYS says `int(1,64)`",
        ),
        (
            "debug_memory_mode: list(sampled|exact)",
            "debug_memory_mode: list(exact|sampled)",
            "schema.debug_memory_mode: `list(exact|sampled)`, but KEYS says `list(sampled|exact)`",
        ),
        (
            "api_token: password(32,)?",
            "api_token: password(32,)",
            "schema.api_token: `password(32,)`, but KEYS says `password(32,)?`",
        ),
        (
            "debug_memory_seed: int(0,)?",
            "debug_memory_seed: int(0,)",
            "schema.debug_memory_seed: `int(0,)`, but KEYS says `int(0,)?`",
        ),
        (
            "debug_memory: bool",
            "debug_memory: bool?",
            "schema.debug_memory: `bool?`, but KEYS says `bool`",
        ),
        (
            "  debug_memory_sample_kib: 512",
            "  debug_memory_sample_kib: 1024",
            "options.debug_memory_sample_kib: 1024, but the binary's default is 512",
        ),
        (
            "  debug_memory: false",
            "  debug_memory: \"false\"",
            "options.debug_memory: 'false', but the binary's default is false",
        ),
        (
            "  log_level: info\n",
            "",
            "options.log_level: missing; the binary's default is info",
        ),
        (
            "  debug_memory_sample_kib: 512\n",
            "  debug_memory_sample_kib: 512\n  api_token: \"\"\n",
            "options.api_token: '' given, but the binary has no default (leave it out so the \
             option stays hidden and unset)",
        ),
    ];
    for (from, to, want) in cases {
        let broken = edited(&text, from, to, want);
        assert_eq!(option_drift(&broken), [want], "after `{from}` → `{to}`");
    }

    let broken = edited(&text, "  api_token: password(32,)?\n", "", "drop api_token");
    assert_eq!(
        option_drift(&broken),
        ["schema: `api_token` is missing (user-facing in KEYS)"]
    );
    let broken = edited(
        &text,
        "  api_token: password(32,)?\n",
        "  api_token: password(32,)?\n  data_dir: str\n",
        "add data_dir",
    );
    assert_eq!(
        option_drift(&broken),
        ["schema: `data_dir` is not a user-facing key in KEYS"]
    );
    let broken = edited(
        &text,
        "  log_level: list(trace|debug|info|warning|error)\n  debug_memory: bool\n",
        "  debug_memory: bool\n  log_level: list(trace|debug|info|warning|error)\n",
        "swap order",
    );
    let problems = option_drift(&broken);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("schema: keys are in the order"),
        "{problems:?}"
    );
}

#[test]
fn translation_drift_is_reported() {
    let config = config();
    let en = read_text("translations/en.yaml");
    let cases = [
        (
            "    name: Call stack depth\n",
            "",
            "en.yaml: configuration.debug_memory_frames.name is missing or empty",
        ),
        (
            "  api_token:\n    name: API token\n",
            "  api_tokn:\n    name: API token\n",
            "en.yaml: configuration.api_token is missing",
        ),
        (
            "network:\n  8100/tcp:",
            "network:\n  8101/tcp:",
            "en.yaml: network.8100/tcp is missing",
        ),
        (
            "    name: Log level\n",
            "    name: Log level\n    title: Log level\n",
            "en.yaml: configuration.log_level.title is not a known field",
        ),
        (
            "configuration:\n",
            "config:\n",
            "en.yaml: unknown top-level key `config`",
        ),
    ];
    for (from, to, want) in cases {
        assert!(en.contains(from), "`{from}` not in en.yaml");
        let broken = parse_yaml(&en.replacen(from, to, 1), want);
        let problems = translation_drift("en.yaml", &broken, &config);
        assert!(
            problems.iter().any(|p| p == want),
            "{want}: got {problems:?}"
        );
    }
}

#[test]
fn undocumented_option_is_reported() {
    let docs = read_text("addon/DOCS.md");
    let broken = docs.replace("`debug_memory_sample_kib`", "the sampling interval");
    assert_eq!(
        docs_drift(&broken, &config()),
        ["DOCS.md: option `debug_memory_sample_kib` is not documented"]
    );
}
