//! HTTP: accept loops, the per-connection hyper service (also what an embedder mounts on
//! its own server), the router and its route table, the panel and the WebSocket upgrade.
//!
//! Bounds: at most `max_connections` open HTTP connections per listener (further
//! connections wait in the kernel's backlog until one closes); request headers must
//! arrive within `header_read_timeout` (a slowloris client is closed) and fit in
//! `max_header_bytes` (larger: 431); request bodies are never read (every route is GET).

pub mod panel;
pub mod response;
pub mod router;
pub mod upgrade;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{ListenerKind, Services};
use crate::limits::Limits;

/// Everything a connection needs, shared by both listeners.
pub struct Server {
    pub services: Arc<Services>,
    /// Peers whose requests on the ingress listener are served (the Supervisor's proxy).
    pub trusted_proxies: Vec<IpAddr>,
    pub limits: Arc<Limits>,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    /// WebSocket sessions across both listeners.
    pub ws_slots: Arc<Semaphore>,
    /// Log lines about refused peers: at most one per [`REFUSED_LOG_EVERY`].
    pub refused_log: Mutex<RefusedLog>,
}

/// How long the accept loop waits after its first failed `accept`...
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...doubling per consecutive failure up to this: out of file descriptors, a loop that
/// retried every 100 ms would spin and flood the log while nothing can improve it.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often a refused-peer warning may be logged; the others are counted and reported
/// in the next line, so a port scan cannot flood the add-on log.
pub const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// State of the refused-peer log limiter.
#[derive(Debug, Default)]
pub struct RefusedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl Server {
    /// Logs a refused peer, rate-limited.
    pub fn log_refused(&self, peer: SocketAddr, why: &str) {
        let mut log = self.refused_log.lock().expect("refused log poisoned");
        let now = Instant::now();
        if log.last.is_some_and(|t| now - t < REFUSED_LOG_EVERY) {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(now);
        drop(log);
        tracing::warn!(%peer, suppressed, "refused request: {why}");
    }
}

/// Facts about one connection.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub kind: ListenerKind,
    pub peer: SocketAddr,
}

/// Accepts connections until cancelled; each is served on the task tracker. A failing
/// `accept` backs off (100 ms doubling to 5 s, logged once per failure streak and again
/// when it recovers).
pub async fn serve(listener: TcpListener, kind: ListenerKind, server: Arc<Server>) {
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failures: u64 = 0;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = server.cancel.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = server.cancel.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                if failures > 0 {
                    tracing::info!(failures, "accepting connections again");
                    (failures, backoff) = (0, ACCEPT_BACKOFF_MIN);
                }
                let conn = Conn { kind, peer };
                server
                    .tasks
                    .spawn(serve_conn(stream, conn, server.clone(), permit));
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                if failures == 0 {
                    tracing::warn!(error = %e, "accept failed; backing off until it works again");
                }
                failures += 1;
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = server.cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

async fn serve_conn(
    stream: TcpStream,
    conn: Conn,
    server: Arc<Server>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    serve_io(stream, conn, server).await;
}

/// The admin API as a hyper service for one connection: what `serve_io` serves, and what
/// an embedder hands its own `hyper` connection builder (call `.with_upgrades()` on the
/// connection so `/ws` works).
pub fn service(
    server: Arc<Server>,
    conn: Conn,
) -> impl Service<Request<Incoming>, Response = response::Resp, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(router::handle(req, conn, server).await) }
    })
}

/// Serves HTTP/1 (with upgrades) on any byte stream: a TCP connection, or an in-memory
/// pipe in the fuzz targets.
pub async fn serve_io<I>(io: I, conn: Conn, server: Arc<Server>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service(server.clone(), conn);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(server.limits.header_read_timeout)
        .max_buf_size(server.limits.max_header_bytes)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        res = connection.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(peer = %conn.peer, error = %e, "http connection ended with an error");
            }
        }
        () = server.cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(server.limits.command_deadline, connection).await;
        }
    }
}
