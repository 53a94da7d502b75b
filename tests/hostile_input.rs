//! A bad-input corpus over a real socket: every malformed frame and every bad value of
//! every argument of every command gets its documented error, and the same socket (or a
//! new one, where a limit closed it) still answers `ping`. The tracker is installed so
//! snapshot commands run for real.

mod support;

use futures_util::SinkExt;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

async fn still_alive(ws: &mut Ws) {
    assert_eq!(
        ws.call("alive", "ping", json!({})).await["result"]["pong"],
        true
    );
}

/// Values of the wrong JSON type for an argument of type `kind`.
fn wrong_types(kind: &str) -> Vec<Value> {
    let all = vec![
        json!(null),
        json!(true),
        json!(1),
        json!(1.5),
        json!("s"),
        json!([]),
        json!({}),
    ];
    all.into_iter()
        .filter(|v| match kind {
            "int" => !v.is_i64() && !v.is_null(),
            "string" | "choice" => !v.is_string() && !v.is_null(),
            "required_string" => !v.is_string(),
            _ => unreachable!(),
        })
        .collect()
}

fn odd_strings() -> Vec<String> {
    vec![
        String::new(),
        "x".repeat(10_000),
        "a\u{0}b".into(),
        "tab\there".into(),
        "line\nbreak".into(),
        "\u{1b}[31mred".into(),
        "\u{85}next-line".into(),
    ]
}

