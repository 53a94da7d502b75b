//! The add-on folder obeys the Supervisor's rules (shared/reference/ha-addon.md): what
//! makes an add-on load, show its documentation, icon and changelog, and what makes it
//! silently disappear from the store.
//!
//! Each rule is a function from file contents to the problems found; the shipped files
//! must have none, and the `*_is_reported` tests show each rule catching a broken copy.

#[path = "support/addon.rs"]
mod support;

use std::path::Path;

use serde_norway::Value;
use support::{cargo_version, keys, parse_yaml, read_text, root, scalar_text};

/// Keys the current Supervisor reads in config.yaml. Anything else is dropped without a
/// word (`ingress_panel: true` does nothing), so an unknown key is a bug here.
const ALLOWED_KEYS: &[&str] = &[
    // identity (the first five are required)
    "name",
    "version",
    "slug",
    "description",
    "arch",
    "url",
    "image",
    "stage",
    // ingress and panel
    "ingress",
    "ingress_port",
    "ingress_entry",
    "ingress_stream",
    "panel_icon",
    "panel_title",
    "panel_admin",
    // network and health
    "ports",
    "ports_description",
    "host_network",
    "watchdog",
    "webui",
    // start-up and runtime
    "init",
    "startup",
    "boot",
    "timeout",
    "apparmor",
    "map",
    "environment",
    // Home Assistant and Supervisor APIs
    "auth_api",
    "homeassistant_api",
    "hassio_api",
    "hassio_role",
    // backups
    "backup",
    "backup_exclude",
    // options
    "options",
    "schema",
];

/// Keys that still load but are deprecated or replaced.
const DEPRECATED_KEYS: &[(&str, &str)] = &[
    ("auto_uart", "use `uart`"),
    ("devicetree", "removed"),
    ("snapshot", "use `backup`"),
    ("snapshot_exclude", "use `backup_exclude`"),
    ("snapshot_pre", "use `backup_pre`"),
    ("snapshot_post", "use `backup_post`"),
    ("codenotary", "image signing was dropped"),
];

/// Keys whose value here equals the Supervisor's default: the add-on linter flags them,
/// and leaving them out keeps the manifest to what this add-on decides.
const DEFAULT_VALUED: &[(&str, &str)] = &[
    ("ingress", "false"),
    ("ingress_port", "8099"),
    ("panel_admin", "true"),
    ("init", "true"),
    ("startup", "application"),
    ("boot", "auto"),
    ("stage", "stable"),
    ("apparmor", "true"),
    ("host_network", "false"),
    ("auth_api", "false"),
    ("homeassistant_api", "false"),
    ("hassio_api", "false"),
];

const CURRENT_ARCHES: &[&str] = &["amd64", "aarch64"];
const DEPRECATED_ARCHES: &[&str] = &["armv7", "armhf", "i386"];

/// The Supervisor's ingress port when `ingress_port` is absent.
const DEFAULT_INGRESS_PORT: u64 = 8099;

