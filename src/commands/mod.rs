//! The command registry: every WebSocket command and every HTTP endpoint that is not the
//! panel is a name, a one-line summary and a handler taking typed arguments.
//!
//! Transports (`ws`, `http`) parse envelopes into a name (or a route's command) and
//! [`Args`], then call [`start`] (or [`start_named`]); that is the one dispatch path, with
//! authentication, authorisation, the first poll and the logging of internal errors in
//! it. Handlers reach state only through the parts of [`Services`] they use and the typed
//! APIs of `memory`, `system` and `trend`; they return a [`Reply`] and queue [`Event`]s,
//! and only the transports turn those into JSON envelopes or HTTP responses. Adding a
//! command is one file (or function) and one line in [`REGISTRY`] (or [`DOCUMENTS`]).

pub mod args;
pub mod auth;
pub mod debug;
pub mod download;
pub mod host;
pub mod report;
pub mod stream;
pub mod system;
pub mod trend;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::Value;

pub use args::{Args, DETAIL_PART_MAX_CHARS, NoArgs, shorten};

use crate::gate::AuthGate;
use crate::heap::{Heap, tracking_config};
use crate::host::{HostMonitor, HostSettings};
use crate::limits::Limits;
use crate::settings::Settings;
use crate::system::SharedSampler;
use crate::trend::{Monitor, TrendSettings};

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
    /// A document that is not JSON (a profile, a flame graph, metrics text, a report
    /// download): only the HTTP transport serves these.
    Document(Document),
}

/// A document reply: its bytes, what they are, and a file name when it is a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// `Some`: the browser saves it under this name (`Content-Disposition: attachment`).
    pub file_name: Option<String>,
}

/// An event a command queues for its caller (on the WebSocket, the transport writes it as
/// `{"data": …, "event": …, "message_id": …}`).
#[derive(Clone, Debug)]
pub struct Event {
    /// The request the event belongs to (a subscription's `message_id`).
    pub message_id: Option<Arc<str>>,
    pub name: &'static str,
    /// Shared: one sample goes to every subscriber without a copy.
    pub data: Arc<Value>,
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

    /// Writes the result's JSON text to `out`; no allocation beyond `out`'s growth. A
    /// document is written as a JSON string of its text (transports serve documents
    /// themselves; this keeps the function total).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Self::Json(v) => serde_json::to_writer(out, v).expect("a JSON value always serializes"),
            Self::Typed(t) => t.write_json(out).expect("a typed result always serializes"),
            Self::Constant(text) => out.extend_from_slice(text.as_bytes()),
            Self::Document(d) => serde_json::to_writer(out, &String::from_utf8_lossy(&d.body))
                .expect("a string always serializes"),
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
            Self::Document(d) => Value::String(String::from_utf8_lossy(&d.body).into_owned()),
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
            Self::Document(d) => f.debug_tuple("Document").field(d).finish(),
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
    /// Runs the command with its arguments (it parses them into its typed struct).
    pub run: fn(Context, Args) -> HandlerFuture,
}

/// Every WebSocket command, in the order `system/info` lists them.
pub const REGISTRY: &[Command] = &[
    system::PING,
    auth::AUTH,
    system::INFO,
    debug::MEMORY_SNAPSHOT,
    debug::MEMORY_RESET_PEAK,
    stream::MEMORY_SUBSCRIBE,
    stream::MEMORY_UNSUBSCRIBE,
    trend::MEMORY_TREND,
    trend::MEMORY_HISTORY,
    host::MEMORY,
    host::MEMORY_HISTORY,
];

/// The commands that answer with a [`Document`]: served over HTTP only (the router maps a
/// path to each), never found by a WebSocket request.
pub const DOCUMENTS: &[Command] = &[
    report::REPORT,
    download::PROFILE,
    download::FOLDED,
    download::FLAMEGRAPH,
    download::METRICS,
];

/// Finds a WebSocket command by name.
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

