//! HTTP: accept loops, per-connection hyper service, the router, the authentication gate,
//! the panel and the WebSocket upgrade.
//!
//! Bounds: at most `max_connections` open HTTP connections per listener (further
//! connections wait in the kernel's backlog until one closes); request headers must
//! arrive within `header_read_timeout` (a slowloris client is closed) and fit in
//! `max_header_bytes` (larger: 431); request bodies are never read (every route is GET).

pub mod auth;
pub mod exports;
pub mod panel;
pub mod router;
pub mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::Limits;
use crate::commands::{ListenerKind, Shared};

/// Everything a connection needs, shared by both listeners.
pub struct Server {
    pub shared: Arc<Shared>,
    pub limits: Arc<Limits>,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    /// WebSocket sessions across both listeners.
    pub ws_slots: Arc<Semaphore>,
    /// Log lines about refused peers: at most one per [`REFUSED_LOG_EVERY`].
    pub refused_log: Mutex<RefusedLog>,
}

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

/// Accepts connections until cancelled; each is served on the task tracker.
pub async fn serve(listener: TcpListener, kind: ListenerKind, server: Arc<Server>) {
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
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
                let conn = Conn { kind, peer };
                server
                    .tasks
                    .spawn(serve_conn(stream, conn, server.clone(), permit));
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Serves HTTP/1 (with upgrades) on any byte stream: a TCP connection, or an in-memory
/// pipe in the fuzz targets.
pub async fn serve_io<I>(io: I, conn: Conn, server: Arc<Server>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc_server = server.clone();
    let service = service_fn(move |req| {
        let server = svc_server.clone();
        async move { Ok::<_, Infallible>(router::handle(req, conn, server).await) }
    });
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