/// Every rule on `addon/config.yaml`, given its text and Cargo.toml's version.
fn config_problems(text: &str, cargo_version: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let config = parse_yaml(text, "config.yaml");
    if config.as_mapping().is_none() {
        return vec!["config.yaml: not a mapping".into()];
    }

    for key in ["name", "version", "slug", "description"] {
        if config[key].as_str().is_none_or(|s| s.trim().is_empty()) {
            problems.push(format!(
                "`{key}` is required and must be a non-empty string"
            ));
        }
    }

    // `version: 1.10` would reach the Supervisor as the number 1.1: insist on quotes.
    let raw_version = text
        .lines()
        .find_map(|l| l.strip_prefix("version:"))
        .map(str::trim);
    match raw_version {
        Some(v) if !(v.starts_with('"') || v.starts_with('\'')) => {
            problems.push(format!("`version: {v}` must be quoted"));
        }
        _ => {}
    }
    if let Some(v) = config["version"].as_str()
        && v != cargo_version
    {
        problems.push(format!(
            "`version` is {v:?}, but Cargo.toml says {cargo_version:?}"
        ));
    }

    if let Some(slug) = config["slug"].as_str()
        && !slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        problems.push(format!("`slug` {slug:?} must match ^[-_.A-Za-z0-9]+$"));
    }

    match config["arch"].as_sequence() {
        Some(arches) if !arches.is_empty() => {
            for arch in arches {
                let arch = arch.as_str().unwrap_or("(not a string)");
                if DEPRECATED_ARCHES.contains(&arch) {
                    problems.push(format!("arch `{arch}` is deprecated"));
                } else if !CURRENT_ARCHES.contains(&arch) {
                    problems.push(format!("arch `{arch}` is unknown"));
                }
            }
        }
        _ => problems.push("`arch` is required and must be a non-empty list".into()),
    }

    for key in keys(&config) {
        let value = &config[key.as_str()];
        if let Some((_, why)) = DEPRECATED_KEYS.iter().find(|(k, _)| *k == key) {
            problems.push(format!("`{key}` is deprecated: {why}"));
        } else if !ALLOWED_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "`{key}` is not a Supervisor key (it would be ignored)"
            ));
        } else if let Some((_, default)) = DEFAULT_VALUED.iter().find(|(k, _)| *k == key)
            && scalar_text(value) == *default
        {
            problems.push(format!("`{key}: {default}` is the default: leave it out"));
        }
    }

    if !matches!(config["apparmor"], Value::Null | Value::Bool(_)) {
        problems
            .push("`apparmor` must be a boolean (a custom profile goes in apparmor.txt)".into());
    }
    if let Some(image) = config["image"].as_str()
        && image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
    {
        problems.push(format!(
            "`image` {image:?} must have no tag (the tag is `version`)"
        ));
    }
    if let Some(entry) = config["ingress_entry"].as_str()
        && entry.starts_with('/')
    {
        problems.push("`ingress_entry` must not start with a slash".into());
    }
    if let Some(icon) = config["panel_icon"].as_str()
        && !icon.starts_with("mdi:")
    {
        problems.push(format!("`panel_icon` {icon:?} must be an mdi: icon"));
    }

    if let Some(ports) = config["ports"].as_mapping() {
        for (k, v) in ports {
            let port = scalar_text(k);
            if !matches!(k, Value::String(_)) || parse_port_key(&port).is_none() {
                problems.push(format!("port `{port}` must be a string like \"8100/tcp\""));
            }
            match v {
                Value::Null => {}
                Value::Number(n) if n.as_u64().is_some_and(|n| (1..=65535).contains(&n)) => {}
                other => problems.push(format!(
                    "port `{port}`: host port must be null or 1–65535, got {}",
                    scalar_text(other)
                )),
            }
        }
    }

    if let Some(watchdog) = config["watchdog"].as_str() {
        let ingress_port = config["ingress_port"]
            .as_u64()
            .unwrap_or(DEFAULT_INGRESS_PORT);
        if !["http://", "https://", "tcp://"]
            .iter()
            .any(|s| watchdog.starts_with(s))
            || !watchdog.contains("[HOST]")
        {
            problems.push(format!(
                "`watchdog` {watchdog:?} must be http(s):// or tcp:// to [HOST]"
            ));
        }
        if config["ingress"].as_bool() == Some(true)
            && !watchdog.contains(&format!("[PORT:{ingress_port}]"))
        {
            problems.push(format!(
                "`watchdog` {watchdog:?} should poll the ingress port [PORT:{ingress_port}]"
            ));
        }
    }

    if let Some(schema) = config["schema"].as_mapping() {
        for (k, v) in schema {
            match v.as_str() {
                Some(t) => {
                    if let Err(why) = check_option_type(t) {
                        problems.push(format!("schema.{}: `{t}`: {why}", scalar_text(k)));
                    }
                }
                None => problems.push(format!("schema.{}: expected a type string", scalar_text(k))),
            }
        }
    }
    for k in keys(&config["options"]) {
        if config["schema"].get(k.as_str()).is_none() {
            problems.push(format!("options.{k} has no schema entry"));
        }
    }
    problems
}