/// What the server is, fixed at start (plus the moment shutdown began).
pub struct ServerFacts {
    /// The settings with secrets redacted, built once: settings do not change while the
    /// server runs, and `system/info` shows them on every call.
    pub settings_json: Value,
    pub started_at: Instant,
    pub listeners: BoundListeners,
    /// Whether the process runs under the Supervisor (`SUPERVISOR_TOKEN` is set).
    pub ha_addon: bool,
    /// Set when shutdown begins; running commands get until this plus the command
    /// deadline to reply.
    pub shutdown_started: std::sync::OnceLock<Instant>,
}

/// The parts of the server that commands use, each owning its own state (and its own
/// lock, where it has one). Handlers take the part they need.
pub struct Services {
    pub server: ServerFacts,
    /// The direct listener's token check and brute-force limit.
    pub gate: AuthGate,
    /// The tracking configuration, baselines and the symbolizing lock.
    pub heap: Heap,
    /// The one system-memory sampler (shared with the trend's task).
    pub system: Arc<SharedSampler>,
    /// The RSS/heap history and checkpoints (filled by the trend's task).
    pub trend: Arc<Monitor>,
    /// The one memory sampler behind every `debug/memory_subscribe`.
    pub stream: stream::Hub,
    /// Every container's memory through the Supervisor (filled by the host task).
    pub host: Arc<HostMonitor>,
}

impl Services {
    /// The services for a server with these settings and limits, listening on `bound`.
    /// Nothing runs yet: the trend's background task is the caller's to start
    /// (`trend::run`), and tracking from boot is `app`'s decision.
    pub fn new(settings: &Settings, limits: &Limits, bound: BoundListeners) -> Self {
        let trend_settings = TrendSettings {
            sample_interval: Duration::from_millis(settings.trend_sample_interval_ms.into()),
            checkpoint_interval: Duration::from_millis(
                settings.trend_checkpoint_interval_ms.into(),
            ),
            growth_threshold_bytes_per_hour: limits.trend_growth_threshold_bytes_per_hour,
        };
        Self {
            server: ServerFacts {
                settings_json: settings.redacted_json(),
                started_at: Instant::now(),
                listeners: bound,
                ha_addon: settings.supervisor_token.is_some(),
                shutdown_started: std::sync::OnceLock::new(),
            },
            gate: AuthGate::with_timing(
                settings.api_token.clone(),
                limits.auth_window,
                limits.auth_block,
            ),
            heap: Heap::new(tracking_config(settings)),
            system: Arc::new(SharedSampler::default()),
            trend: Arc::new(Monitor::new(trend_settings)),
            stream: stream::Hub::new(limits.stream_tick),
            host: Arc::new(HostMonitor::new(
                HostSettings::new(settings, limits.trend_growth_threshold_bytes_per_hour),
                settings.supervisor_token.clone(),
            )),
        }
    }
}

/// Per-connection facts a handler may use: who is calling, from where, and (on a
/// WebSocket) where its events go.
#[derive(Debug)]
pub struct Caller {
    pub listener: ListenerKind,
    pub peer: IpAddr,
    pub user: Option<User>,
    /// Set once the caller proved it may run commands (always on ingress; after a good
    /// bearer header or `auth` command on the direct listener).
    pub authenticated: AtomicBool,
    /// The caller's bounded outbound queue for events (set by the WebSocket session).
    pub events: std::sync::OnceLock<tokio::sync::mpsc::Sender<Event>>,
    /// Cancelled by an event producer that found `events` full: the client fell behind,
    /// and the session closes with 1008 instead of buffering more for it.
    pub slow_consumer: tokio_util::sync::CancellationToken,
}

impl Caller {
    /// A new caller with no event queue yet (the WebSocket session sets one).
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
    pub services: Arc<Services>,
    pub caller: Arc<Caller>,
    /// The request's `message_id` on a WebSocket (streaming commands send their events
    /// on it); `None` over HTTP. Shared, so the session keeps it for the reply without a
    /// copy.
    pub message_id: Option<Arc<str>>,
}

/// A command after its first poll.
pub enum Started {
    /// It finished at once (most commands: `ping`, `system/info`, argument errors).
    Done(Result<Reply, CommandError>),
    /// It waits (for a blocking thread or a lock): finish it with [`Pending::finish`].
    Pending(Pending),
}

/// A command still running.
pub struct Pending {
    name: &'static str,
    future: HandlerFuture,
}

