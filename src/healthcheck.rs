//! `heapwatch healthcheck`: the image's own health check, so the image needs no shell and
//! no `wget`. It asks the running server for `GET /healthz` on its ingress port, over
//! loopback, and answers healthy or not within [`DEADLINE`].
//!
//! The port comes from the same settings the server loaded (options file, then
//! environment), so a configured `ingress_listen` is honoured. `/healthz` answers any peer
//! (see `http::router`), so loopback passes the ingress peer filter. The request is plain
//! HTTP/1.0 over a `std` socket: one request, one short reply, no runtime and no client
//! library needed.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::settings::Settings;

/// The whole check — connect, send, read — ends within this (the bound; Docker's
/// own `--timeout` in the Dockerfile is longer, so the check reports before Docker kills
/// it).
pub const DEADLINE: Duration = Duration::from_secs(2);

/// The most of the reply read: the status line and headers of `/healthz` are far shorter,
/// and a peer that streams more is not the server.
const MAX_REPLY: u64 = 4096;

/// Why the server is not healthy, in words for the health log.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: request failed: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: no answer within {:?}", DEADLINE)]
    Timeout { addr: SocketAddr },
    #[error("{addr}: not an HTTP reply: {start:?}")]
    NotHttp { addr: SocketAddr, start: String },
    #[error("{addr}: /healthz answered {status}")]
    Status { addr: SocketAddr, status: u16 },
}

/// Where the check connects for `settings`: the ingress port on loopback. A wildcard
/// listen address (`0.0.0.0`, `::`) is reached through its family's loopback; a specific
/// address is used as it is.
pub fn target(settings: &Settings) -> SocketAddr {
    let listen = settings.ingress_listen;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `/healthz` at `addr`; `Ok` when it answers 200 before `deadline` passes.
///
/// # Errors
/// [`Unhealthy`] says what failed: no connection, an I/O error, no answer in time, a
/// reply that is not HTTP, or a status other than 200.
pub fn check(addr: SocketAddr, deadline: Duration) -> Result<(), Unhealthy> {
    let end = Instant::now() + deadline;
    let left = || {
        end.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(Unhealthy::Timeout { addr })
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(|source| {
        if source.kind() == std::io::ErrorKind::TimedOut {
            Unhealthy::Timeout { addr }
        } else {
            Unhealthy::Connect { addr, source }
        }
    })?;
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            Unhealthy::Timeout { addr }
        }
        _ => Unhealthy::Io { addr, source },
    };
    stream.set_write_timeout(Some(left()?)).map_err(io)?;
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;

    // Read until the status line is complete, the peer closes, or time runs out; each
    // read gets only the time that is left.
    let mut reply = Vec::new();
    let mut limited = (&stream).take(MAX_REPLY);
    let mut buf = [0u8; 512];
    while !reply.contains(&b'\n') {
        stream.set_read_timeout(Some(left()?)).map_err(io)?;
        let n = limited.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let status = parse_status(&reply).ok_or_else(|| Unhealthy::NotHttp {
        addr,
        start: String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned(),
    })?;
    if status == 200 {
        Ok(())
    } else {
        Err(Unhealthy::Status { addr, status })
    }
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`), if `reply` starts with
/// one.
fn parse_status(reply: &[u8]) -> Option<u16> {
    let line = reply.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !(version == "HTTP/1.0" || version == "HTTP/1.1") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::path::Path;

    fn settings_listening_on(listen: &str) -> Settings {
        let (mut s, _) =
            Settings::load_from(Path::new("/nonexistent/options.json"), std::iter::empty())
                .expect("defaults load");
        s.ingress_listen = listen.parse().expect("socket address");
        s
    }

    #[test]
    fn target_is_loopback_for_wildcards_and_the_address_otherwise() {
        let cases = [
            ("0.0.0.0:8099", "127.0.0.1:8099"),
            ("[::]:9000", "[::1]:9000"),
            ("127.0.0.2:8123", "127.0.0.2:8123"),
        ];
        for (listen, want) in cases {
            let got = target(&settings_listening_on(listen));
            assert_eq!(got, want.parse::<SocketAddr>().unwrap(), "for {listen}");
        }
    }

    #[test]
    fn status_lines_parse_and_other_text_does_not() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH_9.2\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    /// A one-shot server that reads the request and sends `reply`; returns its address
    /// and what it received.
    fn serve_once(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).expect("read request");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).expect("write reply");
            String::from_utf8(got).expect("ascii request")
        });
        (addr, handle)
    }

    #[test]
    fn a_200_is_healthy_and_the_request_is_a_get_of_healthz() {
        let (addr, server) =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}");
        check(addr, DEADLINE).expect("healthy");
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.0\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("Host: {addr}\r\n")), "{request}");
    }

    #[test]
    fn other_statuses_garbage_and_refusals_are_unhealthy() {
        let (addr, _s) = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert!(matches!(
            check(addr, DEADLINE),
            Err(Unhealthy::Status { status: 503, .. })
        ));
        let (addr, _s) = serve_once(b"220 smtp.example ESMTP\r\n");
        assert!(matches!(
            check(addr, DEADLINE),
            Err(Unhealthy::NotHttp { .. })
        ));
        // A port nothing listens on: bind one, note it, close it.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            check(closed, DEADLINE),
            Err(Unhealthy::Connect { .. })
        ));
    }

    #[test]
    fn a_server_that_never_answers_times_out_on_time() {
        // Accepts (the kernel does, from the backlog) but never replies.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Instant::now();
        let err = check(addr, Duration::from_millis(300)).expect_err("no reply");
        assert!(matches!(err, Unhealthy::Timeout { .. }), "{err}");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        drop(listener);
    }
}
