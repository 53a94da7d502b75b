//! The command registry: every WebSocket command (and the HTTP endpoints that mirror one)
//! is a name, a one-line summary and a handler taking typed arguments.
//!
//! Transports (`ws`, `http`) parse envelopes, then call [`dispatch`]; handlers reach state
//! only through [`Shared`] and the typed APIs of `memory` and `system`. Adding a command is
//! one file (or function) and one line in [`REGISTRY`].

pub mod auth;
pub mod debug;
pub mod export;
pub mod report;
pub mod stream;
pub mod system;
pub mod trend;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::auth::AuthGate;
use crate::memory::Baselines;
use crate::settings::Settings;
use crate::system::SystemSampler;

/// The server's version, as reported everywhere.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The boxed future every handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, CommandError>> + Send>>;

/// A command's result, as JSON. Most handlers build a [`Value`] tree; a handler on a busy
/// path (`ping`, `system/info`) answers with a constant or a typed struct that is written
/// straight into the reply, so a reply does not cost an allocation per key, string and
/// map node.
///
/// Whatever the variant, the text on the wire is what serializing the equivalent
/// [`Value`] writes: typed results declare their fields in alphabetical order (the order
/// of a `Value` map), and constants are compact.
pub enum Reply {
    /// A tree built with `json!`.
    Json(Value),
    /// A typed result, serialized when the reply is written.
    Typed(Box<dyn TypedResult>),
    /// Constant JSON text, written as it is.
    Constant(&'static str),
}

/// A typed result: anything serializable that owns its data.
pub trait TypedResult: Send + 'static {
    /// Writes the result's JSON text to `out`.
    ///
    /// # Errors
    /// Whatever the `Serialize` impl returns (the results here never fail).
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
    /// The result as a tree.
    ///
    /// # Errors
    /// As for [`TypedResult::write_json`].
    fn to_value(&self) -> serde_json::Result<Value>;
}

impl<T: serde::Serialize + Send + 'static> TypedResult for T {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }

    fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::to_value(self)
    }
}

impl Reply {
    /// A typed result (see [`Reply`] for the field order it must keep).
    pub fn typed(result: impl TypedResult) -> Self {
        Self::Typed(Box::new(result))
    }

    /// Writes the result's JSON text to `out`; no allocation beyond `out`'s growth.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Self::Json(v) => serde_json::to_writer(out, v).expect("a JSON value always serializes"),
            Self::Typed(t) => t.write_json(out).expect("a typed result always serializes"),
            Self::Constant(text) => out.extend_from_slice(text.as_bytes()),
        }
    }

    /// The result as a tree (for callers off the busy path: HTTP, tests).
    pub fn to_value(&self) -> Value {
        match self {
            Self::Json(v) => v.clone(),
            Self::Typed(t) => t.to_value().expect("a typed result always serializes"),
            Self::Constant(text) => {
                serde_json::from_str(text).expect("a constant result is valid JSON")
            }
        }
    }
}

impl From<Value> for Reply {
    fn from(value: Value) -> Self {
        Self::Json(value)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(v) => f.debug_tuple("Json").field(v).finish(),
            Self::Typed(t) => f.debug_tuple("Typed").field(&t.to_value()).finish(),
            Self::Constant(text) => f.debug_tuple("Constant").field(text).finish(),
        }
    }
}

impl serde::Serialize for Reply {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json(v) => v.serialize(serializer),
            _ => self.to_value().serialize(serializer),
        }
    }
}

/// One registered command.
#[derive(Clone, Copy)]
pub struct Command {
    /// `area/verb`, or one of the bare names `ping` and `auth`.
    pub name: &'static str,
    /// One line for `system/info` and the docs.
    pub summary: &'static str,
    /// Runs the command with its raw `args` object.
    pub run: fn(Context, Value) -> HandlerFuture,
}

/// Every command, in the order `system/info` lists them.
pub const REGISTRY: &[Command] = &[
    system::PING,
    auth::AUTH,
    system::INFO,
    debug::MEMORY_SNAPSHOT,
    debug::MEMORY_RESET_PEAK,
    stream::MEMORY_SUBSCRIBE,
    stream::MEMORY_UNSUBSCRIBE,
    trend::MEMORY_TREND,
];

/// Finds a command by name.
pub fn find(name: &str) -> Option<&'static Command> {
    REGISTRY.iter().find(|c| c.name == name)
}

