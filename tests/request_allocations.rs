//! Heap allocations per request on the add-on's busiest paths — a WebSocket `ping`, a
//! WebSocket `system/info` and a keep-alive `GET /healthz` — counted with the tracker's
//! always-on `total_allocations`, with the tracker installed as this test process's
//! global allocator. Every allocation costs extra when exact tracking is on, so these
//! counts are throughput: the bounds below keep them from creeping back up.
//!
//! The client is written so it does not allocate while counting: a blocking socket on its
//! own thread, the request frames built before the count starts, replies read into
//! buffers that were sized up front. The server's other threads may still allocate now and
//! then (a trend sample), so each count is averaged over many requests and bounded with
//! headroom.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use heapwatch::memory;
use support::*;

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

/// Requests counted per kind.
const N: u64 = 10_000;
/// Requests sent before counting, so buffers, maps and caches have reached their size.
const WARM_UP: u64 = 500;

/// The largest reply these requests get (`system/info` is about 1.5 KiB).
const REPLY_CAPACITY: usize = 64 * 1024;

/// Allocations per request at most: the counts measured when these bounds were set (3, 4
/// and 5; before, 25, 298 and 12) plus a quarter. A WebSocket request costs its
/// `message_id`, the handler's boxed future, (for `system/info`) the boxed typed result
/// and the reply text; `/healthz` costs the response's header map (2) and hyper's own
/// per-request buffers and header timer (3).
const BOUNDS: [(&str, f64); 3] = [
    ("ws ping", 3.75),
    ("ws system/info", 5.0),
    ("http /healthz", 6.25),
];

/// A minimal blocking WebSocket client that does not allocate per message.
struct RawWs {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    payload: Vec<u8>,
}

impl RawWs {
    fn connect(addr: SocketAddr) -> Self {
        let writer = TcpStream::connect(addr).expect("connect");
        writer.set_nodelay(true).expect("nodelay");
        let mut reader = BufReader::with_capacity(REPLY_CAPACITY, writer.try_clone().unwrap());
        let mut w = writer.try_clone().unwrap();
        write!(
            w,
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        assert!(
            line.starts_with(b"HTTP/1.1 101"),
            "upgrade answered {}",
            String::from_utf8_lossy(&line)
        );
        while line != b"\r\n" {
            line.clear();
            reader.read_until(b'\n', &mut line).unwrap();
        }
        let mut ws = Self {
            reader,
            writer,
            payload: Vec::with_capacity(REPLY_CAPACITY),
        };
        ws.recv_text();
        assert!(
            contains(&ws.payload, br#""event":"server_info""#),
            "first message: {}",
            String::from_utf8_lossy(&ws.payload)
        );
        ws
    }

    /// A masked text frame carrying `text` (the all-zero mask leaves the bytes as they are).
    fn text_frame(text: &str) -> Vec<u8> {
        let len = text.len();
        assert!(len < 126, "short frames only");
        let mut frame = vec![0x81, 0x80 | len as u8, 0, 0, 0, 0];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    /// Reads frames until a text frame; its payload is left in `self.payload`. Server pings
    /// are answered.
    fn recv_text(&mut self) {
        loop {
            let mut head = [0u8; 2];
            self.reader.read_exact(&mut head).unwrap();
            assert_eq!(head[0] & 0x80, 0x80, "unfragmented frames only");
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.reader.read_exact(&mut n).unwrap();
                    u64::from(u16::from_be_bytes(n))
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.reader.read_exact(&mut n).unwrap();
                    u64::from_be_bytes(n)
                }
                n => u64::from(n),
            };
            let len = usize::try_from(len).unwrap();
            assert!(len <= REPLY_CAPACITY, "reply of {len} bytes");
            self.payload.resize(len, 0);
            self.reader.read_exact(&mut self.payload).unwrap();
            match head[0] & 0x0f {
                0x1 => return,
                0x9 => {
                    assert!(len < 126);
                    let mut pong = [0u8; 6 + 125];
                    pong[..2].copy_from_slice(&[0x8a, 0x80 | len as u8]);
                    pong[6..6 + len].copy_from_slice(&self.payload);
                    self.writer.write_all(&pong[..6 + len]).unwrap();
                }
                op => panic!("unexpected opcode {op:#x}"),
            }
        }
    }

    /// Sends `frame` and checks the reply with `check`.
    fn call(&mut self, frame: &[u8], check: impl Fn(&[u8]) -> bool) {
        self.writer.write_all(frame).unwrap();
        self.recv_text();
        assert!(
            check(&self.payload),
            "unexpected reply {}",
            String::from_utf8_lossy(&self.payload)
        );
    }
}

/// A keep-alive HTTP/1.1 client that does not allocate per request.
struct RawHttp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
    body: Vec<u8>,
}

