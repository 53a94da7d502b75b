//! Inputs the fuzz targets found (fuzz/regressions/<target>/), replayed against the real
//! server over real sockets: each gets a well-formed answer or a clean close, and the
//! server keeps serving afterwards.

mod support;

use std::path::PathBuf;

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_regressions() {
    let s = TestServer::start().await;
    let cases = inputs("http_request");
    assert!(!cases.is_empty());
    for (path, bytes) in cases {
        // The first byte picked the listener in the fuzz target; the rest is the request.
        let (selector, request) = bytes.split_first().unwrap();
        let addr = if selector & 1 == 0 {
            s.ingress
        } else {
            s.direct()
        };
        let mut tcp = tcp_from(addr, None).await;
        tcp.write_all(request).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut out))
            .await
            .expect("answer in time")
            .ok();
        if !out.is_empty() {
            assert!(
                out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
                "{}",
                path.display()
            );
        }
        assert!(!String::from_utf8_lossy(&out).contains(TOKEN));
        assert_eq!(
            get(s.ingress, "/healthz", &[]).await.status,
            200,
            "still serving after {}",
            path.display()
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_request_regressions() {
    let s = TestServer::start().await;
    let mut ws = ws(s.ingress).await;
    for (path, bytes) in inputs("ws_request") {
        let Ok(text) = std::str::from_utf8(&bytes[1..]) else {
            continue;
        };
        ws.send_text(text.to_string()).await;
        let reply = ws.recv().await;
        assert!(
            reply.get("result").is_some() || reply.get("error_code").is_some(),
            "{}: {reply}",
            path.display()
        );
        assert_ne!(reply["error_code"], "internal_error", "{}", path.display());
        assert_eq!(
            ws.call("p", "ping", json!({})).await["result"]["pong"],
            true
        );
    }
    s.stop().await;
}

#[test]
fn snapshot_args_regressions() {
    use heapwatch::commands::debug::SnapshotArgs;
    for (path, bytes) in inputs("snapshot_args") {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if let Err(e) = SnapshotArgs::parse(value) {
            assert_eq!(e.code(), "invalid_args", "{}", path.display());
            assert!(
                e.details().len() < 1024,
                "{}: details of {} bytes",
                path.display(),
                e.details().len()
            );
        }
    }
}
