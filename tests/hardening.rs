//! Path and header tricks, slow clients, and faults in the middle of work: each gets a
//! clear answer and the server keeps serving.

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use heapwatch::app::Limits;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

const OTHER_HOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3)));

/// Sends raw bytes and returns whatever comes back before the server closes or `wait`.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut tcp = tcp_from(addr, None).await;
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_do_not_reach_other_routes() {
    let s = TestServer::start().await;
    for path in [
        "/%2Fhealthz",
        "/healthz%2F",
        "/api%2Fmemory%2Fsnapshot",
        "/./healthz",
        "/api/../healthz",
        "/%2e%2e/healthz",
        "/healthz/..",
        "/HEALTHZ",
        "/ws/../api/memory/snapshot",
    ] {
        let r = get(s.ingress, path, &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error_code"], "not_found");
    }
    // Doubled slashes are normalised, query strings do not change the route.
    assert_eq!(get(s.ingress, "///healthz?x=1", &[]).await.status, 200);
    // The direct listener checks the token before it looks at the path.
    assert_eq!(get(s.direct(), "/%2Fhealthz", &[]).await.status, 401);
    // An untrusted peer gets 403 whatever the path trick.
    assert_eq!(
        get_from(s.ingress, "//api//memory//snapshot", &[], OTHER_HOST)
            .await
            .status,
        403
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_odd_headers() {
    let s = TestServer::start().await;
    let big = "a".repeat(32 * 1024);
    let out = raw(
        s.ingress,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&out[..out.len().min(40)])
    );
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let out = raw(
        s.ingress,
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert!(
        out.starts_with(b"HTTP/1.1 4"),
        "too many headers is a client error: {:?}",
        String::from_utf8_lossy(&out[..out.len().min(40)])
    );
    let out = raw(s.ingress, b"GARBAGE\r\n\r\n", WAIT).await;
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // Non-UTF-8 ingress user headers are dropped, not trusted.
    let out = raw(s.ingress, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Remote-User-Name: \xff\xfe\r\nConnection: close\r\n\r\n", WAIT).await;
    assert!(out.starts_with(b"HTTP/1.1 200"));
    // Authorization: odd shapes are all 401 on the direct listener.
    for auth in [
        "Bearer",
        "Bearer ",
        "bearer\t",
        &format!("Bearer  {TOKEN}x"),
        &format!("Token {TOKEN}"),
        &"B".repeat(8000),
    ] {
        assert_eq!(
            get(s.direct(), "/healthz", &[("authorization", auth)])
                .await
                .status,
            401,
            "{:?}",
            &auth[..auth.len().min(20)]
        );
    }
    assert_eq!(get(s.ingress, "/healthz", &[]).await.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_by_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let mut tcp = tcp_from(s.ingress, None).await;
    let started = Instant::now();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Dribble a header byte every 100 ms, never finishing.
    let mut closed_after = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tcp.write_all(b"X").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => {
                // hyper may answer 408 before closing.
                assert!(
                    buf.starts_with(b"HTTP/1.1 408"),
                    "{:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
            Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the server closed the slow connection");
    assert!(
        closed_after >= Duration::from_millis(400),
        "not before the timeout: {closed_after:?}"
    );
    assert_eq!(get(s.ingress, "/healthz", &[]).await.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_in_the_middle_of_a_snapshot() {
    let s = TestServer::start().await;
    let mut w = ws(s.ingress).await;
    let r = w
        .call(
            "s",
            "debug/memory_snapshot",
            json!({"save_as": "start", "top_n": 1}),
        )
        .await;
    assert!(r["result"].is_object());
    for round in 0..5 {
        let mut gone = ws(s.ingress).await;
        gone.send(
            "x",
            "debug/memory_snapshot",
            json!({"group_by": "traceback", "top_n": 200, "compare_with": "start"}),
        )
        .await;
        // Drop the TCP connection without a close handshake, mid-command.
        drop(gone);
        assert_eq!(
            w.call(&format!("p{round}"), "ping", json!({})).await["result"]["pong"],
            true
        );
    }
    // The baseline survived and the next snapshot works.
    let r = w
        .call(
            "after",
            "debug/memory_snapshot",
            json!({"compare_with": "start", "top_n": 5}),
        )
        .await;
    assert_eq!(r["result"]["baseline_names"], json!(["start"]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_commands_get_unavailable_at_shutdown() {
    // Snapshot commands queue on the server's snapshot lock; holding it stands in for a
    // snapshot that takes longer than the shutdown grace. Those commands are abandoned
    // with `unavailable` when the grace ends, and the socket then closes with 1001.
    let limits = Limits {
        command_deadline: Duration::from_millis(300),
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let mut w = ws(s.ingress).await;
    let services = s.services.clone();
    let held = services.heap.exclusive().await;
    for i in 0..3 {
        w.send(
            &format!("q{i}"),
            "debug/memory_snapshot",
            json!({"top_n": 1}),
        )
        .await;
    }
    // A quick command in flight at the same time still gets its real reply.
    assert_eq!(w.call("p", "ping", json!({})).await["result"]["pong"], true);
    let started = Instant::now();
    let stopping = tokio::spawn(s.stop());
    let mut unavailable = std::collections::BTreeSet::new();
    loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut w.stream))
            .await
            .expect("in time")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let r: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(r["error_code"], "unavailable", "{r}");
                unavailable.insert(r["message_id"].as_str().unwrap().to_string());
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1001);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let waited = started.elapsed();
    assert_eq!(
        unavailable.into_iter().collect::<Vec<_>>(),
        ["q0", "q1", "q2"]
    );
    assert!(
        waited >= Duration::from_millis(250),
        "the grace was given: {waited:?}"
    );
    drop(held);
    stopping.await.unwrap();
}

#[test]
fn sigterm_with_100_sessions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut bin = Binary::start(json!({}), &[]);
    let addr = bin.ingress;
    let mut sessions = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..100 {
            v.push(ws(addr).await);
        }
        v
    });
    bin.sigterm();
    rt.block_on(async {
        for w in &mut sessions {
            w.expect_close(1001).await;
        }
    });
    let (status, took) = bin.wait();
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
}
