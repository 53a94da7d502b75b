//! Load against the release build with tracking on (exact mode): 250 concurrent WebSocket
//! sessions each sending 200 mixed commands, on loopback, bounded in count and time.
//! Zero protocol errors, every reply matched to its message_id, the session cap answers
//! 503 while the others keep working, and after the sessions disconnect the server's own
//! tracker shows no site still holding what they allocated.
//!
//! Needs the release build, `target/<host>/release/heapwatch` (`bash .ci/test` builds it
//! first with `.ci/build-static`).

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const SESSIONS: usize = 250;
const COMMANDS_PER_SESSION: usize = 200;
/// Requests a client keeps outstanding (under the server's 32 in flight).
const WINDOW: usize = 16;

fn command_for(i: usize) -> (&'static str, Value) {
    match i % 50 {
        49 => ("debug/memory_snapshot", json!({"top_n": 5})),
        n if n % 2 == 0 => ("ping", json!({})),
        _ => ("system/info", json!({})),
    }
}

/// One client: `COMMANDS_PER_SESSION` requests with a window of outstanding ones; returns
/// the number of replies that were errors or did not match an outstanding id.
async fn client(addr: std::net::SocketAddr, n: usize) -> Result<usize, String> {
    let mut ws = ws_connect(addr, &[], None)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut outstanding: HashMap<String, &'static str> = HashMap::new();
    let mut sent = 0;
    let mut bad = 0;
    let mut done = 0;
    while done < n {
        while sent < n && outstanding.len() < WINDOW {
            let (cmd, args) = command_for(sent);
            let id = format!("c{n}-{sent}");
            let text = json!({"message_id": id, "command": cmd, "args": args}).to_string();
            ws.stream
                .send(Message::text(text))
                .await
                .map_err(|e| format!("send: {e}"))?;
            outstanding.insert(id, cmd);
            sent += 1;
        }
        let msg = tokio::time::timeout(WAIT, ws.stream.next())
            .await
            .map_err(|_| "reply timeout".to_string())?;
        let Some(Ok(Message::Text(t))) = msg else {
            return Err(format!("unexpected {msg:?}"));
        };
        let reply: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
        let id = reply["message_id"].as_str().unwrap_or_default().to_string();
        match outstanding.remove(&id) {
            Some(cmd) if reply.get("result").is_some() => {
                let ok = match cmd {
                    "ping" => reply["result"]["pong"] == true,
                    "system/info" => reply["result"]["server_version"].is_string(),
                    _ => reply["result"]["top_allocators"].is_array(),
                };
                if !ok {
                    bad += 1;
                }
            }
            _ => bad += 1,
        }
        done += 1;
    }
    let _ = ws.stream.close(None).await;
    Ok(bad)
}

#[test]
fn many_sessions_many_commands_then_memory_returns() {
    let mut cmd = Command::new(release_binary());
    let dir = tempfile::tempdir().unwrap();
    let options = dir.path().join("options.json");
    std::fs::write(
        &options,
        json!({
            "ingress_listen": "127.0.0.1:0",
            "trusted_proxies": ["127.0.0.1"],
            "data_dir": dir.path().join("data").display().to_string(),
            "debug_memory": true,
            "debug_memory_mode": "exact",
            "log_level": "warning",
        })
        .to_string(),
    )
    .unwrap();
    // Warnings only would hide the listener line; the test reads it at info.
    cmd.arg("--options")
        .arg(&options)
        .env("HEAPWATCH_LOG_LEVEL", "info")
        .env_remove("HEAPWATCH_DEBUG_MEMORY");
    let bin = Binary::launch(cmd, false, dir);
    let addr = bin.ingress;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut control = ws(addr).await;
        // Warm up every path once (lazy statics, symbolizer, sysinfo) before the baseline.
        for round in 0..3 {
            assert_eq!(client(addr, 50).await.unwrap(), 0, "warm-up round {round}");
        }
        let r = control
            .call(
                "b",
                "debug/memory_snapshot",
                json!({"save_as": "before", "top_n": 1}),
            )
            .await;
        let before = r["result"]["allocator"]["current_bytes"].as_u64().unwrap();

        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..SESSIONS {
            tasks.push(tokio::spawn(client(addr, COMMANDS_PER_SESSION)));
        }
        let mut errors = 0;
        for t in tasks {
            errors += tokio::time::timeout(Duration::from_secs(300), t)
                .await
                .expect("bounded")
                .unwrap()
                .expect("client ran");
        }
        let took = started.elapsed();
        assert_eq!(errors, 0, "protocol errors or unmatched replies");
        eprintln!(
            "{} commands over {SESSIONS} sessions in {took:?}",
            SESSIONS * COMMANDS_PER_SESSION
        );

        // The session cap: with 255 more open (256 in all with the control socket), the
        // next upgrade gets 503 and the open ones still answer.
        let mut open = Vec::new();
        for _ in 0..255 {
            open.push(ws(addr).await);
        }
        assert_eq!(ws_refused(addr, &[], None).await, 503);
        for w in open.iter_mut().step_by(50) {
            assert_eq!(w.call("p", "ping", json!({})).await["result"]["pong"], true);
        }
        assert_eq!(
            control.call("p", "ping", json!({})).await["result"]["pong"],
            true
        );
        for mut w in open {
            let _ = w.stream.close(None).await;
        }
        // Sessions end asynchronously: wait until the cap frees up, then settle.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let r = control
            .call(
                "a",
                "debug/memory_snapshot",
                json!({"compare_with": "before", "top_n": 200}),
            )
            .await;
        let result = &r["result"];
        let after = result["allocator"]["current_bytes"].as_u64().unwrap();
        let grown: i64 = result["top_allocators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["size_diff_bytes"].as_i64().unwrap().max(0))
            .sum();
        let worst = &result["top_allocators"][0];
        eprintln!(
            "heap before {before} B, after {after} B, sites grew by {grown} B; largest: {} B at {}",
            worst["size_diff_bytes"], worst["traceback"][0]
        );
        // 250 sessions held tens of MiB between them; what stays must be small and
        // bounded (runtime pools, the baseline itself), not per-session buffers.
        assert!(grown < 1024 * 1024, "sites still hold {grown} B: {worst}");
        assert!(after < before + 2 * 1024 * 1024, "heap {before} → {after}");
        for row in result["top_allocators"].as_array().unwrap() {
            let diff = row["size_diff_bytes"].as_i64().unwrap();
            let tb = row["traceback"].to_string();
            if tb.contains("tungstenite") || tb.contains("ws::session") || tb.contains("serde_json")
            {
                assert!(diff < 64 * 1024, "session-path site kept {diff} B: {tb}");
            }
        }
    });
}
