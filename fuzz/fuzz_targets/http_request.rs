//! Raw bytes as an HTTP/1 request on either listener, from a trusted or an untrusted
//! peer, through hyper, the router, the trust rules and the bearer gate, over an
//! in-memory pipe. The server must answer with a well-formed status line (or close), and
//! secrets never appear in what it sends.
#![no_main]

#[path = "common.rs"]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use heapwatch::commands::ListenerKind;
use heapwatch::http::{Conn, serve_io};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, request)) = data.split_first() else {
        return;
    };
    let server = common::server();
    let conn = Conn {
        kind: if selector & 1 == 0 {
            ListenerKind::Ingress
        } else {
            ListenerKind::Direct
        },
        peer: if selector & 2 == 0 {
            SocketAddr::from(([127, 0, 0, 1], 40000))
        } else {
            SocketAddr::from(([10, 1, 2, 3], 40000))
        },
    };
    let response = common::runtime().block_on(async {
        let (mut client, server_side) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve_io(server_side, conn, server.clone()));
        let mut out = Vec::new();
        let exchange = async {
            client.write_all(request).await.ok();
            client.shutdown().await.ok();
            let _ = client.read_to_end(&mut out).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), exchange).await;
        server.cancel.cancel();
        server.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), server.tasks.wait()).await;
        task.abort();
        out
    });
    if !response.is_empty() {
        // hyper answers an HTTP/1.0 request in kind.
        assert!(
            response.starts_with(b"HTTP/1.1 ") || response.starts_with(b"HTTP/1.0 "),
            "{:?}",
            String::from_utf8_lossy(&response[..response.len().min(64)])
        );
        let code = &response[9..12.min(response.len())];
        assert!(code.iter().all(u8::is_ascii_digit), "status code");
    }
    let text = String::from_utf8_lossy(&response);
    assert!(!text.contains(common::TOKEN), "the token is never echoed");
});