/// `8100/tcp` → 8100; `None` unless it is `N/tcp` or `N/udp` with N in 1–65535.
fn parse_port_key(s: &str) -> Option<u16> {
    let (n, proto) = s.split_once('/')?;
    let n: u16 = n.parse().ok().filter(|n| *n > 0)?;
    matches!(proto, "tcp" | "udp").then_some(n)
}

/// The Supervisor's option syntax: `bool`, `email`, `url`, `port`, `match(REGEX)`,
/// `list(a|b|c)`, `str|int|float|password` with an optional `(min,max)` (either bound may
/// be empty), each with an optional trailing `?`.
fn check_option_type(t: &str) -> Result<(), String> {
    let body = t.strip_suffix('?').unwrap_or(t);
    if matches!(body, "bool" | "email" | "url" | "port") {
        return Ok(());
    }
    if let Some(regex) = body
        .strip_prefix("match(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return if regex.is_empty() {
            Err("empty match()".into())
        } else {
            Ok(())
        };
    }
    if let Some(items) = body.strip_prefix("list(").and_then(|r| r.strip_suffix(')')) {
        let items: Vec<&str> = items.split('|').collect();
        if items
            .iter()
            .any(|i| i.is_empty() || i.contains(['(', ')', ' ']))
        {
            return Err("list items must be non-empty words separated by |".into());
        }
        return Ok(());
    }
    let (name, range) = match body.split_once('(') {
        Some((name, rest)) => (
            name,
            Some(
                rest.strip_suffix(')')
                    .ok_or_else(|| "unclosed range".to_string())?,
            ),
        ),
        None => (body, None),
    };
    if !matches!(name, "str" | "int" | "float" | "password") {
        return Err(format!("unknown type `{name}`"));
    }
    let Some(range) = range else { return Ok(()) };
    let (min, max) = range
        .split_once(',')
        .ok_or_else(|| "a range is (min,max), either may be empty".to_string())?;
    let bound = |b: &str| -> Result<Option<f64>, String> {
        if b.is_empty() {
            return Ok(None);
        }
        let integer = b.strip_prefix(['+', '-']).unwrap_or(b);
        let ok = if name == "float" {
            b.parse::<f64>().is_ok() && !b.contains(['e', 'E', ' '])
        } else {
            !integer.is_empty() && integer.chars().all(|c| c.is_ascii_digit())
        };
        if ok {
            Ok(b.parse().ok())
        } else {
            Err(format!("bound `{b}` is not a valid {name} bound"))
        }
    };
    if let (Some(lo), Some(hi)) = (bound(min)?, bound(max)?)
        && lo > hi
    {
        return Err(format!("min {min} is above max {max}"));
    }
    Ok(())
}

/// The first `## ` release heading must be the current version, spelled exactly.
fn changelog_problems(text: &str, version: &str) -> Vec<String> {
    let first = text
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .find(|h| !h.eq_ignore_ascii_case("unreleased") && !h.eq_ignore_ascii_case("[unreleased]"));
    match first {
        Some(h) if h == version => vec![],
        Some(h) => vec![format!(
            "CHANGELOG.md: the newest release heading is `## {h}`, expected `## {version}`"
        )],
        None => vec![format!("CHANGELOG.md: no `## {version}` heading")],
    }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature and the CRC.
fn png_size(bytes: &[u8]) -> Result<(u32, u32), String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) {
        return Err("not a PNG (bad signature)".into());
    }
    // signature, length (4), "IHDR", 13 data bytes, CRC (4)
    let chunk = bytes.get(8..33).ok_or("truncated before the end of IHDR")?;
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    if be(&chunk[0..4]) != 13 || &chunk[4..8] != b"IHDR" {
        return Err("the first chunk is not a 13-byte IHDR".into());
    }
    if crc32(&chunk[4..21]) != be(&chunk[21..25]) {
        return Err("IHDR CRC mismatch".into());
    }
    if !bytes.ends_with(b"IEND\xae\x42\x60\x82") {
        return Err("no IEND chunk at the end".into());
    }
    Ok((be(&chunk[8..12]), be(&chunk[12..16])))
}

