//! The application: binds listeners, spawns the accept loops and sessions on one task
//! tracker, owns the shutdown token, and shuts down in three steps — stop accepting, let
//! running commands finish and close every WebSocket with 1001, wait with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{BoundListeners, ListenerKind, Shared};
use crate::http::auth::AuthGate;
use crate::http::{self, Server};
use crate::memory::{self, Baselines, MemoryError};
use crate::settings::Settings;
use crate::system::SystemSampler;

/// Every bound the server keeps, with what happens at it (see `ws::session` and `http`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent WebSocket sessions over both listeners; more → 503 on the upgrade.
    pub max_ws_sessions: usize,
    /// Commands running at once on one socket; more → `rate_limited`.
    pub max_in_flight: usize,
    /// Largest inbound WebSocket message; larger → close 1009. 1 MiB is far above any
    /// request and far below ingress's 4 MiB.
    pub max_message_bytes: usize,
    /// Events queued per socket; a full queue means the client fell behind → close 1008.
    pub outbound_queue: usize,
    /// tungstenite's write buffer cap: one large snapshot reply fits.
    pub max_write_buffer_bytes: usize,
    /// A write that does not complete in this time → the client is not reading → close.
    pub write_timeout: Duration,
    /// Server pings this often...
    pub ping_interval: Duration,
    /// ...and closes a socket that sent no pong for this long.
    pub pong_timeout: Duration,
    /// Open HTTP connections per listener; more wait in the kernel backlog.
    pub max_connections: usize,
    /// Request headers must arrive within this time (slowloris guard).
    pub header_read_timeout: Duration,
    /// Request head buffer; larger headers → 431 (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// On shutdown, running commands get this long (from the signal) to reply; later
    /// ones get `unavailable`.
    pub command_deadline: Duration,
    /// On shutdown, everything must be done within this (the Supervisor kills after 10 s).
    pub shutdown_timeout: Duration,
    /// The memory stream's clock: `debug/memory_subscribe`'s `interval_s` counts these
    /// ticks. One second in production; tests shorten it to exercise the queue bound fast.
    pub stream_tick: Duration,
    /// Direct-listener authentication failures are counted over this window...
    pub auth_window: Duration,
    /// ...and an address over the limit is blocked for this long.
    pub auth_block: Duration,
    // The trend's intervals are settings (`trend_sample_interval_ms`,
    // `trend_checkpoint_interval_ms`), so the binary's tests can shorten them too.
    /// A window's slope must reach this many bytes per hour to be `growing`. 1 MiB/h is
    /// 24 MiB a day: a leak that takes a small add-on down within days, and far above the
    /// drift of an idle process.
    pub trend_growth_threshold_bytes_per_hour: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ws_sessions: 256,
            max_in_flight: 32,
            max_message_bytes: 1024 * 1024,
            outbound_queue: 64,
            max_write_buffer_bytes: 8 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(90),
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            command_deadline: Duration::from_secs(4),
            stream_tick: Duration::from_secs(1),
            shutdown_timeout: Duration::from_millis(4_800),
            auth_window: crate::http::auth::WINDOW,
            auth_block: crate::http::auth::BLOCK,
            trend_growth_threshold_bytes_per_hour: 1024 * 1024,
        }
    }
}

/// The bound listeners: ingress always, direct only when an API token is set.
pub struct Listeners {
    pub ingress: TcpListener,
    pub direct: Option<TcpListener>,
}

/// Why the application could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("cannot read a listener's address: {0}")]
    LocalAddr(std::io::Error),
}

/// Binds the listeners the settings ask for.
///
/// # Errors
/// [`AppError::Bind`] naming the address and setting (for example, the port is taken).
pub async fn bind(settings: &Settings) -> Result<Listeners, AppError> {
    let ingress = TcpListener::bind(settings.ingress_listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: settings.ingress_listen,
            key: "ingress_listen",
            source,
        })?;
    let direct = match settings.api_token {
        Some(_) => Some(
            TcpListener::bind(settings.direct_listen)
                .await
                .map_err(|source| AppError::Bind {
                    addr: settings.direct_listen,
                    key: "direct_listen",
                    source,
                })?,
        ),
        None => None,
    };
    Ok(Listeners { ingress, direct })
}

