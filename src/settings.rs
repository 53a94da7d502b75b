//! Typed settings: built-in defaults < the options file the Supervisor writes (JSON) <
//! environment variables `HEAPWATCH_<KEY>`.
//!
//! The `config` crate layers the sources; this module owns the key list, the types, the
//! ranges and the error messages (each names the source, the key and what was expected).
//! `main.rs` turns an error into exit status 78 before any port is bound. An environment
//! variable with the prefix that names no key is not an error: it is ignored and logged
//! as a warning ([`Settings::ignored_env`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Source, Value, ValueKind};

/// Where the Supervisor writes the add-on's options.
pub const DEFAULT_OPTIONS_PATH: &str = "/data/options.json";

/// The environment prefix: `HEAPWATCH_LOG_LEVEL` sets `log_level`.
pub const ENV_PREFIX: &str = "HEAPWATCH";

/// The ESPHome device-builder style gate, read with its own truthy table (see
/// [`env_flag_is_on`]) and overriding the `debug_memory` option when set.
pub const DEBUG_MEMORY_ENV: &str = "HEAPWATCH_DEBUG_MEMORY";

/// The shortest accepted `api_token`: 32 characters is 192 bits or more from any
/// reasonable generator, and matches the add-on schema `password(32,)`.
pub const MIN_TOKEN_CHARS: usize = 32;

/// Log verbosity, spelled as Home Assistant spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    /// Every accepted spelling, in order of verbosity.
    pub const NAMES: [&'static str; 5] = ["trace", "debug", "info", "warning", "error"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warning" => Self::Warning,
            "error" => Self::Error,
            _ => return None,
        })
    }

    /// The matching `tracing` level.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            Self::Trace => tracing::Level::TRACE,
            Self::Debug => tracing::Level::DEBUG,
            Self::Info => tracing::Level::INFO,
            Self::Warning => tracing::Level::WARN,
            Self::Error => tracing::Level::ERROR,
        }
    }
}

/// How the tracker records allocation sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryMode {
    Sampled,
    Exact,
}

impl MemoryMode {
    /// Every accepted spelling.
    pub const NAMES: [&'static str; 2] = ["sampled", "exact"];
}

/// A secret string: never printed by `Debug`, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(**redacted**)")
    }
}

/// The effective settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub log_level: LogLevel,
    pub debug_memory: bool,
    pub debug_memory_mode: MemoryMode,
    pub debug_memory_frames: u32,
    pub debug_memory_sample_kib: u32,
    /// The sampler's seed (sampled mode): `None` samples afresh each run.
    pub debug_memory_seed: Option<u64>,
    pub api_token: Option<Secret>,
    pub ingress_listen: SocketAddr,
    pub direct_listen: SocketAddr,
    pub trusted_proxies: Vec<IpAddr>,
    pub data_dir: PathBuf,
    /// How often the leak trend records RSS and heap (not an add-on option; tests and
    /// embedders shorten it).
    pub trend_sample_interval_ms: u32,
    /// How often, while tracking, the trend takes an automatic per-stack checkpoint.
    pub trend_checkpoint_interval_ms: u32,
    /// Where the Supervisor's API is (`http://supervisor` inside Home Assistant).
    pub supervisor_url: String,
    /// Seconds between polls of every container's memory.
    pub host_poll_seconds: u32,
    /// Tests compress time: poll this often in real time, each poll standing for
    /// `host_poll_seconds` of history. Unset in production.
    pub host_poll_interval_ms: Option<u32>,
    /// Tell the user (a persistent notification) when a container keeps growing.
    pub notify_leaks: bool,
    /// The Supervisor's token, from the environment variable `SUPERVISOR_TOKEN` that the
    /// Supervisor sets for every add-on (not an option: never in the options file, never
    /// shown). Its presence means "running as an add-on".
    pub supervisor_token: Option<Secret>,
    /// `HEAPWATCH_*` environment variables that name no key, sorted: ignored (a user's
    /// environment may hold unrelated ones with that prefix), and `main` warns about each
    /// once logging is up.
    pub ignored_env: Vec<String>,
}