/// CRC-32 as PNG defines it (ISO 3309, reflected, polynomial 0xEDB88320).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// icon.png must be 128×128; logo.png "about 250×100": within 10% of each side.
fn image_problems(icon: &[u8], logo: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    match png_size(icon) {
        Ok((128, 128)) => {}
        Ok((w, h)) => problems.push(format!("icon.png is {w}×{h}, expected 128×128")),
        Err(e) => problems.push(format!("icon.png: {e}")),
    }
    match png_size(logo) {
        Ok((w, h)) if (225..=275).contains(&w) && (90..=110).contains(&h) => {}
        Ok((w, h)) => problems.push(format!("logo.png is {w}×{h}, expected about 250×100")),
        Err(e) => problems.push(format!("logo.png: {e}")),
    }
    problems
}

/// Exactly one unindented `profile NAME flags=(attach_disconnected,mediate_deleted) {`
/// line, named after the slug, with balanced braces.
fn apparmor_problems(text: &str, slug: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let profiles: Vec<&str> = text.lines().filter(|l| l.starts_with("profile ")).collect();
    match profiles.as_slice() {
        [line] => {
            let name = line.split_whitespace().nth(1).unwrap_or("");
            if name != slug {
                problems.push(format!("apparmor.txt: profile `{name}`, expected `{slug}`"));
            }
            if !line.contains("attach_disconnected") || !line.contains("mediate_deleted") {
                problems.push(
                    "apparmor.txt: the profile needs flags=(attach_disconnected,mediate_deleted)"
                        .into(),
                );
            }
        }
        other => problems.push(format!(
            "apparmor.txt: {} unindented `profile` lines, expected exactly 1",
            other.len()
        )),
    }
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    if code.matches('{').count() != code.matches('}').count() {
        problems.push("apparmor.txt: unbalanced braces".into());
    }
    problems
}

/// The facts the Supervisor relies on in addon/Dockerfile, checked as text (tests/image.rs
/// builds the image and checks the result): the labels, an empty base with only the
/// prebuilt binary copied in (no RUN, so no shell is needed or added), the binary's own
/// health check in exec form, and the command line.
fn dockerfile_problems(text: &str, version: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let needles = [
        "ARG BUILD_ARCH".to_string(),
        format!("ARG BUILD_VERSION={version}"),
        "io.hass.version=\"${BUILD_VERSION}\"".to_string(),
        "io.hass.type=\"app\"".to_string(),
        "io.hass.arch=\"${BUILD_ARCH}\"".to_string(),
        "COPY ${BUILD_ARCH}/heapwatch /usr/bin/heapwatch".to_string(),
        "CMD [\"/usr/bin/heapwatch\", \"healthcheck\"]".to_string(),
        "CMD [\"/usr/bin/heapwatch\", \"--options\", \"/data/options.json\"]".to_string(),
    ];
    for needle in needles {
        if !text.contains(&needle) {
            problems.push(format!("Dockerfile: missing `{needle}`"));
        }
    }
    let instructions: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    if froms != ["FROM scratch"] {
        problems.push(format!(
            "Dockerfile: expected one stage `FROM scratch`, found {froms:?}"
        ));
    }
    for word in ["RUN", "SHELL", "ADD"] {
        if instructions.contains(&word) {
            problems.push(format!(
                "Dockerfile: `{word}` has no place in a binary-only image"
            ));
        }
    }
    problems
}