/// Serves until `shutdown` completes, then shuts down within `limits.shutdown_timeout`.
///
/// # Errors
/// [`AppError::LocalAddr`] if a listener's address cannot be read.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let bound = bound_addrs(&listeners)?;
    serve(build_server(settings, limits, bound), listeners, shutdown).await
}

/// Where `listeners` are bound.
///
/// # Errors
/// [`AppError::LocalAddr`] if a listener's address cannot be read.
pub fn bound_addrs(listeners: &Listeners) -> Result<BoundListeners, AppError> {
    Ok(BoundListeners {
        ingress: listeners
            .ingress
            .local_addr()
            .map_err(AppError::LocalAddr)?,
        direct: listeners
            .direct
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(AppError::LocalAddr)?,
    })
}

/// Serves a built server on its listeners until `shutdown` completes, then shuts down
/// within `limits.shutdown_timeout`. (`run` is `build_server` then this; tests that need
/// the shared state call the two themselves.)
///
/// # Errors
/// None today; the `Result` leaves room for start-up failures.
pub async fn serve(
    server: Arc<Server>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let (shared, limits) = (server.shared.clone(), server.limits.clone());
    let bound = shared.listeners;

    tracing::info!(addr = %bound.ingress, "ingress listener up");
    server.tasks.spawn(http::serve(
        listeners.ingress,
        ListenerKind::Ingress,
        server.clone(),
    ));
    match (listeners.direct, bound.direct) {
        (Some(direct), Some(addr)) => {
            tracing::info!(%addr, "direct listener up (bearer token required)");
            server
                .tasks
                .spawn(http::serve(direct, ListenerKind::Direct, server.clone()));
        }
        _ => tracing::info!("direct listener off (no api_token set)"),
    }
    server
        .tasks
        .spawn(crate::trend::run(shared.clone(), server.cancel.clone()));

    shutdown.await;
    tracing::info!("shutting down: no new connections; running commands may finish");
    let _ = shared.shutdown_started.set(Instant::now());
    server.cancel.cancel();
    server.tasks.close();
    if tokio::time::timeout(limits.shutdown_timeout, server.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline reached with tasks still running; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Builds the shared state and the server every connection uses, and starts tracking
/// when the settings ask for it at boot. `run` calls it; the fuzz targets use it to serve
/// in-memory connections.
pub fn build_server(settings: Settings, limits: Limits, bound: BoundListeners) -> Arc<Server> {
    if settings.debug_memory {
        match memory::start(crate::commands::debug::tracking_config(&settings)) {
            Ok(_) => {
                tracing::info!(mode = ?settings.debug_memory_mode, frames = settings.debug_memory_frames, "allocation tracking on from boot")
            }
            Err(MemoryError::NotInstalled) => {
                tracing::warn!("debug_memory is on, but the tracker is not the global allocator")
            }
            Err(e) => tracing::warn!(error = %e, "could not start allocation tracking"),
        }
    }
    let trend_settings = crate::trend::TrendSettings {
        sample_interval: Duration::from_millis(settings.trend_sample_interval_ms.into()),
        checkpoint_interval: Duration::from_millis(settings.trend_checkpoint_interval_ms.into()),
        growth_threshold_bytes_per_hour: limits.trend_growth_threshold_bytes_per_hour,
    };
    let settings_json = settings.redacted_json();
    let shared = Arc::new(Shared {
        auth: AuthGate::with_timing(
            settings.api_token.clone(),
            limits.auth_window,
            limits.auth_block,
        ),
        settings,
        settings_json,
        started_at: Instant::now(),
        listeners: bound,
        ha_addon: std::env::var_os("SUPERVISOR_TOKEN").is_some(),
        baselines: Mutex::new(Baselines::default()),
        snapshot_lock: tokio::sync::Mutex::new(()),
        system: Mutex::new(SystemSampler::new()),
        shutdown_started: OnceLock::new(),
        memory_stream: crate::commands::stream::Hub::new(limits.stream_tick),
        trend: Mutex::new(crate::trend::History::default()),
        trend_settings,
        checkpoints: Mutex::new(memory::Checkpoints::default()),
    });
    Arc::new(Server {
        shared,
        ws_slots: Arc::new(Semaphore::new(limits.max_ws_sessions)),
        limits: Arc::new(limits),
        cancel: CancellationToken::new(),
        tasks: TaskTracker::new(),
        refused_log: Mutex::default(),
    })
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler cannot fail");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