/// The type and range of one key, as the add-on schema states it. One table drives
/// parsing, validation, error messages and the consistency test against `addon/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// Any unsigned 64-bit integer, 0 to 2^64 − 1 (a seed: every value is as good as
    /// another, so the range is the whole type).
    U64,
    Choice(&'static [&'static str]),
    /// An optional secret string of at least `min_chars` characters.
    Password {
        min_chars: usize,
    },
    SocketAddr,
    IpList,
    Path,
    /// A plain `http://host[:port]` base address.
    HttpUrl,
}

/// One settings key.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: KeyKind,
    /// The default as the options file would spell it (`None`: unset).
    pub default: Option<DefaultValue>,
    /// Shown to add-on users (in `addon/config.yaml` and the translations).
    pub user_facing: bool,
}

/// A default value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    Bool(bool),
    Int(i64),
    Str(&'static str),
    StrList(&'static [&'static str]),
}

/// Every key, in the order documented.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "log_level",
        kind: KeyKind::Choice(&LogLevel::NAMES),
        default: Some(DefaultValue::Str("info")),
        user_facing: true,
    },
    KeySpec {
        name: "debug_memory",
        kind: KeyKind::Bool,
        default: Some(DefaultValue::Bool(false)),
        user_facing: true,
    },
    KeySpec {
        name: "debug_memory_mode",
        kind: KeyKind::Choice(&MemoryMode::NAMES),
        default: Some(DefaultValue::Str("sampled")),
        user_facing: true,
    },
    KeySpec {
        name: "debug_memory_frames",
        kind: KeyKind::Int { min: 1, max: 64 },
        default: Some(DefaultValue::Int(32)),
        user_facing: true,
    },
    KeySpec {
        name: "debug_memory_sample_kib",
        kind: KeyKind::Int { min: 1, max: 65536 },
        default: Some(DefaultValue::Int(512)),
        user_facing: true,
    },
    // Unset by default: each run samples afresh, so a block missed once is not missed
    // every time. A seed is for repeating a run exactly (tests, bug reports).
    KeySpec {
        name: "debug_memory_seed",
        kind: KeyKind::U64,
        default: None,
        user_facing: true,
    },
    KeySpec {
        name: "api_token",
        kind: KeyKind::Password {
            min_chars: MIN_TOKEN_CHARS,
        },
        default: None,
        user_facing: true,
    },
    KeySpec {
        name: "ingress_listen",
        kind: KeyKind::SocketAddr,
        default: Some(DefaultValue::Str("0.0.0.0:8099")),
        user_facing: false,
    },
    KeySpec {
        name: "direct_listen",
        kind: KeyKind::SocketAddr,
        default: Some(DefaultValue::Str("0.0.0.0:8100")),
        user_facing: false,
    },
    KeySpec {
        name: "trusted_proxies",
        kind: KeyKind::IpList,
        default: Some(DefaultValue::StrList(&["172.30.32.2"])),
        user_facing: false,
    },
    KeySpec {
        name: "data_dir",
        kind: KeyKind::Path,
        default: Some(DefaultValue::Str("/data")),
        user_facing: false,
    },
    // A minute between trend samples: 1,440 of them are a day. Ten milliseconds at the
    // least keeps a mistyped value from spinning a core.
    KeySpec {
        name: "trend_sample_interval_ms",
        kind: KeyKind::Int {
            min: 10,
            max: 3_600_000,
        },
        default: Some(DefaultValue::Int(60_000)),
        user_facing: false,
    },
    // Ten minutes between checkpoints: six of them cover the last hour.
    KeySpec {
        name: "trend_checkpoint_interval_ms",
        kind: KeyKind::Int {
            min: 10,
            max: 86_400_000,
        },
        default: Some(DefaultValue::Int(600_000)),
        user_facing: false,
    },
    KeySpec {
        name: "host_poll_seconds",
        kind: KeyKind::Int { min: 15, max: 3600 },
        default: Some(DefaultValue::Int(60)),
        user_facing: true,
    },
    KeySpec {
        name: "notify_leaks",
        kind: KeyKind::Bool,
        default: Some(DefaultValue::Bool(true)),
        user_facing: true,
    },
    KeySpec {
        name: "supervisor_url",
        kind: KeyKind::HttpUrl,
        default: Some(DefaultValue::Str("http://supervisor")),
        user_facing: false,
    },
    // Only tests set this (time compressed: one poll every few milliseconds, each standing
    // for `host_poll_seconds`); ten milliseconds at the least keeps a core free.
    KeySpec {
        name: "host_poll_interval_ms",
        kind: KeyKind::Int {
            min: 10,
            max: 3_600_000,
        },
        default: None,
        user_facing: false,
    },
];