impl RawHttp {
    fn connect(addr: SocketAddr) -> Self {
        let writer = TcpStream::connect(addr).expect("connect");
        writer.set_nodelay(true).expect("nodelay");
        Self {
            reader: BufReader::with_capacity(REPLY_CAPACITY, writer.try_clone().unwrap()),
            writer,
            line: Vec::with_capacity(1024),
            body: Vec::with_capacity(1024),
        }
    }

    /// Sends `request` and returns the status and body (in `self.body`).
    fn call(&mut self, request: &[u8]) -> u16 {
        self.writer.write_all(request).unwrap();
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line).unwrap();
        let status = std::str::from_utf8(&self.line[9..12])
            .unwrap()
            .parse()
            .unwrap();
        let mut length = 0;
        loop {
            self.line.clear();
            self.reader.read_until(b'\n', &mut self.line).unwrap();
            if self.line == b"\r\n" {
                break;
            }
            let l = std::str::from_utf8(&self.line).unwrap();
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).unwrap();
        status
    }
}

/// Allocations per call of `one`, over [`N`] calls after [`WARM_UP`] uncounted ones.
fn per_request(mut one: impl FnMut()) -> f64 {
    for _ in 0..WARM_UP {
        one();
    }
    let before = memory::totals().total_allocations;
    for _ in 0..N {
        one();
    }
    let after = memory::totals().total_allocations;
    (after - before) as f64 / N as f64
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What each kind of request allocates, measured on the ingress listener.
fn measure(addr: SocketAddr) -> [(&'static str, f64); 3] {
    let mut ws = RawWs::connect(addr);
    let ping = RawWs::text_frame(r#"{"message_id":"42","command":"ping","args":{}}"#);
    let ws_ping = per_request(|| {
        ws.call(&ping, |r| {
            r == br#"{"message_id":"42","result":{"pong":true}}"#
        })
    });
    let info = RawWs::text_frame(r#"{"message_id":"43","command":"system/info","args":{}}"#);
    let ws_info = per_request(|| {
        ws.call(&info, |r| {
            r.starts_with(br#"{"message_id":"43","result":{"#)
                && contains(r, br#""commands":[{"name":"ping""#)
        })
    });
    let mut http = RawHttp::connect(addr);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let healthz = per_request(|| {
        assert_eq!(http.call(request.as_bytes()), 200);
        assert_eq!(http.body, br#"{"status":"ok"}"#);
    });
    [
        ("ws ping", ws_ping),
        ("ws system/info", ws_info),
        ("http /healthz", healthz),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_per_request_stay_low() {
    let s = TestServer::start().await;
    let addr = s.ingress;
    let counts = tokio::task::spawn_blocking(move || measure(addr))
        .await
        .expect("the client thread ran");
    for ((kind, count), (_, bound)) in counts.into_iter().zip(BOUNDS) {
        println!("{kind}: {count:.2} allocations per request (bound {bound})");
    }
    for ((kind, count), (name, bound)) in counts.into_iter().zip(BOUNDS) {
        assert_eq!(kind, name);
        assert!(
            count <= bound,
            "{kind}: {count:.2} allocations per request, more than {bound}"
        );
    }
    s.stop().await;
}