/// Every argument of every command, with its type. The test below fails when a command is
/// registered without being listed here.
const ARGS: &[(&str, &[(&str, &str)])] = &[
    ("ping", &[]),
    ("auth", &[("token", "required_string")]),
    ("system/info", &[]),
    ("debug/memory_reset_peak", &[]),
    ("debug/memory_subscribe", &[("interval_s", "int")]),
    (
        "debug/memory_unsubscribe",
        &[("subscription", "required_string")],
    ),
    ("debug/memory_trend", &[]),
    ("debug/memory_history", &[("window", "choice")]),
    ("host/memory", &[("sort", "choice")]),
    (
        "host/memory_history",
        &[("slug", "required_string"), ("window", "choice")],
    ),
    (
        "debug/memory_snapshot",
        &[
            ("top_n", "int"),
            ("group_by", "string"),
            ("save_as", "string"),
            ("compare_with", "string"),
            ("drop_baseline", "string"),
            ("order", "choice"),
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_argument_of_every_command() {
    for c in heapwatch::commands::REGISTRY {
        assert!(
            ARGS.iter().any(|(name, _)| *name == c.name),
            "{} is not covered by this corpus",
            c.name
        );
    }
    let s = TestServer::start().await;
    let mut ws = ws(s.ingress).await;
    for (command, args) in ARGS {
        // An unknown argument, for every command.
        let r = ws.call("u", command, json!({"unexpected": 1})).await;
        assert_eq!(r["error_code"], "invalid_args", "{command}: {r}");
        assert!(
            r["details"].as_str().unwrap().contains("unexpected"),
            "{command}: {r}"
        );
        for (arg, kind) in *args {
            for bad in wrong_types(kind) {
                let r = ws.call("t", command, json!({ *arg: bad })).await;
                assert_eq!(
                    r["error_code"], "invalid_args",
                    "{command} {arg}={bad}: {r}"
                );
                assert!(
                    r["details"].as_str().unwrap().contains(arg),
                    "{command} {arg}={bad}: {r}"
                );
            }
            if *kind == "int" {
                for bad in [
                    json!(0),
                    json!(-1),
                    json!(201),
                    json!(i64::MAX),
                    json!(u64::MAX),
                    json!(1e300),
                ] {
                    let r = ws.call("r", command, json!({ *arg: bad })).await;
                    assert_eq!(
                        r["error_code"], "invalid_args",
                        "{command} {arg}={bad}: {r}"
                    );
                    assert!(r["details"].as_str().unwrap().contains(arg));
                }
            }
            if *kind == "string" {
                for bad in odd_strings() {
                    let r = ws.call("s", command, json!({ *arg: bad })).await;
                    assert_eq!(
                        r["error_code"],
                        "invalid_args",
                        "{command} {arg}={:?}: {r}",
                        &bad[..bad.len().min(20)]
                    );
                    let d = r["details"].as_str().unwrap();
                    assert!(d.contains(arg), "{d}");
                    assert!(
                        d.len() < 400,
                        "a 10 KB value is not echoed whole: {} bytes",
                        d.len()
                    );
                }
                // Odd but printable Unicode is a valid name.
                if *arg != "group_by" {
                    for ok in ["\u{202e}rtl", "名前", "emoji \u{1f600}", "\u{fffd}"] {
                        let r = ws
                            .call("ok", command, json!({ *arg: ok, "top_n": 1 }))
                            .await;
                        assert!(
                            r.get("result").is_some() || r["error_code"] == "not_found",
                            "{command} {arg}={ok}: {r}"
                        );
                    }
                }
            }
            if *kind == "choice" {
                // One of a few names: anything else is refused, naming the argument.
                for bad in odd_strings() {
                    let r = ws.call("c", command, json!({ *arg: bad })).await;
                    assert_eq!(r["error_code"], "invalid_args", "{command} {arg}: {r}");
                    let d = r["details"].as_str().unwrap();
                    assert!(d.contains(arg) && d.len() < 400, "{d}");
                }
            }
            if *kind == "required_string" {
                for odd in odd_strings() {
                    let r = ws.call("odd", command, json!({ *arg: odd })).await;
                    if *command == "auth" {
                        // Odd tokens on ingress: accepted, because ingress is already
                        // authenticated; the direct listener refuses them (test below).
                        assert_eq!(r["result"]["authenticated"], true, "{r}");
                    } else {
                        // No subscription (and no container) has such a name.
                        assert_eq!(r["error_code"], "not_found", "{r}");
                        assert!(r["details"].as_str().unwrap().len() < 400);
                    }
                }
            }
        }
        still_alive(&mut ws).await;
    }
    // 1,000 baseline saves: the first 8 names fit, the rest are refused, nothing grows.
    let mut saved = 0;
    let mut refused = 0;
    for i in 0..1000 {
        let r = ws
            .call(
                "b",
                "debug/memory_snapshot",
                json!({"save_as": format!("b{i}"), "top_n": 1}),
            )
            .await;
        if r.get("result").is_some() {
            saved += 1;
        } else {
            assert_eq!(r["error_code"], "precondition_failed", "{r}");
            refused += 1;
        }
    }
    // "ok"-named baselines from the Unicode round above may hold some of the 8 places.
    let r = ws
        .call("n", "debug/memory_snapshot", json!({"top_n": 1}))
        .await;
    assert_eq!(r["result"]["baseline_names"].as_array().unwrap().len(), 8);
    assert_eq!(saved + refused, 1000);
    assert!(refused >= 992, "{refused}");
    still_alive(&mut ws).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_listener_tokens_of_every_shape() {
    let s = TestServer::start().await;
    let mut ws = ws_connect(s.direct(), &[], None).await.unwrap();
    for odd in [
        "",
        "short",
        &"x".repeat(10_000),
        "a\u{0}b",
        &TOKEN[..TOKEN.len() - 1],
        &format!("{TOKEN} "),
    ] {
        let r = ws.call("tok", "auth", json!({"token": odd})).await;
        assert_eq!(
            r["error_code"],
            "not_authenticated",
            "{:?}",
            &odd[..odd.len().min(20)]
        );
    }
    assert_eq!(
        ws.call("ok", "auth", json!({"token": TOKEN})).await["result"]["authenticated"],
        true
    );
    still_alive(&mut ws).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames() {
    let s = TestServer::start().await;
    let mut ws = ws(s.ingress).await;
    let frames: Vec<String> = vec![
        "".into(),
        "not json".into(),
        "{".into(),
        "null".into(),
        "42".into(),
        "[{}]".into(),
        "\"just a string\"".into(),
        "[".repeat(100_000),
        format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)),
        r#"{"message_id":null,"command":"ping"}"#.into(),
        r#"{"message_id":["x"],"command":"ping"}"#.into(),
        r#"{"message_id":{"x":1},"command":"ping"}"#.into(),
        r#"{"message_id":"1","command":null}"#.into(),
        r#"{"message_id":"1","command":["ping"]}"#.into(),
        r#"{"message_id":"1","command":"ping","args":null}"#.into(),
        r#"{"message_id":"1","command":"ping","args":[1]}"#.into(),
        r#"{"message_id":"1","command":"ping","args":"{}"}"#.into(),
        "\u{feff}{\"message_id\":\"1\",\"command\":\"ping\"}".into(),
    ];
    for f in &frames {
        ws.send_text(f.clone()).await;
        let r = ws.recv().await;
        assert_eq!(
            r["error_code"],
            "invalid_message",
            "{}: {r}",
            &f[..f.len().min(60)]
        );
    }
    for cmd in [
        "",
        "PING",
        "ping ",
        "system/",
        "/info",
        "debug/memory_snapshot/x",
        "../ping",
        &"a/".repeat(5000),
    ] {
        let r = ws.call("c", cmd, json!({})).await;
        let want = if cmd.is_empty() {
            "invalid_message"
        } else {
            "unknown_command"
        };
        assert_eq!(r["error_code"], want, "{:?}", &cmd[..cmd.len().min(20)]);
    }
    for payload in [
        vec![],
        vec![0u8; 10],
        b"{\"message_id\":\"1\",\"command\":\"ping\"}".to_vec(),
    ] {
        ws.stream.send(Message::binary(payload)).await.unwrap();
        let r = ws.recv().await;
        assert_eq!(r["error_code"], "invalid_message");
        assert_eq!(r["message_id"], Value::Null);
    }
    still_alive(&mut ws).await;
    // A 2 MiB frame closes the socket with 1009; a new socket works.
    // The server may close before the whole frame is sent; it drains the rest, so the
    // send completes and the close code arrives.
    ws.send_text("x".repeat(2 * 1024 * 1024)).await;
    ws.expect_close(1009).await;
    let mut again = support::ws(s.ingress).await;
    still_alive(&mut again).await;
    s.stop().await;
}
