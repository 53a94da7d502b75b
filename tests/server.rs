//! The server core over real sockets: listeners, trust and authentication, envelopes and
//! error codes, limits, shutdown.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use futures_util::SinkExt;
use heapwatch::app::Limits;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const OTHER_HOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)));

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_404_and_path_normalisation() {
    let s = TestServer::start().await;
    let r = get(s.ingress, "/healthz", &[]).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    assert_eq!(get(s.ingress, "//healthz", &[]).await.status, 200);
    assert_eq!(get(s.ingress, "/healthz/", &[]).await.status, 200);
    let r = get(s.ingress, "/nope", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error_code"], "not_found");
    assert!(r.json()["details"].as_str().unwrap().contains("/nope"));
    assert_eq!(get(s.ingress, "/api/../healthz", &[]).await.status, 404);
    let r = request(s.ingress, "POST", "/healthz", &[], None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    let r = get(s.ingress, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        r.header("x-frame-options").is_none(),
        "ingress shows the panel in an iframe"
    );
    assert!(
        !r.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors")
    );
    assert!(r.header("content-encoding").is_none());
    let r = get(s.direct(), "/healthz", &[("authorization", &bearer())]).await;
    assert_eq!(r.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ingress_peer_is_refused_even_with_forged_user() {
    let s = TestServer::start().await;
    let r = get_from(s.ingress, "/", &[("x-remote-user-id", "admin")], OTHER_HOST).await;
    assert_eq!(r.status, 403);
    let r = get_from(s.ingress, "/api/memory/snapshot", &[], OTHER_HOST).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        ws_refused(s.ingress, &[("x-remote-user-name", "admin")], OTHER_HOST).await,
        403
    );
    // The liveness probe answers anyone and says nothing.
    assert_eq!(
        get_from(s.ingress, "/healthz", &[], OTHER_HOST)
            .await
            .json(),
        json!({"status": "ok"})
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_session_gets_user_and_server_info() {
    let s = TestServer::start().await;
    let headers = [
        ("x-remote-user-id", "abc123"),
        ("x-remote-user-name", "ada"),
        ("x-remote-user-display-name", "Ada Lovelace"),
        ("x-ingress-path", "/api/hassio_ingress/tok"),
    ];
    let mut ws = ws_connect(s.ingress, &headers, None).await.unwrap();
    let data = &ws.info["data"];
    assert_eq!(ws.info["message_id"], Value::Null);
    assert_eq!(data["server_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(data["ha_ingress"], true);
    assert_eq!(data["requires_auth"], false);
    assert_eq!(data["ha_addon"], false);
    assert_eq!(
        data["user"],
        json!({"id": "abc123", "name": "ada", "display_name": "Ada Lovelace"})
    );
    let r = ws.call("1", "ping", json!({})).await;
    assert_eq!(r, json!({"message_id": "1", "result": {"pong": true}}));
    let info = ws.call("2", "system/info", json!({})).await;
    let result = &info["result"];
    assert_eq!(result["server_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(result["user"]["name"], "ada");
    assert_eq!(result["listeners"]["ingress"], s.ingress.to_string());
    assert_eq!(result["listeners"]["direct"], s.direct().to_string());
    assert_eq!(result["settings"]["api_token"], "**redacted**");
    assert!(
        !info.to_string().contains(TOKEN),
        "the token never leaves the server"
    );
    assert_eq!(result["tracking"]["enabled"], false);
    let names: Vec<&str> = result["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for c in heapwatch::commands::REGISTRY {
        assert!(names.contains(&c.name), "{} listed", c.name);
    }
    assert!(
        result["commands"][0]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_errors_echo_message_id_when_readable() {
    let s = TestServer::start().await;
    let mut ws = ws(s.ingress).await;
    let cases: Vec<(String, Value, &str)> = vec![
        ("not json".into(), Value::Null, "invalid_message"),
        ("[1,2]".into(), Value::Null, "invalid_message"),
        ("\"str\"".into(), Value::Null, "invalid_message"),
        (
            r#"{"command":"ping"}"#.into(),
            Value::Null,
            "invalid_message",
        ),
        (
            r#"{"message_id":"m1"}"#.into(),
            json!("m1"),
            "invalid_message",
        ),
        (
            r#"{"message_id":"m2","command":7}"#.into(),
            json!("m2"),
            "invalid_message",
        ),
        (
            r#"{"message_id":"m3","command":"ping","args":"x"}"#.into(),
            json!("m3"),
            "invalid_message",
        ),
        (
            r#"{"message_id":"","command":"ping"}"#.into(),
            json!(""),
            "invalid_message",
        ),
        (
            format!(r#"{{"message_id":"{}","command":"ping"}}"#, "x".repeat(65)),
            json!("x".repeat(65)),
            "invalid_message",
        ),
        (
            r#"{"message_id":"m4","command":"nope/nope"}"#.into(),
            json!("m4"),
            "unknown_command",
        ),
        (
            r#"{"message_id":"m5","command":"ping","args":{"x":1}}"#.into(),
            json!("m5"),
            "invalid_args",
        ),
        (
            r#"{"message_id":"m6","command":"auth","args":{}}"#.into(),
            json!("m6"),
            "invalid_args",
        ),
        (
            r#"{"message_id":"m7","command":"debug/memory_snapshot","args":{"top_n":true}}"#.into(),
            json!("m7"),
            "invalid_args",
        ),
        (
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            Value::Null,
            "invalid_message",
        ),
    ];
    for (text, id, code) in cases {
        ws.send_text(text.clone()).await;
        let r = ws.recv().await;
        assert_eq!(r["message_id"], id, "{}", &text[..text.len().min(80)]);
        assert_eq!(
            r["error_code"],
            code,
            "{}: {r}",
            &text[..text.len().min(80)]
        );
        assert!(r["details"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let r = ws.call("a", "ping", json!({"x": 1})).await;
    assert!(
        r["details"].as_str().unwrap().contains('x'),
        "details name the argument: {r}"
    );
    ws.stream
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let r = ws.recv().await;
    assert_eq!(
        (r["message_id"].clone(), r["error_code"].clone()),
        (Value::Null, json!("invalid_message"))
    );
    // The socket still works.
    assert_eq!(
        ws.call("z", "ping", json!({})).await["result"]["pong"],
        true
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_1009_and_server_keeps_serving() {
    let s = TestServer::start().await;
    let mut ws = ws(s.ingress).await;
    let big = format!(
        r#"{{"message_id":"1","command":"ping","args":{{"pad":"{}"}}}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    ws.stream.send(Message::text(big)).await.unwrap();
    ws.expect_close(1009).await;
    let mut again = support::ws(s.ingress).await;
    assert_eq!(
        again.call("p", "ping", json!({})).await["result"]["pong"],
        true
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_listener_requires_the_token() {
    let s = TestServer::start().await;
    let d = s.direct();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Basic abc")],
    ] {
        let r = get(d, "/healthz", &headers).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        assert_eq!(r.json()["error_code"], "not_authenticated");
    }
    let b = bearer();
    assert_eq!(
        get(d, "/healthz", &[("authorization", b.as_str())])
            .await
            .status,
        200
    );
    assert_eq!(
        get(
            d,
            "/healthz",
            &[("authorization", &format!("bearer {TOKEN}"))]
        )
        .await
        .status,
        200
    );
    // Forged ingress headers mean nothing here.
    let mut ws = ws_connect(
        d,
        &[
            ("authorization", b.as_str()),
            ("x-remote-user-name", "mallory"),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(ws.info["data"]["user"], Value::Null);
    assert_eq!(ws.info["data"]["ha_ingress"], false);
    assert_eq!(ws.info["data"]["requires_auth"], false);
    assert_eq!(
        ws.call("1", "ping", json!({})).await["result"]["pong"],
        true
    );
    // A wrong header on the upgrade is refused outright.
    assert_eq!(
        ws_refused(d, &[("authorization", "Bearer nope")], None).await,
        401
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_in_band_auth() {
    let s = TestServer::start().await;
    let mut ws = ws_connect(s.direct(), &[], None).await.unwrap();
    assert_eq!(ws.info["data"]["requires_auth"], true);
    // An unknown command too: nothing about the server is learned before auth.
    for (i, cmd) in ["ping", "system/info", "debug/memory_snapshot", "nope/nope"]
        .iter()
        .enumerate()
    {
        let r = ws.call(&format!("pre{i}"), cmd, json!({})).await;
        assert_eq!(r["error_code"], "not_authenticated", "{cmd}");
    }
    let r = ws
        .call(
            "a1",
            "auth",
            json!({"token": "wrong-token-wrong-token-wrong-token"}),
        )
        .await;
    assert_eq!(r["error_code"], "not_authenticated");
    assert_eq!(
        ws.call("a2", "auth", json!({"token": TOKEN})).await["result"],
        json!({"authenticated": true})
    );
    // Sent right after auth without waiting: auth runs first.
    ws.send("a3", "auth", json!({"token": TOKEN})).await;
    ws.send("p", "ping", json!({})).await;
    let mut got = vec![ws.recv().await, ws.recv().await];
    got.sort_by_key(|r| r["message_id"].as_str().unwrap().to_string());
    assert_eq!(got[1]["result"]["pong"], true, "{got:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_upgrade_is_refused_on_direct() {
    let s = TestServer::start().await;
    let d = s.direct();
    let b = bearer();
    assert_eq!(
        ws_refused(
            d,
            &[
                ("authorization", b.as_str()),
                ("origin", "http://evil.example")
            ],
            None
        )
        .await,
        403
    );
    let same = format!("http://{d}");
    let mut ws = ws_connect(
        d,
        &[("authorization", b.as_str()), ("origin", same.as_str())],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        ws.call("1", "ping", json!({})).await["result"]["pong"],
        true
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_rate_limited_then_recovers() {
    let limits = Limits {
        auth_window: Duration::from_secs(60),
        auth_block: Duration::from_millis(1500),
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let d = s.direct();
    for _ in 0..10 {
        assert_eq!(
            get(d, "/healthz", &[("authorization", "Bearer guess")])
                .await
                .status,
            401
        );
    }
    let r = get(d, "/healthz", &[("authorization", "Bearer guess")]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error_code"], "rate_limited");
    assert!(r.header("retry-after").is_some());
    // Blocked: even the right token, and the in-band path, are refused.
    let b = bearer();
    assert_eq!(
        get(d, "/healthz", &[("authorization", b.as_str())])
            .await
            .status,
        429
    );
    assert_eq!(ws_refused(d, &[], None).await, 429);
    // Another address is not affected.
    assert_eq!(
        get_from(d, "/healthz", &[("authorization", b.as_str())], OTHER_HOST)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        get(d, "/healthz", &[("authorization", b.as_str())])
            .await
            .status,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_auth_failures_count_too() {
    let limits = Limits {
        auth_window: Duration::from_secs(60),
        auth_block: Duration::from_secs(60),
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let mut ws = ws_connect(s.direct(), &[], None).await.unwrap();
    for i in 0..10 {
        let r = ws
            .call(&format!("f{i}"), "auth", json!({"token": "x"}))
            .await;
        assert_eq!(r["error_code"], "not_authenticated");
    }
    assert_eq!(
        ws.call("f10", "auth", json!({"token": "x"})).await["error_code"],
        "rate_limited"
    );
    assert_eq!(
        ws.call("f11", "auth", json!({"token": TOKEN})).await["error_code"],
        "rate_limited"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_means_no_direct_listener() {
    let s = TestServer::start_with(|st| st.api_token = None, Limits::default()).await;
    assert!(s.direct.is_none());
    let mut ws = ws(s.ingress).await;
    let info = ws.call("1", "system/info", json!({})).await;
    assert_eq!(info["result"]["listeners"]["direct"], Value::Null);
    assert_eq!(info["result"]["settings"]["api_token"], Value::Null);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cap_answers_503_and_frees_slots() {
    let limits = Limits {
        max_ws_sessions: 3,
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(ws(s.ingress).await);
    }
    assert_eq!(ws_refused(s.ingress, &[], None).await, 503);
    for w in &mut open {
        assert_eq!(
            w.call("1", "ping", json!({})).await["result"]["pong"],
            true,
            "others unaffected"
        );
    }
    let mut first = open.remove(0);
    first.stream.close(None).await.unwrap();
    drop(first);
    let t = std::time::Instant::now();
    loop {
        match ws_connect(s.ingress, &[], None).await {
            Ok(mut w) => {
                assert_eq!(w.call("1", "ping", json!({})).await["result"]["pong"], true);
                break;
            }
            Err(_) if t.elapsed() < WAIT => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("slot never freed: {e}"),
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_cap_answers_rate_limited() {
    let limits = Limits {
        max_in_flight: 1,
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let mut ws = ws(s.ingress).await;
    // debug/memory_trend waits for a blocking thread, so it runs on a task; a burst of them
    // overlaps with a cap of one.
    let n = 200;
    let mut burst = String::new();
    for i in 0..n {
        burst = json!({"message_id": format!("b{i}"), "command": "debug/memory_trend"}).to_string();
        ws.stream.feed(Message::text(burst.clone())).await.unwrap();
    }
    ws.stream.flush().await.unwrap();
    let _ = burst;
    let mut limited = 0;
    let mut ok = 0;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..n {
        let r = ws.recv().await;
        assert!(
            ids.insert(r["message_id"].as_str().unwrap().to_string()),
            "one reply per id"
        );
        match r["error_code"].as_str() {
            Some("rate_limited") => limited += 1,
            None => ok += 1,
            Some(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok + limited, n);
    assert!(ok >= 1 && limited >= 1, "ok {ok}, limited {limited}");

    // Commands that finish where they are read (ping, system/info) never hold a slot, so a
    // burst of them is answered in full, in order.
    for i in 0..n {
        let command = if i % 2 == 0 { "ping" } else { "system/info" };
        let text = json!({"message_id": format!("c{i}"), "command": command}).to_string();
        ws.stream.feed(Message::text(text)).await.unwrap();
    }
    ws.stream.flush().await.unwrap();
    for i in 0..n {
        let r = ws.recv().await;
        assert_eq!(r["message_id"], format!("c{i}"), "{r}");
        assert!(r.get("result").is_some(), "{r}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_pong_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = Limits {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    // A raw client that completes the handshake and then never answers a ping.
    let mut tcp = tcp_from(s.ingress, None).await;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        s.ingress
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = std::time::Instant::now();
    let (pings, close_code) = loop {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("data in time")
            .unwrap();
        assert!(
            n > 0,
            "closed without a close frame: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        // Skip the HTTP response head, then walk the (unmasked) server frames.
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        assert!(buf.starts_with(b"HTTP/1.1 101"), "upgrade accepted");
        let mut i = head_end + 4;
        let mut pings = 0;
        let mut close = None;
        while i + 2 <= buf.len() {
            let opcode = buf[i] & 0x0f;
            let (mut len, mut head) = (usize::from(buf[i + 1] & 0x7f), 2);
            if len == 126 {
                if i + 4 > buf.len() {
                    break;
                }
                len = usize::from(u16::from_be_bytes([buf[i + 2], buf[i + 3]]));
                head = 4;
            }
            if i + head + len > buf.len() {
                break;
            }
            let payload = &buf[i + head..i + head + len];
            match opcode {
                0x9 => pings += 1,
                0x8 => close = Some(u16::from_be_bytes([payload[0], payload[1]])),
                _ => {}
            }
            i += head + len;
        }
        if let Some(code) = close {
            break (pings, code);
        }
    };
    assert_eq!(close_code, 1008);
    assert!(pings >= 2, "pinged before giving up ({pings})");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "not before the pong timeout"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_closed_and_others_are_unaffected() {
    let limits = Limits {
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let mut slow = ws(s.ingress).await;
    let mut fine = ws(s.ingress).await;
    // Ask for far more reply bytes than the socket buffers hold, and never read.
    let writer = tokio::spawn(async move {
        let start = std::time::Instant::now();
        let mut i = 0u64;
        while start.elapsed() < WAIT {
            let req = json!({"message_id": format!("s{i}"), "command": "system/info"}).to_string();
            if slow.stream.send(Message::text(req)).await.is_err() {
                return (true, i);
            }
            i += 1;
        }
        (false, i)
    });
    let (closed, sent) = tokio::time::timeout(WAIT * 3, writer)
        .await
        .expect("writer ends")
        .unwrap();
    assert!(closed, "the server dropped the slow client (sent {sent})");
    assert_eq!(
        fine.call("1", "ping", json!({})).await["result"]["pong"],
        true
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_1001_quickly() {
    let s = TestServer::start().await;
    let mut a = ws(s.ingress).await;
    let mut b = ws_connect(s.direct(), &[("authorization", &bearer())], None)
        .await
        .unwrap();
    // Commands in flight when shutdown starts still get their replies before the close;
    // requests the server had not read yet are not started.
    for i in 0..20 {
        a.send(&format!("q{i}"), "system/info", json!({})).await;
    }
    let took = tokio::spawn(s.stop());
    let mut ids = std::collections::HashSet::new();
    loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut a.stream))
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(t))) => {
                let r: Value = serde_json::from_str(t.as_str()).unwrap();
                assert!(
                    r["result"].is_object() || r["error_code"] == "unavailable",
                    "{r}"
                );
                assert!(
                    ids.insert(r["message_id"].as_str().unwrap().to_string()),
                    "one reply per id"
                );
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1001);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    b.expect_close(1001).await;
    let took = took.await.unwrap();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_over_http_uses_the_same_errors() {
    let s = TestServer::start().await;
    let r = get(s.ingress, "/api/memory/snapshot?top_n=0", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_code"], "invalid_args");
    assert!(r.json()["details"].as_str().unwrap().contains("top_n"));
    let r = get(s.ingress, "/api/memory/snapshot?bogus=1", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["details"].as_str().unwrap().contains("bogus"));
    let r = get(s.ingress, "/api/memory/snapshot?compare_with=nothing", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error_code"], "not_found");
    // The direct listener needs the token for it.
    assert_eq!(
        get(s.direct(), "/api/memory/snapshot", &[]).await.status,
        401
    );
    s.stop().await;
}