/// Why the settings could not be loaded. Each message names the source, the key and what
/// was expected, so the one error line is enough to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: cannot read the options file: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("{path}: not valid JSON: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: expected a JSON object of options at the top level")]
    NotAnObject { path: PathBuf },
    #[error("{source_name}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        source_name: String,
        key: String,
        known: String,
    },
    #[error("{source_name}: key `{key}`: expected {expected}, got {got}")]
    Invalid {
        source_name: String,
        key: String,
        expected: String,
        got: String,
    },
    #[error("settings: {0}")]
    Config(String),
}

/// Where the settings came from, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionsSource {
    File(PathBuf),
    /// The file did not exist: defaults (and the environment) apply.
    Missing(PathBuf),
}

/// The variable the Supervisor sets with the add-on's API token.
pub const SUPERVISOR_TOKEN_ENV: &str = "SUPERVISOR_TOKEN";

/// The options path [`Settings::embedded`] reads: none exists, so only the defaults
/// (and the two values it passes) apply.
const EMBEDDED_NO_FILE: &str = "/nonexistent/heapwatch-embedded/options.json";

/// The ESPHome device-builder truthy table: on for "1", "true", "yes", "on"
/// (case-insensitive, surrounding whitespace ignored); off for anything else.
pub fn env_flag_is_on(value: &str) -> bool {
    let v = value.trim();
    ["1", "true", "yes", "on"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

impl Settings {
    /// Loads the settings from `options_path` and the process environment.
    ///
    /// # Errors
    /// Any [`SettingsError`]: the file is unreadable or malformed, a key is unknown, or a
    /// value has the wrong type or is out of range.
    pub fn load(options_path: &Path) -> Result<(Self, OptionsSource), SettingsError> {
        Self::load_from(options_path, std::env::vars())
    }

    /// [`Settings::load`] with an explicit environment, for tests.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_from(
        options_path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, OptionsSource), SettingsError> {
        Self::load_inner(options_path, env, false)
    }

    /// [`Settings::load`] for `--dev`: the ingress listener defaults to 127.0.0.1:8099,
    /// loopback is the trusted proxy and data lives under `./data` (the file and the
    /// environment still override these).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_dev(options_path: &Path) -> Result<(Self, OptionsSource), SettingsError> {
        Self::load_inner(options_path, std::env::vars(), true)
    }

    /// Settings for embedding the admin API in another service: no options file and no
    /// environment, both listeners on loopback (ingress 127.0.0.1:8099, direct
    /// 127.0.0.1:8100), loopback as the only trusted proxy, data under `./data`, and
    /// `api_token` required on every request that does not come through a trusted proxy.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when `api_token` breaks the options file's rule (at
    /// least 32 characters, no control characters).
    pub fn embedded(api_token: &str) -> Result<Self, SettingsError> {
        let env = [
            (format!("{ENV_PREFIX}_API_TOKEN"), api_token.to_owned()),
            (
                format!("{ENV_PREFIX}_DIRECT_LISTEN"),
                "127.0.0.1:8100".into(),
            ),
        ];
        let (settings, _) = Self::load_inner(Path::new(EMBEDDED_NO_FILE), env, true)?;
        Ok(settings)
    }

    fn load_inner(
        options_path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        dev: bool,
    ) -> Result<(Self, OptionsSource), SettingsError> {
        let (file_json, source) = read_options_file(options_path)?;
        let file_name = options_path.display().to_string();
        if let Some(obj) = &file_json {
            for key in obj.keys() {
                if !KEYS.iter().any(|k| k.name == key) {
                    return Err(unknown_key(&file_name, key));
                }
            }
        }

        let mut env_map = BTreeMap::new();
        let mut debug_memory_env = None;
        let mut supervisor_token = None;
        let mut ignored_env = Vec::new();
        let prefix = format!("{ENV_PREFIX}_");
        for (name, value) in env {
            if name == DEBUG_MEMORY_ENV {
                debug_memory_env = Some(env_flag_is_on(&value));
            } else if name == SUPERVISOR_TOKEN_ENV {
                supervisor_token = Some(Secret(value)).filter(|t| !t.0.is_empty());
            } else if let Some(key) = name.strip_prefix(&prefix) {
                let key = key.to_ascii_lowercase();
                if !KEYS.iter().any(|k| k.name == key) {
                    ignored_env.push(name);
                    continue;
                }
                env_map.insert(name, value);
            }
        }

        let mut builder = Config::builder();
        for spec in KEYS {
            if let Some(value) = default_value(spec, dev) {
                builder = builder
                    .set_default(spec.name, value)
                    .map_err(|e| SettingsError::Config(e.to_string()))?;
            }
        }
        if let Some(obj) = &file_json {
            let text = serde_json::Value::Object(obj.clone()).to_string();
            // `File::from_str` loses the path; origin for messages comes from `file_name`.
            builder = builder.add_source(File::from_str(&text, FileFormat::Json));
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .list_separator(",")
                .with_list_parse_key("trusted_proxies")
                .source(Some(env_map.into_iter().collect())),
        );
        if let Some(on) = debug_memory_env {
            builder = builder
                .set_override("debug_memory", on)
                .map_err(|e| SettingsError::Config(e.to_string()))?;
        }
        let cfg = builder
            .build()
            .map_err(|e| SettingsError::Config(e.to_string()))?;

        // `collect` keeps each value's origin (`get` would lose it in deserialization).
        let table = cfg
            .collect()
            .map_err(|e| SettingsError::Config(e.to_string()))?;
        let get = |name: &str| -> Option<Value> {
            table
                .get(name)
                .filter(|v| !matches!(v.kind, ValueKind::Nil))
                .cloned()
        };
        let origin = |name: &str, v: &Value| -> String {
            match v.origin() {
                Some("the environment") => format!(
                    "environment variable {ENV_PREFIX}_{}",
                    name.to_ascii_uppercase()
                ),
                _ if file_json.as_ref().is_some_and(|o| o.contains_key(name)) => file_name.clone(),
                _ => "built-in default".to_string(),
            }
        };
        // A key that is absent or null takes its default (the same one `set_default` was
        // given), so `null` in the options file means "unset", as the Supervisor writes it.
        let field = |name: &str| -> Result<Option<Parsed>, SettingsError> {
            let spec = KEYS
                .iter()
                .find(|k| k.name == name)
                .expect("every field is in KEYS");
            match get(name) {
                Some(v) => parse_value(spec, &v, &origin(name, &v)).map(Some),
                None => match default_value(spec, dev) {
                    Some(v) => parse_value(spec, &v, "built-in default").map(Some),
                    None => Ok(None),
                },
            }
        };
        let required = |name: &str| -> Result<Parsed, SettingsError> {
            Ok(field(name)?.expect("every key but api_token has a default"))
        };
        let int = |name: &str| -> Result<u32, SettingsError> {
            Ok(u32::try_from(required(name)?.int()).expect("range-checked against KEYS"))
        };

        let log_level =
            LogLevel::parse(&required("log_level")?.string()).expect("validated against NAMES");
        let debug_memory = matches!(required("debug_memory")?, Parsed::Bool(true));
        let debug_memory_mode = if required("debug_memory_mode")?.string() == "exact" {
            MemoryMode::Exact
        } else {
            MemoryMode::Sampled
        };
        let debug_memory_frames = int("debug_memory_frames")?;
        let debug_memory_sample_kib = int("debug_memory_sample_kib")?;
        let debug_memory_seed = field("debug_memory_seed")?.map(Parsed::unsigned);
        let api_token = field("api_token")?.map(|p| Secret(p.string()));
        let ingress_listen = required("ingress_listen")?.addr();
        let direct_listen = required("direct_listen")?.addr();
        let trusted_proxies = match required("trusted_proxies")? {
            Parsed::Ips(ips) => ips,
            _ => unreachable!("an IpList key parses to Ips"),
        };
        let data_dir = PathBuf::from(required("data_dir")?.string());
        let trend_sample_interval_ms = int("trend_sample_interval_ms")?;
        let trend_checkpoint_interval_ms = int("trend_checkpoint_interval_ms")?;
        let supervisor_url = required("supervisor_url")?.string();
        let host_poll_seconds = int("host_poll_seconds")?;
        let host_poll_interval_ms = field("host_poll_interval_ms")?
            .map(|p| u32::try_from(p.int()).expect("range-checked against KEYS"));
        let notify_leaks = matches!(required("notify_leaks")?, Parsed::Bool(true));

        let settings = Settings {
            log_level,
            debug_memory,
            debug_memory_mode,
            debug_memory_frames,
            debug_memory_sample_kib,
            debug_memory_seed,
            api_token,
            ingress_listen,
            direct_listen,
            trusted_proxies,
            data_dir,
            trend_sample_interval_ms,
            trend_checkpoint_interval_ms,
            supervisor_url,
            host_poll_seconds,
            host_poll_interval_ms,
            notify_leaks,
            supervisor_token,
            ignored_env: {
                ignored_env.sort();
                ignored_env
            },
        };
        Ok((settings, source))
    }

    /// The settings as JSON for `system/info` and reports: secrets redacted.
    pub fn redacted_json(&self) -> serde_json::Value {
        serde_json::json!({
            "log_level": self.log_level,
            "debug_memory": self.debug_memory,
            "debug_memory_mode": self.debug_memory_mode,
            "debug_memory_frames": self.debug_memory_frames,
            "debug_memory_sample_kib": self.debug_memory_sample_kib,
            "debug_memory_seed": self.debug_memory_seed,
            "api_token": self.api_token.as_ref().map(|_| "**redacted**"),
            "ingress_listen": self.ingress_listen.to_string(),
            "direct_listen": self.direct_listen.to_string(),
            "trusted_proxies": self.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "data_dir": self.data_dir.display().to_string(),
            "trend_sample_interval_ms": self.trend_sample_interval_ms,
            "trend_checkpoint_interval_ms": self.trend_checkpoint_interval_ms,
            "supervisor_url": self.supervisor_url,
            "host_poll_seconds": self.host_poll_seconds,
            "host_poll_interval_ms": self.host_poll_interval_ms,
            "notify_leaks": self.notify_leaks,
        })
    }
}

