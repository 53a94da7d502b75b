//! Every bound the server keeps, in one place below the transports: the HTTP and
//! WebSocket layers read these figures, and nothing here knows about either.

use std::time::Duration;

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
            auth_window: crate::gate::WINDOW,
            auth_block: crate::gate::BLOCK,
            trend_growth_threshold_bytes_per_hour: 1024 * 1024,
        }
    }
}