/// What a command can fail with. Each variant is one wire error code; the details are
/// written for the user and never carry internals (those are logged).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("{0}")]
    InvalidMessage(String),
    #[error("{0}")]
    UnknownCommand(String),
    #[error("{0}")]
    InvalidArgs(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    NotAuthenticated(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Unavailable(String),
    /// The string is logged; the client only sees a generic message.
    #[error("internal error")]
    Internal(String),
}

impl CommandError {
    /// The lower-case wire code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidMessage(_) => "invalid_message",
            Self::UnknownCommand(_) => "unknown_command",
            Self::InvalidArgs(_) => "invalid_args",
            Self::NotFound(_) => "not_found",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::NotAuthenticated(_) => "not_authenticated",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The details a client may see.
    pub fn details(&self) -> String {
        match self {
            Self::Internal(_) => "internal error; the add-on log has the details".to_string(),
            other => other.to_string(),
        }
    }

    /// Logs an internal error's details and returns it unchanged.
    pub fn logged(self, command: &str) -> Self {
        if let Self::Internal(detail) = &self {
            tracing::error!(command, detail = %detail, "command failed");
        }
        self
    }
}

/// Which listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Behind Home Assistant ingress: the peer is the trusted proxy.
    Ingress,
    /// The token-protected direct port.
    Direct,
}

/// The Home Assistant user, as ingress reports them. (Fields in alphabetical order: see
/// [`Reply`].)
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub display_name: Option<String>,
    pub id: Option<String>,
    pub name: Option<String>,
}

/// Where the listeners are bound.
#[derive(Clone, Copy, Debug)]
pub struct BoundListeners {
    pub ingress: SocketAddr,
    pub direct: Option<SocketAddr>,
}

/// State shared by every connection and command.
pub struct Shared {
    pub settings: Settings,
    /// [`Settings::redacted_json`], built once: settings do not change while the server
    /// runs, and `system/info` shows them on every call.
    pub settings_json: Value,
    pub started_at: Instant,
    pub listeners: BoundListeners,
    /// Whether the process runs under the Supervisor (`SUPERVISOR_TOKEN` is set).
    pub ha_addon: bool,
    pub auth: AuthGate,
    /// std mutex: held only to read or change the map, never across `.await`.
    pub baselines: std::sync::Mutex<Baselines>,
    /// tokio mutex: serialises snapshot commands so two big snapshots never run at once
    /// (each holds symbolization caches); held across the blocking task's `.await` on
    /// purpose.
    pub snapshot_lock: tokio::sync::Mutex<()>,
    /// std mutex: the sampler is used inside `spawn_blocking` only.
    pub system: std::sync::Mutex<SystemSampler>,
    /// Set when shutdown begins; running commands get until this plus the command
    /// deadline to reply.
    pub shutdown_started: std::sync::OnceLock<Instant>,
    /// The one memory sampler behind every `debug/memory_subscribe`.
    pub memory_stream: stream::Hub,
    /// std mutex: the RSS/heap history ring; held to push or copy a window, never across
    /// `.await`.
    pub trend: std::sync::Mutex<crate::trend::History>,
    /// The trend's intervals and threshold (from `app::Limits`).
    pub trend_settings: crate::trend::TrendSettings,
    /// std mutex: the automatic checkpoints (apart from the user's baselines); held to
    /// push or clone, never across `.await`.
    pub checkpoints: std::sync::Mutex<crate::memory::Checkpoints>,
}

/// Per-connection facts a handler may use.
#[derive(Debug)]
pub struct Session {
    pub listener: ListenerKind,
    pub peer: IpAddr,
    pub user: Option<User>,
    /// Set once the session proved it may run commands (always on ingress; after a good
    /// bearer header or `auth` command on the direct listener).
    pub authenticated: AtomicBool,
    /// The session's bounded outbound queue for events (set by the WebSocket session).
    pub events: std::sync::OnceLock<tokio::sync::mpsc::Sender<String>>,
    /// Cancelled by an event producer that found `events` full: the client fell behind,
    /// and the session closes with 1008 instead of buffering more for it.
    pub slow_consumer: tokio_util::sync::CancellationToken,
}

impl Session {
    /// A new session with no event queue yet (the WebSocket session sets one).
    pub fn new(
        listener: ListenerKind,
        peer: IpAddr,
        user: Option<User>,
        authenticated: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            peer,
            user,
            authenticated: AtomicBool::new(authenticated),
            events: std::sync::OnceLock::new(),
            slow_consumer: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Whether commands other than `auth` may run.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }
}

/// What a handler receives.
#[derive(Clone)]
pub struct Context {
    pub shared: Arc<Shared>,
    pub session: Arc<Session>,
    /// The request's `message_id` on a WebSocket (streaming commands send their events
    /// on it); `None` over HTTP. Shared, so the session keeps it for the reply without a
    /// copy.
    pub message_id: Option<Arc<str>>,
}