/// The release workflow builds a binary for every architecture config.yaml lists with
/// `.ci/build-static` (the script .ci/test builds the tested image's binary with), which
/// keeps frame pointers (the tracker walks them) and links statically.
fn release_workflow_problems(text: &str, build_script: &str, arches: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    if !text.contains("bash .ci/build-static \"$TARGET\"") {
        problems.push("release.yml: does not build with `.ci/build-static`".into());
    }
    for needle in [
        "-C force-frame-pointers=yes",
        "-C target-feature=+crt-static",
    ] {
        if !build_script.contains(needle) {
            problems.push(format!(".ci/build-static: missing `{needle}`"));
        }
    }
    for arch in arches {
        if !text.contains(&format!("- arch: {arch}\n")) {
            problems.push(format!("release.yml: no binary for arch `{arch}`"));
        }
    }
    let looped: Option<Vec<&str>> = text.lines().find_map(|l| {
        let list = l.trim().strip_prefix("for arch in ")?;
        Some(list.split(';').next()?.split_whitespace().collect())
    });
    if looped != Some(arches.iter().map(String::as_str).collect()) {
        problems.push(format!(
            "release.yml: the image loop covers {looped:?}, expected {arches:?}"
        ));
    }
    problems
}

/// Every `config.yaml|yml|json` the Supervisor would find, relative to `dir`, skipping
/// dot-folders and `rootfs/` as it does, and build output that is never committed.
fn manifests(dir: &Path, rel: &str, found: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{rel}{name}");
        let file_type = entry.file_type().expect("file type");
        if file_type.is_dir() {
            if !name.starts_with('.')
                && !matches!(name.as_str(), "rootfs" | "target" | "node_modules")
            {
                manifests(&entry.path(), &format!("{path}/"), found);
            }
        } else if matches!(name.as_str(), "config.yaml" | "config.yml" | "config.json") {
            found.push(path);
        }
    }
}