fn unknown_key(source_name: &str, key: &str) -> SettingsError {
    SettingsError::UnknownKey {
        source_name: source_name.to_string(),
        key: key.to_string(),
        known: KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
    }
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

fn read_options_file(path: &Path) -> Result<(Option<JsonObject>, OptionsSource), SettingsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, OptionsSource::Missing(path.to_path_buf())));
        }
        Err(e) => {
            let reason = if path.is_dir() {
                "it is a directory".to_string()
            } else {
                e.to_string()
            };
            return Err(SettingsError::Unreadable {
                path: path.to_path_buf(),
                reason,
            });
        }
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SettingsError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    match value {
        serde_json::Value::Object(obj) => Ok((Some(obj), OptionsSource::File(path.to_path_buf()))),
        _ => Err(SettingsError::NotAnObject {
            path: path.to_path_buf(),
        }),
    }
}

/// A value checked against its [`KeySpec`].
enum Parsed {
    Bool(bool),
    Int(i64),
    Unsigned(u64),
    Str(String),
    Addr(SocketAddr),
    Ips(Vec<IpAddr>),
}

impl Parsed {
    // The accessors below are called only for keys whose `KeyKind` parses to that variant.
    fn int(self) -> i64 {
        match self {
            Parsed::Int(i) => i,
            _ => unreachable!("an Int key parses to Int"),
        }
    }
    fn unsigned(self) -> u64 {
        match self {
            Parsed::Unsigned(u) => u,
            _ => unreachable!("a U64 key parses to Unsigned"),
        }
    }
    fn string(self) -> String {
        match self {
            Parsed::Str(s) => s,
            _ => unreachable!("a Choice, Password or Path key parses to Str"),
        }
    }
    fn addr(self) -> SocketAddr {
        match self {
            Parsed::Addr(a) => a,
            _ => unreachable!("a SocketAddr key parses to Addr"),
        }
    }
}

