//! One WebSocket session: reads requests, runs commands concurrently (at most
//! `max_in_flight` per socket), writes replies and events, pings, and closes cleanly.
//!
//! A command is polled once where its request is read: one that is done then (`ping`,
//! `system/info`, argument errors — most requests) is answered at once, without a task;
//! one that waits (for a blocking thread, a lock) continues on its own task in the
//! socket's `JoinSet` and counts towards `max_in_flight` until it replies.
//!
//! Bounds, and what happens at each:
//! - inbound message larger than `max_message_bytes` → close 1009;
//! - more than `max_in_flight` commands running → that request gets `rate_limited`;
//! - events queued beyond `outbound_queue` (a producer that finds the queue full cancels
//!   `Caller::slow_consumer`, which also interrupts a write in progress), or a write that
//!   cannot complete within `write_timeout` (the client stopped reading) → close 1008; the
//!   server never buffers more than that for a slow consumer;
//! - no pong for `pong_timeout` → close 1008;
//! - shutdown → stop reading, let running commands finish until `command_deadline` from
//!   the shutdown's start (later ones get `unavailable`), then close 1001.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::protocol;
use crate::commands::{self, Args, CommandError, Context, Event, Reply, Started};
use crate::limits::Limits;

/// How long a socket closed for an oversized message keeps draining its input.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// ...or until its input is quiet for this long.
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_millis(200);
/// At most this much of the rest of an oversized message is read and discarded (a bit
/// more than ingress's own 4 MiB message cap).
const LINGER_MAX_BYTES: usize = 5 * 1024 * 1024;

/// What a finished command task yields: its message id and outcome.
type Outcome = (Arc<str>, Result<Reply, CommandError>);
/// A joined command task.
type Joined = Result<(tokio::task::Id, Outcome), tokio::task::JoinError>;

/// The stream type of an upgraded hyper connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    ClientClosed,
    ClientGone,
    Shutdown,
    TooLarge,
    SlowConsumer,
    PongTimeout,
}

/// Runs a session to its end and logs how it ended. A normal close is not an error.
pub async fn run(socket: Socket, ctx: Context, limits: Arc<Limits>, cancel: CancellationToken) {
    let peer = ctx.caller.peer;
    match Connection::new(socket, ctx, limits, cancel).run().await {
        Ok(End::ClientClosed | End::ClientGone) => {
            tracing::debug!(%peer, "websocket session ended by the client")
        }
        Ok(End::Shutdown) => tracing::debug!(%peer, "websocket session closed for shutdown"),
        Ok(end) => tracing::info!(%peer, ?end, "websocket session closed by the server"),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "websocket session ended with a transport error")
        }
    }
}

/// The state of one socket's loop.
struct Connection {
    socket: Socket,
    ctx: Context,
    limits: Arc<Limits>,
    cancel: CancellationToken,
    in_flight: JoinSet<Outcome>,
    in_flight_ids: HashMap<tokio::task::Id, Arc<str>>,
    events_rx: mpsc::Receiver<Event>,
    last_pong: Instant,
    /// Renders this socket's replies (keeps its buffer between them).
    writer: protocol::Writer,
}

impl Connection {
    fn new(socket: Socket, ctx: Context, limits: Arc<Limits>, cancel: CancellationToken) -> Self {
        let (events_tx, events_rx) = mpsc::channel(limits.outbound_queue);
        // The sender lives in the caller's facts so streaming commands can queue events.
        let _ = ctx.caller.events.set(events_tx);
        Self {
            socket,
            ctx,
            limits,
            cancel,
            in_flight: JoinSet::new(),
            in_flight_ids: HashMap::new(),
            events_rx,
            last_pong: Instant::now(),
            writer: protocol::Writer::default(),
        }
    }