/// `link` in addon/ must be a symlink to `target`, or a copy with the same content.
fn mirrors(link: &str, target: &str) -> Result<(), String> {
    let path = root().join(link);
    match std::fs::read_link(&path) {
        Ok(dest) if dest == Path::new(target) => Ok(()),
        Ok(dest) => Err(format!(
            "{link} points to {}, expected {target}",
            dest.display()
        )),
        Err(_) => {
            let top = path.parent().expect("inside addon/").join(target);
            if same_content(&path, &top) {
                Ok(())
            } else {
                Err(format!(
                    "{link} is neither a symlink to {target} nor identical to it"
                ))
            }
        }
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    if a.is_dir() && b.is_dir() {
        let names = |d: &Path| -> Vec<_> {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .map(|r| r.filter_map(Result::ok).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        na == nb && na.iter().all(|n| same_content(&a.join(n), &b.join(n)))
    } else {
        matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
    }
}

fn config_text() -> String {
    read_text("addon/config.yaml")
}

fn read_bytes(rel: &str) -> Vec<u8> {
    let path = root().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- the shipped files ---------------------------------------------------------------

#[test]
fn config_yaml_follows_supervisor_rules() {
    assert_eq!(
        config_problems(&config_text(), &cargo_version()),
        Vec::<String>::new()
    );
}

#[test]
fn changelog_leads_with_the_current_version() {
    let version = cargo_version();
    assert_eq!(
        changelog_problems(&read_text("CHANGELOG.md"), &version),
        Vec::<String>::new()
    );
    assert_eq!(
        changelog_problems(&read_text("addon/CHANGELOG.md"), &version),
        Vec::<String>::new()
    );
}

#[test]
fn icon_and_logo_have_the_store_sizes() {
    assert_eq!(
        image_problems(&read_bytes("addon/icon.png"), &read_bytes("addon/logo.png")),
        Vec::<String>::new()
    );
}

#[test]
fn apparmor_profile_has_one_profile_named_after_the_slug() {
    let slug = parse_yaml(&config_text(), "config.yaml")["slug"]
        .as_str()
        .expect("slug")
        .to_string();
    assert_eq!(
        apparmor_problems(&read_text("addon/apparmor.txt"), &slug),
        Vec::<String>::new()
    );
}

#[test]
fn dockerfile_packs_the_binary_on_an_empty_base_with_labels() {
    assert_eq!(
        dockerfile_problems(&read_text("addon/Dockerfile"), &cargo_version()),
        Vec::<String>::new()
    );
}

#[test]
fn release_workflow_builds_every_arch_static_with_frame_pointers() {
    let config = parse_yaml(&config_text(), "config.yaml");
    let arches: Vec<String> = config["arch"]
        .as_sequence()
        .expect("arch list")
        .iter()
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    assert_eq!(
        release_workflow_problems(
            &read_text(".github/workflows/release.yml"),
            &read_text(".ci/build-static"),
            &arches
        ),
        Vec::<String>::new()
    );
}

#[test]
fn the_repository_has_one_manifest_and_no_build_yaml() {
    let mut found = Vec::new();
    manifests(&root(), "", &mut found);
    assert_eq!(found, ["addon/config.yaml"]);
    for old in ["build.yaml", "build.yml", "build.json"] {
        assert!(
            !root().join("addon").join(old).exists(),
            "addon/{old} is deprecated"
        );
    }
}

#[test]
fn addon_translations_and_changelog_mirror_the_top_level() {
    assert_eq!(mirrors("addon/translations", "../translations"), Ok(()));
    assert_eq!(mirrors("addon/CHANGELOG.md", "../CHANGELOG.md"), Ok(()));
}

#[test]
fn repository_yaml_has_a_name() {
    let repo = parse_yaml(&read_text("repository.yaml"), "repository.yaml");
    assert!(
        repo["name"].as_str().is_some_and(|n| !n.trim().is_empty()),
        "repository.yaml needs a non-empty `name`"
    );
}

// ---- each rule catches what it is for -------------------------------------------------

#[test]
fn config_rule_breaks_are_reported() {
    let text = config_text();
    let version = cargo_version();
    let cases = [
        (
            "version: \"0.1.0\"",
            "version: 0.1.0",
            "`version: 0.1.0` must be quoted",
        ),
        (
            "version: \"0.1.0\"",
            "version: \"0.1.1\"",
            "`version` is \"0.1.1\", but Cargo.toml says \"0.1.0\"",
        ),
        (
            "slug: heapwatch",
            "slug: heap watch",
            "`slug` \"heap watch\" must match ^[-_.A-Za-z0-9]+$",
        ),
        (
            "slug: heapwatch\n",
            "",
            "`slug` is required and must be a non-empty string",
        ),
        (
            "  - aarch64\n",
            "  - aarch64\n  - armv7\n",
            "arch `armv7` is deprecated",
        ),
        (
            "  - aarch64\n",
            "  - aarch64\n  - riscv64\n",
            "arch `riscv64` is unknown",
        ),
        (
            "ingress: true\n",
            "ingress: true\ningress_panel: true\n",
            "`ingress_panel` is not a Supervisor key (it would be ignored)",
        ),
        (
            "ingress: true\n",
            "ingress: true\ningress_port: 8099\n",
            "`ingress_port: 8099` is the default: leave it out",
        ),
        (
            "ingress: true\n",
            "ingress: true\npanel_admin: true\n",
            "`panel_admin: true` is the default: leave it out",
        ),
        (
            "ingress: true\n",
            "ingress: true\nstartup: application\n",
            "`startup: application` is the default: leave it out",
        ),
        (
            "ingress: true\n",
            "ingress: true\nboot: auto\n",
            "`boot: auto` is the default: leave it out",
        ),
        (
            "ingress: true\n",
            "ingress: true\ninit: true\n",
            "`init: true` is the default: leave it out",
        ),
        (
            "ingress: true\n",
            "ingress: true\nsnapshot_exclude: []\n",
            "`snapshot_exclude` is deprecated: use `backup_exclude`",
        ),
        (
            "ingress: true\n",
            "ingress: true\napparmor: profile\n",
            "`apparmor` must be a boolean (a custom profile goes in apparmor.txt)",
        ),
        (
            "{arch}-heapwatch\n",
            "{arch}-heapwatch:0.1.0\n",
            "`image` \"ghcr.io/heapwatch/{arch}-heapwatch:0.1.0\" must have no tag (the tag is `version`)",
        ),
        (
            "panel_icon: mdi:memory",
            "panel_icon: memory",
            "`panel_icon` \"memory\" must be an mdi: icon",
        ),
        (
            "\"8100/tcp\": null",
            "\"8100/tc\": null",
            "port `8100/tc` must be a string like \"8100/tcp\"",
        ),
        (
            "\"8100/tcp\": null",
            "8100: null",
            "port `8100` must be a string like \"8100/tcp\"",
        ),
        (
            "\"8100/tcp\": null",
            "\"8100/tcp\": 70000",
            "port `8100/tcp`: host port must be null or 1–65535, got 70000",
        ),
        (
            "[PORT:8099]",
            "[PORT:8100]",
            "`watchdog` \"http://[HOST]:[PORT:8100]/healthz\" should poll the ingress port [PORT:8099]",
        ),
        (
            "debug_memory: bool\n",
            "debug_memory: boolean\n",
            "schema.debug_memory: `boolean`: unknown type `boolean`",
        ),
        (
            "int(1,64)",
            "int(1,6.4)",
            "schema.debug_memory_frames: `int(1,6.4)`: bound `6.4` is not a valid int bound",
        ),
        (
            "int(1,64)",
            "int(64,1)",
            "schema.debug_memory_frames: `int(64,1)`: min 64 is above max 1",
        ),
        (
            "int(1,64)",
            "int(1-64)",
            "schema.debug_memory_frames: `int(1-64)`: a range is (min,max), either may be empty",
        ),
        (
            "list(sampled|exact)",
            "list(sampled||exact)",
            "schema.debug_memory_mode: `list(sampled||exact)`: list items must be non-empty words separated by |",
        ),
        (
            "  debug_memory_sample_kib: 512\n",
            "  debug_memory_sample_kib: 512\n  extra: 1\n",
            "options.extra has no schema entry",
        ),
    ];
    for (from, to, want) in cases {
        assert!(text.contains(from), "`{from}` not in config.yaml");
        let broken = text.replacen(from, to, 1);
        assert_eq!(
            config_problems(&broken, &version),
            [want],
            "after `{from}` → `{to}`"
        );
    }
}

#[test]
fn option_type_syntax() {
    for ok in [
        "bool",
        "bool?",
        "email",
        "url?",
        "port",
        "match(^[a-z]+$)",
        "list(a|b|c)",
        "str",
        "str(1,)",
        "str(,10)?",
        "int",
        "int(-5,+5)",
        "int(0,)?",
        "float(0.5,2)",
        "password(32,)?",
        "password",
    ] {
        assert_eq!(check_option_type(ok), Ok(()), "{ok}");
    }
    for bad in [
        "boolean",
        "bool??",
        "int(1,64",
        "int(a,b)",
        "list()",
        "match()",
        "string",
        "int[1,2]",
        "float(1e3,)",
    ] {
        assert!(check_option_type(bad).is_err(), "{bad} should be rejected");
    }
}

#[test]
fn changelog_rule_breaks_are_reported() {
    assert_eq!(
        changelog_problems("# Changelog\n\n## [Unreleased]\n\n## 0.1.0\n", "0.1.0"),
        Vec::<String>::new()
    );
    assert_eq!(
        changelog_problems("# Changelog\n\n## 0.0.9\n\n## 0.1.0\n", "0.1.0"),
        ["CHANGELOG.md: the newest release heading is `## 0.0.9`, expected `## 0.1.0`"]
    );
    assert_eq!(
        changelog_problems("# Changelog\n\n## [0.1.0] - 2026-01-01\n", "0.1.0"),
        [
            "CHANGELOG.md: the newest release heading is `## [0.1.0] - 2026-01-01`, expected `## 0.1.0`"
        ]
    );
    assert_eq!(
        changelog_problems("# Changelog\n", "0.1.0"),
        ["CHANGELOG.md: no `## 0.1.0` heading"]
    );
}

#[test]
fn image_rule_breaks_are_reported() {
    let icon = read_bytes("addon/icon.png");
    let logo = read_bytes("addon/logo.png");
    assert_eq!(png_size(&icon), Ok((128, 128)));
    assert_eq!(
        image_problems(&logo, &icon),
        [
            "icon.png is 250×100, expected 128×128",
            "logo.png is 128×128, expected about 250×100"
        ]
    );
    let mut corrupt = icon.clone();
    corrupt[19] ^= 1; // a width byte: the CRC no longer matches
    assert_eq!(png_size(&corrupt), Err("IHDR CRC mismatch".into()));
    assert_eq!(png_size(b"GIF89a"), Err("not a PNG (bad signature)".into()));
    assert_eq!(
        png_size(&icon[..20]),
        Err("truncated before the end of IHDR".into())
    );
    assert_eq!(
        png_size(&icon[..icon.len() - 1]),
        Err("no IEND chunk at the end".into())
    );
}

#[test]
fn apparmor_rule_breaks_are_reported() {
    let text = read_text("addon/apparmor.txt");
    let line = "profile heapwatch flags=(attach_disconnected,mediate_deleted) {";
    assert!(text.contains(line));
    assert_eq!(
        apparmor_problems(&text.replace(line, &format!("  {line}")), "heapwatch"),
        ["apparmor.txt: 0 unindented `profile` lines, expected exactly 1"]
    );
    assert_eq!(
        apparmor_problems(&format!("{text}\n{line}\n}}\n"), "heapwatch"),
        ["apparmor.txt: 2 unindented `profile` lines, expected exactly 1"]
    );
    assert_eq!(
        apparmor_problems(&text, "heap-watch"),
        ["apparmor.txt: profile `heapwatch`, expected `heap-watch`"]
    );
    assert_eq!(
        apparmor_problems(
            &text.replace(" flags=(attach_disconnected,mediate_deleted)", ""),
            "heapwatch"
        ),
        ["apparmor.txt: the profile needs flags=(attach_disconnected,mediate_deleted)"]
    );
    let last = text.rfind('}').expect("closing brace");
    assert_eq!(
        apparmor_problems(&text[..last], "heapwatch"),
        ["apparmor.txt: unbalanced braces"]
    );
}

#[test]
fn dockerfile_rule_breaks_are_reported() {
    let text = read_text("addon/Dockerfile");
    assert_eq!(
        dockerfile_problems(&text, "0.2.0"),
        ["Dockerfile: missing `ARG BUILD_VERSION=0.2.0`"]
    );
    assert_eq!(
        dockerfile_problems(
            &text.replace("FROM scratch", "FROM busybox:1.37-musl"),
            "0.1.0"
        ),
        ["Dockerfile: expected one stage `FROM scratch`, found [\"FROM busybox:1.37-musl\"]"]
    );
    assert_eq!(
        dockerfile_problems(&text.replace("WORKDIR /data", "RUN mkdir /data"), "0.1.0"),
        ["Dockerfile: `RUN` has no place in a binary-only image"]
    );
    assert_eq!(
        dockerfile_problems(&text.replace("\"healthcheck\"]", "\"wget\"]"), "0.1.0"),
        ["Dockerfile: missing `CMD [\"/usr/bin/heapwatch\", \"healthcheck\"]`"]
    );
}

#[test]
fn release_workflow_rule_breaks_are_reported() {
    let text = read_text(".github/workflows/release.yml");
    let script = read_text(".ci/build-static");
    let arches = ["amd64".to_string(), "aarch64".to_string()];
    assert_eq!(
        release_workflow_problems(
            &text,
            &script.replace("force-frame-pointers=yes", "force-frame-pointers=no"),
            &arches
        ),
        [".ci/build-static: missing `-C force-frame-pointers=yes`"]
    );
    assert_eq!(
        release_workflow_problems(
            &text.replace("bash .ci/build-static", "cargo build --release"),
            &script,
            &arches
        ),
        ["release.yml: does not build with `.ci/build-static`"]
    );
    let three = [
        "amd64".to_string(),
        "aarch64".to_string(),
        "armv7".to_string(),
    ];
    assert_eq!(
        release_workflow_problems(&text, &script, &three),
        [
            "release.yml: no binary for arch `armv7`",
            "release.yml: the image loop covers Some([\"amd64\", \"aarch64\"]), \
             expected [\"amd64\", \"aarch64\", \"armv7\"]",
        ]
    );
}