/// A key's built-in default as a `config` value; `--dev` changes three of them.
fn default_value(spec: &KeySpec, dev: bool) -> Option<Value> {
    let dev_default = match spec.name {
        "ingress_listen" if dev => Some(DefaultValue::Str("127.0.0.1:8099")),
        "trusted_proxies" if dev => Some(DefaultValue::StrList(&["127.0.0.1", "::1"])),
        "data_dir" if dev => Some(DefaultValue::Str("./data")),
        _ => None,
    };
    dev_default.or(spec.default).map(|d| match d {
        DefaultValue::Bool(b) => b.into(),
        DefaultValue::Int(i) => i.into(),
        DefaultValue::Str(s) => s.into(),
        DefaultValue::StrList(l) => l.to_vec().into(),
    })
}

fn describe(v: &Value) -> String {
    match &v.kind {
        ValueKind::Nil => "null".into(),
        ValueKind::Boolean(b) => format!("boolean {b}"),
        ValueKind::I64(i) => format!("integer {i}"),
        ValueKind::I128(i) => format!("integer {i}"),
        ValueKind::U64(i) => format!("integer {i}"),
        ValueKind::U128(i) => format!("integer {i}"),
        ValueKind::Float(f) => format!("number {f}"),
        ValueKind::String(s) if s.chars().count() > 40 => "a string".into(),
        ValueKind::String(s) => format!("string {s:?}"),
        ValueKind::Table(_) => "an object".into(),
        ValueKind::Array(_) => "an array".into(),
    }
}