impl Pending {
    /// Runs the command to its end; an internal error is logged.
    pub async fn finish(self) -> Result<Reply, CommandError> {
        self.future.await.map_err(|e| e.logged(self.name))
    }
}

/// Refused before anything about the server is looked up: a caller that has not
/// authenticated learns only that it must.
fn not_authenticated() -> CommandError {
    CommandError::NotAuthenticated(
        "authenticate first: send `auth` with {\"token\": \"…\"}, or connect with an Authorization: Bearer header".into(),
    )
}

/// Starts the WebSocket command `name` through [`start`], which refuses every command but
/// `auth` before authentication. An unknown name gets `not_authenticated` too before
/// authentication (so nothing about the server, not even which commands exist, is learned
/// first), and `unknown_command` after.
pub fn start_named(ctx: Context, name: &str, args: Args) -> Started {
    match find(name) {
        Some(command) => start(ctx, command, args),
        // `auth` is always found, so a caller that is not authenticated learns nothing.
        None if !ctx.caller.is_authenticated() => Started::Done(Err(not_authenticated())),
        None => Started::Done(Err(CommandError::UnknownCommand(format!(
            "unknown command `{}`; system/info lists the commands",
            shorten(name, DETAIL_PART_MAX_CHARS)
        )))),
    }
}

/// The one dispatch path: checks that the caller may run `command`, runs it and polls it
/// once where the request was read. A panic in that poll is answered as a panicking task
/// would be: `internal_error`.
pub fn start(ctx: Context, command: &'static Command, args: Args) -> Started {
    if let Err(e) = authorize(&ctx.caller, command) {
        return Started::Done(Err(e));
    }
    let mut future = (command.run)(ctx, args);
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        future.as_mut().now_or_never()
    }));
    match polled {
        Ok(Some(outcome)) => Started::Done(outcome.map_err(|e| e.logged(command.name))),
        Ok(None) => Started::Pending(Pending {
            name: command.name,
            future,
        }),
        Err(_) => Started::Done(Err(CommandError::Internal(format!(
            "command {} panicked",
            command.name
        ))
        .logged(command.name))),
    }
}

/// [`start`], then waits for the command's end (for transports with nothing else to do
/// meanwhile: HTTP, the fuzz targets).
///
/// # Errors
/// `not_authenticated`, or whatever the handler returns.
pub async fn dispatch(
    ctx: Context,
    command: &'static Command,
    args: Args,
) -> Result<Reply, CommandError> {
    match start(ctx, command, args) {
        Started::Done(outcome) => outcome,
        Started::Pending(pending) => pending.finish().await,
    }
}

/// Whether `caller` may run `command`: `auth` always, anything else once authenticated.
///
/// # Errors
/// `not_authenticated`.
pub fn authorize(caller: &Caller, command: &Command) -> Result<(), CommandError> {
    if command.name != auth::AUTH.name && !caller.is_authenticated() {
        return Err(not_authenticated());
    }
    Ok(())
}

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

/// Runs a symbolizing job on a blocking thread, one at a time with every other (see
/// [`Heap::exclusive`]).
///
/// # Errors
/// [`CommandError::Internal`] when the task panicked.
pub async fn exclusive<T: Send + 'static>(
    services: &Services,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CommandError> {
    let _one_at_a_time = services.heap.exclusive().await;
    blocking(f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for c in REGISTRY.iter().chain(DOCUMENTS) {
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
    fn every_document_command_is_documented_in_api_md() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md"))
            .expect("docs/API.md exists");
        for c in DOCUMENTS {
            assert!(
                doc.contains(&format!("`{}`", c.name)),
                "docs/API.md does not name {}",
                c.name
            );
            assert!(find(c.name).is_none(), "{} is HTTP only", c.name);
        }
    }

    #[test]
    fn error_codes_are_lower_case_and_internal_details_hidden() {
        let e = CommandError::Internal("secret path /x/y".into());
        assert_eq!(e.code(), "internal_error");
        assert!(!e.details().contains("/x/y"));
        assert_eq!(CommandError::InvalidArgs("a".into()).details(), "a");
    }
}