/// Runs `name` with `args`: finds it, checks authentication, runs it.
///
/// # Errors
/// `unknown_command`, `not_authenticated`, or whatever the handler returns.
pub async fn dispatch(ctx: Context, name: &str, args: Value) -> Result<Reply, CommandError> {
    let command = authorize(&ctx.session, name)?;
    (command.run)(ctx, args)
        .await
        .map_err(|e| e.logged(command.name))
}

/// The first half of [`dispatch`]: finds `name` and checks that `session` may run it. The
/// caller runs `(command.run)(…)` and passes an error through [`CommandError::logged`].
///
/// # Errors
/// `unknown_command` or `not_authenticated`.
pub fn authorize(session: &Session, name: &str) -> Result<&'static Command, CommandError> {
    let command = find(name).ok_or_else(|| {
        CommandError::UnknownCommand(format!(
            "unknown command `{name}`; system/info lists the commands"
        ))
    })?;
    if command.name != auth::AUTH.name && !session.is_authenticated() {
        return Err(CommandError::NotAuthenticated(
            "authenticate first: send `auth` with {\"token\": \"…\"}, or connect with an Authorization: Bearer header".into(),
        ));
    }
    Ok(command)
}

/// Deserializes a command's arguments; errors name the argument.
///
/// # Errors
/// [`CommandError::InvalidArgs`] naming the offending argument.
pub fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, CommandError> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = shorten(&e.path().to_string(), DETAIL_PART_MAX_CHARS);
        // serde quotes the offending value or field name: keep a 10 KB one out of replies.
        let inner = shorten(&e.into_inner().to_string(), DETAIL_PART_MAX_CHARS);
        if path == "." || path.is_empty() {
            CommandError::InvalidArgs(inner)
        } else {
            CommandError::InvalidArgs(format!("argument `{path}`: {inner}"))
        }
    })
}

/// Longest piece of client input quoted back in an error's details, in characters.
pub const DETAIL_PART_MAX_CHARS: usize = 160;

/// `s` cut to `max` characters, with an ellipsis and the full length when cut.
pub fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        format!(
            "{}… ({n} characters)",
            s.chars().take(max).collect::<String>()
        )
    }
}

/// Arguments of commands that take none: any argument is an error.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Runs blocking work off the async worker threads.
///
/// # Errors
/// [`CommandError::Internal`] when the task panicked.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CommandError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CommandError::Internal(format!("blocking task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for c in REGISTRY {
            assert!(seen.insert(c.name), "duplicate command {}", c.name);
            let bare = ["ping", "auth"].contains(&c.name);
            let parts: Vec<_> = c.name.split('/').collect();
            let well_formed = parts.len() == 2
                && parts.iter().all(|p| {
                    !p.is_empty() && p.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')
                });
            assert!(bare || well_formed, "{} is not area/verb", c.name);
            assert!(
                !c.summary.is_empty() && !c.summary.contains('\n'),
                "{} needs a one-line summary",
                c.name
            );
        }
    }

    #[test]
    fn every_command_is_documented_in_api_md() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md"))
            .expect("docs/API.md exists");
        for c in REGISTRY {
            let heading = format!("### `{}`", c.name);
            assert!(
                doc.contains(&heading),
                "docs/API.md lacks a `{heading}` section"
            );
            let example = format!("\"command\": \"{}\"", c.name);
            assert!(
                doc.contains(&example),
                "docs/API.md lacks an example request for {}",
                c.name
            );
        }
    }

    #[test]
    fn error_codes_are_lower_case_and_internal_details_hidden() {
        let e = CommandError::Internal("secret path /x/y".into());
        assert_eq!(e.code(), "internal_error");
        assert!(!e.details().contains("/x/y"));
        assert_eq!(CommandError::InvalidArgs("a".into()).details(), "a");
    }

    #[test]
    fn parse_args_names_the_argument() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct A {
            top_n: Option<u32>,
        }
        let e = parse_args::<A>(serde_json::json!({"top_n": "x"})).unwrap_err();
        assert!(e.details().contains("top_n"), "{e:?}");
        let e = parse_args::<A>(serde_json::json!({"bogus": 1})).unwrap_err();
        assert!(e.details().contains("bogus"), "{e:?}");
        let long = "k".repeat(10_000);
        let e = parse_args::<A>(serde_json::json!({ long.clone(): 1 })).unwrap_err();
        assert!(
            e.details().len() < 400 && e.details().contains("kkkk"),
            "{e:?}"
        );
        let e = parse_args::<A>(serde_json::Value::String(long)).unwrap_err();
        assert!(e.details().len() < 400, "{e:?}");
    }
}