    async fn run(mut self) -> Result<End, tungstenite::Error> {
        let info = server_info(&self.ctx);
        self.send(Message::text(info)).await?;
        let mut ping = tokio::time::interval(self.limits.ping_interval);
        ping.tick().await; // the first tick is immediate
        let end = loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break End::Shutdown,
                () = self.ctx.caller.slow_consumer.cancelled() => break End::SlowConsumer,
                Some(joined) = self.in_flight.join_next_with_id() => {
                    let reply = self.finished(joined);
                    if !self.send_or_slow(reply).await? { break End::SlowConsumer; }
                }
                event = self.events_rx.recv() => {
                    let Some(event) = event else { continue };
                    if self.events_rx.len() + 1 >= self.limits.outbound_queue {
                        break End::SlowConsumer;
                    }
                    let text = self.writer.event(event.message_id.as_deref(), event.name, &*event.data);
                    if !self.send_or_slow(text).await? { break End::SlowConsumer; }
                }
                frame = self.socket.next() => match frame {
                    None => break End::ClientGone,
                    Some(Err(tungstenite::Error::Capacity(_))) => break End::TooLarge,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = self.request(text.as_str())
                            && !self.send_or_slow(reply).await?
                        {
                            break End::SlowConsumer;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let e = CommandError::InvalidMessage("binary frames are not accepted; send JSON text".into());
                        let reply = self.writer.error(&Value::Null, &e);
                        if !self.send_or_slow(reply).await? { break End::SlowConsumer; }
                    }
                    Some(Ok(Message::Pong(_))) => self.last_pong = Instant::now(),
                    Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                },
                _ = ping.tick() => {
                    if self.last_pong.elapsed() >= self.limits.pong_timeout {
                        break End::PongTimeout;
                    }
                    if !self.send_or_slow_msg(Message::Ping(Vec::new().into())).await? { break End::SlowConsumer; }
                }
            }
        };
        self.finish(&end).await;
        Ok(end)
    }

    /// Handles one text request; returns an immediate reply, or `None` when the command
    /// was started and will reply later.
    fn request(&mut self, text: &str) -> Option<String> {
        let req = match protocol::parse_request(text) {
            Ok(r) => r,
            Err(bad) => return Some(self.writer.error(&bad.message_id, &bad.error)),
        };
        let args = Args::Json(req.args);
        if req.command == commands::auth::AUTH.name {
            // Inline, so a command sent right after `auth` sees its outcome.
            let outcome = match commands::start_named(self.ctx.clone(), &req.command, args) {
                Started::Done(outcome) => outcome,
                Started::Pending(_) => Err(CommandError::Internal(
                    "auth did not complete at once".into(),
                )),
            };
            return Some(self.reply(&req.message_id, outcome));
        }
        if self.in_flight.len() >= self.limits.max_in_flight {
            let e = CommandError::RateLimited(format!(
                "at most {} commands may run at once on one socket; wait for replies",
                self.limits.max_in_flight
            ));
            return Some(self.writer.error(&Value::from(&*req.message_id), &e));
        }
        let mut ctx = self.ctx.clone();
        ctx.message_id = Some(req.message_id.clone());
        let pending = match commands::start_named(ctx, &req.command, args) {
            Started::Done(outcome) => return Some(self.reply(&req.message_id, outcome)),
            Started::Pending(pending) => pending,
        };
        let id = req.message_id;
        let task_id = id.clone();
        let handle = self
            .in_flight
            .spawn(async move { (task_id, pending.finish().await) });
        self.in_flight_ids.insert(handle.id(), id);
        None
    }

    fn finished(&mut self, joined: Joined) -> String {
        match joined {
            Ok((task, (message_id, outcome))) => {
                self.in_flight_ids.remove(&task);
                self.reply(&message_id, outcome)
            }
            Err(e) => {
                let message_id = self
                    .in_flight_ids
                    .remove(&e.id())
                    .map_or(Value::Null, |id| Value::from(&*id));
                let err = if e.is_cancelled() {
                    CommandError::Unavailable(
                        "the server is shutting down; the command was abandoned".into(),
                    )
                } else {
                    CommandError::Internal(format!("command task failed: {e}")).logged("(task)")
                };
                self.writer.error(&message_id, &err)
            }
        }
    }

    fn reply(&mut self, message_id: &str, outcome: Result<Reply, CommandError>) -> String {
        match outcome {
            Ok(result) => self.writer.result(message_id, &result),
            Err(e) => self.writer.error(&Value::from(message_id), &e),
        }
    }

    /// Ends the session: on shutdown, running commands get until the deadline to reply.
    async fn finish(&mut self, end: &End) {
        if *end == End::Shutdown {
            let started = self
                .ctx
                .services
                .server
                .shutdown_started
                .get()
                .copied()
                .unwrap_or_else(Instant::now);
            let deadline = tokio::time::Instant::from_std(started + self.limits.command_deadline);
            loop {
                tokio::select! {
                    joined = self.in_flight.join_next_with_id() => {
                        let Some(joined) = joined else { break };
                        let reply = self.finished(joined);
                        if self.send(Message::text(reply)).await.is_err() { break; }
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        self.in_flight.abort_all();
                    }
                }
            }
        } else {
            self.in_flight.abort_all();
        }
        let (code, reason) = match end {
            End::Shutdown => (CloseCode::Away, "server shutting down"),
            End::TooLarge => (CloseCode::Size, "message too large"),
            End::SlowConsumer => (CloseCode::Policy, "client is not reading fast enough"),
            End::PongTimeout => (CloseCode::Policy, "no pong received"),
            End::ClientClosed | End::ClientGone => return,
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(self.limits.write_timeout, self.socket.send(close)).await;
        if *end == End::TooLarge {
            self.linger().await;
        }
    }

    /// After closing on an oversized message the client is usually still sending it.
    /// Dropping the socket now would answer its data with a TCP reset, which can destroy
    /// the close frame before the client reads it; so half-close, then read and discard
    /// what is still coming, for at most [`LINGER`] and [`LINGER_MAX_BYTES`].
    async fn linger(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = self.socket.get_mut();
        let _ = io.shutdown().await;
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut buf = [0u8; 8192];
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            // Stop once the input goes quiet: the client has finished (or answered the
            // close) and only waits for us to go.
            let until = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
            match tokio::time::timeout_at(until, io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => discarded += n,
                _ => break,
            }
        }
    }

    async fn send(&mut self, msg: Message) -> Result<(), tungstenite::Error> {
        match tokio::time::timeout(self.limits.write_timeout, self.socket.send(msg)).await {
            Ok(r) => r,
            Err(_) => Err(tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into())),
        }
    }

    /// Sends a text message; `Ok(false)` when the client is too slow to take it.
    async fn send_or_slow(&mut self, text: String) -> Result<bool, tungstenite::Error> {
        self.send_or_slow_msg(Message::text(text)).await
    }

    /// Like [`Self::send_or_slow`]; a write stuck behind a client that stopped reading
    /// also ends early when an event producer found the queue full.
    async fn send_or_slow_msg(&mut self, msg: Message) -> Result<bool, tungstenite::Error> {
        let slow = self.ctx.caller.slow_consumer.clone();
        tokio::select! {
            sent = tokio::time::timeout(self.limits.write_timeout, self.socket.send(msg)) => match sent {
                Ok(Ok(())) => Ok(true),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(false),
            },
            () = slow.cancelled() => Ok(false),
        }
    }
}

/// The first message of every session.
fn server_info(ctx: &Context) -> String {
    let s = &ctx.caller;
    protocol::event(
        None,
        "server_info",
        &serde_json::json!({
            "server_version": commands::SERVER_VERSION,
            "ha_addon": ctx.services.server.ha_addon,
            "ha_ingress": s.listener == commands::ListenerKind::Ingress,
            "requires_auth": !s.is_authenticated(),
            "user": s.user,
        }),
    )
}
