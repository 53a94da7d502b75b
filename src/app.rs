//! The application: binds listeners, spawns the accept loops and sessions on one task
//! tracker, owns the shutdown token, and shuts down in three steps — stop accepting, let
//! running commands finish and close every WebSocket with 1001, wait with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{BoundListeners, ListenerKind, Services};
use crate::http::{self, Server};
use crate::memory::{self, MemoryError};
use crate::settings::Settings;

pub use crate::limits::Limits;

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
/// the services call the two themselves.)
///
/// # Errors
/// None today; the `Result` leaves room for start-up failures.
pub async fn serve(
    server: Arc<Server>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let bound = server.services.server.listeners;

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
    start_background(&server, Persist::Database);

    shutdown.await;
    stop(&server).await;
    Ok(())
}

/// Whether the background tasks keep their history in `data_dir/history.sqlite3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persist {
    /// The add-on: the containers' and its own memory survive restarts and updates.
    Database,
    /// An embedder's service: no file is written unasked.
    InMemory,
}

/// Starts the background tasks (the trend's sampling, host monitoring) on the server's
/// task tracker; with [`Persist::Database`], after opening the history database and
/// putting back the add-on's own samples of the last run.
fn start_background(server: &Server, persist: Persist) {
    let services = &server.services;
    let (trend, host, system, cancel) = (
        services.trend.clone(),
        services.host.clone(),
        services.system.clone(),
        server.cancel.clone(),
    );
    server.tasks.spawn(async move {
        let mut sink: Option<crate::trend::Sink> = None;
        if persist == Persist::Database {
            let opening = host.clone();
            match tokio::task::spawn_blocking(move || opening.open_store()).await {
                Ok(own) => trend.restore(&own),
                Err(e) => tracing::warn!(error = %e, "opening the memory history failed"),
            }
            let writer = host.clone();
            sink = Some(Arc::new(move |at, rss, heap| {
                writer.record_own(at, rss, heap)
            }));
        }
        tokio::join!(
            crate::trend::run(trend, system.clone(), cancel.clone(), sink),
            crate::host::run(host, system, cancel),
        );
    });
}

/// The three steps of shutdown: stop accepting and cancel (sessions close with 1001 once
/// their running commands reply or the command deadline passes), then wait for every task
/// within `limits.shutdown_timeout`.
async fn stop(server: &Server) {
    tracing::info!("shutting down: no new connections; running commands may finish");
    let _ = server.services.server.shutdown_started.set(Instant::now());
    server.cancel.cancel();
    server.tasks.close();
    if tokio::time::timeout(server.limits.shutdown_timeout, server.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown deadline reached with tasks still running; exiting anyway");
    }
    tracing::info!("stopped");
}

/// Builds the services and the server every connection uses, and starts tracking when
/// the settings ask for it at boot. `run` calls it; the fuzz targets use it to serve
/// in-memory connections.
pub fn build_server(settings: Settings, limits: Limits, bound: BoundListeners) -> Arc<Server> {
    let services = Services::new(&settings, &limits, bound);
    if settings.debug_memory {
        // `main` starts it before the server's start-up allocations; an embedder or a test
        // starts it here.
        match memory::start(services.heap.config()) {
            Ok(_) => {
                services.heap.set_tracking_from_boot();
                tracing::info!(mode = ?settings.debug_memory_mode, frames = settings.debug_memory_frames, "allocation tracking on from boot")
            }
            Err(MemoryError::NotInstalled) => {
                tracing::warn!("debug_memory is on, but the tracker is not the global allocator")
            }
            // The embedding program started its own session first: it is kept (tracking
            // is process-wide, and another's session is not ours to stop), it does run
            // from before this server, and snapshots say which settings run.
            Err(MemoryError::RunningWithOtherSettings { running, requested }) => {
                services.heap.set_tracking_from_boot();
                tracing::warn!(
                    ?running,
                    ?requested,
                    "debug_memory is on, but tracking already runs with other settings: they are kept"
                )
            }
            Err(e) => tracing::warn!(error = %e, "could not start allocation tracking"),
        }
    }
    Arc::new(Server {
        services: Arc::new(services),
        trusted_proxies: settings.trusted_proxies,
        ws_slots: Arc::new(Semaphore::new(limits.max_ws_sessions)),
        limits: Arc::new(limits),
        cancel: CancellationToken::new(),
        tasks: TaskTracker::new(),
        refused_log: Mutex::default(),
    })
}

/// The admin API for an embedder's own server: a hyper service per connection (see
/// [`Admin::service`]), with the trend's background task running until
/// [`Admin::shutdown`] (its history in memory: nothing is written to `data_dir`). Requests are treated as the direct listener treats them: a bearer
/// token on every request (`Settings::embedded` sets one), `auth` in-band for a WebSocket.
pub struct Admin {
    server: Arc<Server>,
}

impl Admin {
    /// Builds the services for `settings` and starts the background task; `serving_on` is
    /// the embedder's own address, as `system/info` reports it. Call it inside a tokio
    /// runtime.
    pub fn start(settings: Settings, limits: Limits, serving_on: SocketAddr) -> Self {
        let bound = BoundListeners {
            ingress: settings.ingress_listen,
            direct: Some(serving_on),
        };
        let server = build_server(settings, limits, bound);
        start_background(&server, Persist::InMemory);
        Self { server }
    }

    /// The service for one connection from `peer`: hand it to
    /// `hyper::server::conn::http1::Builder::serve_connection` and call `.with_upgrades()`
    /// on the connection so `/ws` works.
    pub fn service(
        &self,
        peer: SocketAddr,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = http::response::Resp,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        http::service(
            self.server.clone(),
            http::Conn {
                kind: ListenerKind::Direct,
                peer,
            },
        )
    }

    /// Closes every WebSocket session (1001) and stops the background task, within the
    /// limits' shutdown timeout.
    pub async fn shutdown(self) {
        stop(&self.server).await;
    }
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