fn parse_value(spec: &KeySpec, v: &Value, source_name: &str) -> Result<Parsed, SettingsError> {
    let from_env = v.origin() == Some("the environment");
    let invalid = |expected: String, got: String| SettingsError::Invalid {
        source_name: source_name.to_string(),
        key: spec.name.to_string(),
        expected,
        got,
    };
    let as_str = || match &v.kind {
        ValueKind::String(s) => Some(s.clone()),
        _ => None,
    };
    match spec.kind {
        KeyKind::Bool => match (&v.kind, from_env) {
            (ValueKind::Boolean(b), _) => Ok(Parsed::Bool(*b)),
            (ValueKind::String(s), true) if s.trim().eq_ignore_ascii_case("true") => {
                Ok(Parsed::Bool(true))
            }
            (ValueKind::String(s), true) if s.trim().eq_ignore_ascii_case("false") => {
                Ok(Parsed::Bool(false))
            }
            _ => Err(invalid("true or false".into(), describe(v))),
        },
        KeyKind::Int { min, max } => {
            let expected = || format!("an integer from {min} to {max}");
            let n = match (&v.kind, from_env) {
                (ValueKind::I64(i), _) => Some(*i),
                (ValueKind::U64(i), _) => i64::try_from(*i).ok(),
                (ValueKind::String(s), true) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if (min..=max).contains(&n) => Ok(Parsed::Int(n)),
                _ => Err(invalid(expected(), describe(v))),
            }
        }
        KeyKind::U64 => {
            let n = match (&v.kind, from_env) {
                (ValueKind::I64(i), _) => u64::try_from(*i).ok(),
                (ValueKind::U64(u), _) => Some(*u),
                (ValueKind::I128(i), _) => u64::try_from(*i).ok(),
                (ValueKind::U128(u), _) => u64::try_from(*u).ok(),
                (ValueKind::String(s), true) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            n.map(Parsed::Unsigned)
                .ok_or_else(|| invalid(format!("an integer from 0 to {}", u64::MAX), describe(v)))
        }
        KeyKind::Choice(names) => match as_str() {
            Some(s) if names.contains(&s.as_str()) => Ok(Parsed::Str(s)),
            _ => Err(invalid(format!("one of {}", names.join(", ")), describe(v))),
        },
        KeyKind::Password { min_chars } => match as_str() {
            Some(s) if s.chars().count() >= min_chars && !s.chars().any(char::is_control) => {
                Ok(Parsed::Str(s))
            }
            // Never echo a secret, even a wrong one.
            Some(s) => Err(invalid(
                format!("a string of at least {min_chars} characters without control characters"),
                format!("a string of {} characters", s.chars().count()),
            )),
            None => Err(invalid(
                format!("a string of at least {min_chars} characters"),
                describe(v),
            )),
        },
        KeyKind::SocketAddr => match as_str().map(|s| s.trim().parse::<SocketAddr>()) {
            Some(Ok(a)) => Ok(Parsed::Addr(a)),
            _ => Err(invalid(
                "an address and port such as 0.0.0.0:8099".into(),
                describe(v),
            )),
        },
        KeyKind::IpList => {
            let items: Vec<String> = match &v.kind {
                ValueKind::Array(a) => a
                    .iter()
                    .map(|x| match &x.kind {
                        ValueKind::String(s) => Ok(s.trim().to_string()),
                        _ => Err(invalid("a list of IP addresses".into(), describe(x))),
                    })
                    .collect::<Result<_, _>>()?,
                ValueKind::String(s) if from_env => {
                    s.split(',').map(|p| p.trim().to_string()).collect()
                }
                _ => return Err(invalid("a list of IP addresses".into(), describe(v))),
            };
            items
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| invalid("a list of IP addresses".into(), format!("{s:?}")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Parsed::Ips)
        }
        KeyKind::Path => match as_str() {
            Some(s) if !s.is_empty() => Ok(Parsed::Str(s)),
            _ => Err(invalid("a non-empty path".into(), describe(v))),
        },
        KeyKind::HttpUrl => match as_str() {
            Some(s) if is_http_base(s.trim()) => Ok(Parsed::Str(s.trim().to_string())),
            _ => Err(invalid(
                "a base address such as http://supervisor or http://127.0.0.1:8123".into(),
                describe(v),
            )),
        },
    }
}

/// `http://host[:port]` with at most a trailing slash: no path, query or user.
fn is_http_base(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("http://") else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && rest.parse::<hyper::http::uri::Authority>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("options.json");
        if let Some(j) = json {
            std::fs::write(&path, j).expect("write options");
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(&path, env).map(|(s, _)| s)
    }

    #[test]
    fn defaults_when_file_missing() {
        let s = load(None, &[]).expect("defaults load");
        assert_eq!(s.log_level, LogLevel::Info);
        assert!(!s.debug_memory);
        assert_eq!(s.debug_memory_mode, MemoryMode::Sampled);
        assert_eq!(s.debug_memory_frames, 32);
        assert_eq!(s.debug_memory_sample_kib, 512);
        assert_eq!(s.debug_memory_seed, None);
        assert_eq!(s.api_token, None);
        assert_eq!(s.ingress_listen, "0.0.0.0:8099".parse().unwrap());
        assert_eq!(s.direct_listen, "0.0.0.0:8100".parse().unwrap());
        assert_eq!(
            s.trusted_proxies,
            vec!["172.30.32.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.data_dir, PathBuf::from("/data"));
    }

    #[test]
    fn file_then_env_precedence() {
        let s = load(
            Some(r#"{"log_level":"debug","debug_memory_frames":8,"debug_memory_mode":"exact"}"#),
            &[
                ("HEAPWATCH_DEBUG_MEMORY_FRAMES", "16"),
                ("HEAPWATCH_TRUSTED_PROXIES", "127.0.0.1, ::1"),
            ],
        )
        .expect("loads");
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(s.debug_memory_mode, MemoryMode::Exact);
        assert_eq!(s.debug_memory_frames, 16);
        assert_eq!(s.trusted_proxies.len(), 2);
    }

    #[test]
    fn env_truthy_table_overrides_option() {
        let on = [
            "1", "true", "TRUE", "yes", "Yes", "on", "ON", " on ", "\ttrue\n",
        ];
        let off = [
            "0", "false", "no", "off", "", " ", "ture", "enabled", "2", "y",
        ];
        for v in on {
            assert!(env_flag_is_on(v), "{v:?} should be on");
            let s = load(Some(r#"{"debug_memory":false}"#), &[(DEBUG_MEMORY_ENV, v)]).unwrap();
            assert!(s.debug_memory, "{v:?} should override false");
        }
        for v in off {
            assert!(!env_flag_is_on(v), "{v:?} should be off");
            let s = load(Some(r#"{"debug_memory":true}"#), &[(DEBUG_MEMORY_ENV, v)]).unwrap();
            assert!(!s.debug_memory, "{v:?} should override true");
        }
        let s = load(Some(r#"{"debug_memory":true}"#), &[]).unwrap();
        assert!(s.debug_memory, "unset env keeps the option");
    }

    #[test]
    fn errors_name_source_key_and_expectation() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#"{"debug_memory_frames":100}"#,
                &["options.json", "debug_memory_frames", "from 1 to 64", "100"],
            ),
            (
                r#"{"debug_memory_frames":"8"}"#,
                &["debug_memory_frames", "integer"],
            ),
            (
                r#"{"debug_memory":"yes"}"#,
                &["debug_memory", "true or false"],
            ),
            (r#"{"log_level":"warn"}"#, &["log_level", "warning"]),
            (r#"{"bogus":1}"#, &["unknown key `bogus`"]),
            (r#"{"api_token":"short"}"#, &["api_token", "at least 32"]),
            (
                r#"{"debug_memory_sample_kib":0}"#,
                &["debug_memory_sample_kib", "1 to 65536"],
            ),
            (
                r#"{"debug_memory_seed":-1}"#,
                &["debug_memory_seed", "from 0 to 18446744073709551615", "-1"],
            ),
            (
                r#"{"debug_memory_seed":1.5}"#,
                &["debug_memory_seed", "integer", "1.5"],
            ),
            (
                r#"{"debug_memory_seed":"42"}"#,
                &["debug_memory_seed", "integer", "\"42\""],
            ),
            (
                r#"{"debug_memory_seed":18446744073709551616}"#,
                &["debug_memory_seed", "from 0 to 18446744073709551615"],
            ),
            (
                r#"{"ingress_listen":"nope"}"#,
                &["ingress_listen", "address and port"],
            ),
            (r#"[1,2]"#, &["JSON object"]),
            (r#"{"log_level":"#, &["not valid JSON"]),
        ];
        for (json, needles) in cases {
            let err = load(Some(json), &[]).expect_err(json).to_string();
            for n in *needles {
                assert!(err.contains(n), "{json}: {err:?} lacks {n:?}");
            }
        }
        let err = load(None, &[("HEAPWATCH_DEBUG_MEMORY_FRAMES", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HEAPWATCH_DEBUG_MEMORY_FRAMES"), "{err}");
        // An unknown variable with the prefix is ignored (and warned about by `main`).
        let s = load(
            None,
            &[("HEAPWATCH_NOPE", "x"), ("HEAPWATCH_LOG_LEVEL", "debug")],
        )
        .expect("an unknown HEAPWATCH_ variable is not an error");
        assert_eq!(s.ignored_env, ["HEAPWATCH_NOPE"]);
        assert_eq!(s.log_level, LogLevel::Debug);
    }

    #[test]
    fn a_seed_is_any_u64_from_the_file_or_the_environment() {
        for (json, want) in [
            (r#"{"debug_memory_seed":0}"#, Some(0)),
            (r#"{"debug_memory_seed":42}"#, Some(42)),
            (
                r#"{"debug_memory_seed":18446744073709551615}"#,
                Some(u64::MAX),
            ),
            (r#"{"debug_memory_seed":null}"#, None),
            ("{}", None),
        ] {
            let s = load(Some(json), &[]).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(s.debug_memory_seed, want, "{json}");
            assert_eq!(
                s.redacted_json()["debug_memory_seed"],
                serde_json::json!(want)
            );
        }
        let s = load(
            Some(r#"{"debug_memory_seed":1}"#),
            &[("HEAPWATCH_DEBUG_MEMORY_SEED", " 18446744073709551615 ")],
        )
        .unwrap();
        assert_eq!(s.debug_memory_seed, Some(u64::MAX), "the environment wins");
        for bad in ["-3", "x", "", "1e3", "18446744073709551616"] {
            let err = load(None, &[("HEAPWATCH_DEBUG_MEMORY_SEED", bad)])
                .expect_err(bad)
                .to_string();
            assert!(
                err.contains("HEAPWATCH_DEBUG_MEMORY_SEED") && err.contains("from 0 to"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn secrets_never_printed() {
        let token = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let s = load(Some(&format!(r#"{{"api_token":"{token}"}}"#)), &[]).unwrap();
        assert!(!format!("{s:?}").contains(token));
        assert!(!s.redacted_json().to_string().contains(token));
        let err = load(Some(r#"{"api_token":"tooshort-secret"}"#), &[])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("tooshort-secret"), "{err}");
    }

    #[test]
    fn null_api_token_is_unset() {
        let s = load(Some(r#"{"api_token":null}"#), &[]).unwrap();
        assert_eq!(s.api_token, None);
    }

    #[test]
    fn null_means_the_default() {
        let s = load(
            Some(r#"{"trusted_proxies":null,"debug_memory_frames":null}"#),
            &[],
        )
        .unwrap();
        assert_eq!(
            s.trusted_proxies,
            vec!["172.30.32.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.debug_memory_frames, 32);
    }
}
