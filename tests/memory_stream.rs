//! `debug/memory_subscribe` and `debug/memory_unsubscribe` over a real WebSocket: argument
//! rules, the events and their fields, unsubscribing, one shared sampler for every
//! subscriber, and the close of a subscriber that stops reading.

mod support;

use std::time::{Duration, Instant};

use heapwatch::app::Limits;
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A fast clock so the tests do not wait whole seconds; `interval_s` counts these ticks.
const TICK: Duration = Duration::from_millis(100);

fn fast() -> Limits {
    Limits {
        stream_tick: TICK,
        ..Limits::default()
    }
}

/// Sends a subscribe request and returns its result plus any events that came first.
async fn subscribe(ws: &mut Ws, id: &str, interval_s: u64) -> (Value, Vec<Value>) {
    ws.send(
        id,
        "debug/memory_subscribe",
        json!({"interval_s": interval_s}),
    )
    .await;
    let mut early = Vec::new();
    loop {
        let m = ws.recv().await;
        assert_eq!(m["message_id"], id, "only this stream's messages: {m}");
        if m.get("event").is_some() {
            early.push(m);
        } else {
            return (m, early);
        }
    }
}

/// The next `n` events of subscription `id` (nothing else may arrive meanwhile).
async fn events(ws: &mut Ws, id: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = ws.recv().await;
        assert_eq!(m["message_id"], id, "{m}");
        assert_eq!(m["event"], "memory_stats", "{m}");
        out.push(m);
    }
    out
}

/// The reply to request `id`, skipping stream events.
async fn reply(ws: &mut Ws, id: &str) -> Value {
    loop {
        let m = ws.recv().await;
        if m.get("event").is_none() {
            assert_eq!(m["message_id"], id, "{m}");
            return m;
        }
    }
}

async fn streams(ws: &mut Ws) -> Value {
    let r = ws.call("info", "system/info", json!({})).await;
    r["result"]["streams"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_must_be_an_integer_from_1_to_60() {
    let s = TestServer::start_with(|_| {}, fast()).await;
    let mut ws = ws(s.ingress).await;
    for (i, bad) in [
        json!(0),
        json!(61),
        json!(1.5),
        json!("2"),
        json!(true),
        json!(-3),
        json!(null),
    ]
    .into_iter()
    .enumerate()
    {
        if bad.is_null() {
            continue; // null means the default, tested below
        }
        let r = ws
            .call(
                &format!("b{i}"),
                "debug/memory_subscribe",
                json!({"interval_s": bad}),
            )
            .await;
        assert_eq!(r["error_code"], "invalid_args", "{bad}: {r}");
        assert!(r["details"].as_str().unwrap().contains("interval_s"), "{r}");
    }
    let r = ws
        .call("u", "debug/memory_subscribe", json!({"every": 2}))
        .await;
    assert_eq!(r["error_code"], "invalid_args");
    assert!(r["details"].as_str().unwrap().contains("every"), "{r}");
    // Nothing was subscribed, so nothing samples.
    assert_eq!(
        streams(&mut ws).await,
        json!({"memory_subscribers": 0, "samples_taken": 0, "sampling": false})
    );
    let r = ws
        .call(
            "d",
            "debug/memory_unsubscribe",
            json!({"subscription": "b1"}),
        )
        .await;
    assert_eq!(r["error_code"], "not_found", "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_documented_fields_until_unsubscribed() {
    let s = TestServer::start_with(|_| {}, fast()).await;
    let mut ws = ws(s.ingress).await;
    ws.send("d", "debug/memory_subscribe", json!({})).await;
    let (r, early) = {
        let mut early = Vec::new();
        loop {
            let m = ws.recv().await;
            if m.get("event").is_some() {
                early.push(m);
            } else {
                break (m, early);
            }
        }
    };
    assert_eq!(
        r,
        json!({"message_id": "d", "result": {"subscribed": true, "interval_s": 2, "event": "memory_stats"}}),
        "the default interval is 2"
    );
    let mut got = early;
    got.extend(events(&mut ws, "d", 3 - got.len().min(3)).await);
    let e = &got[0];
    assert_eq!(e["message_id"], "d");
    let d = &e["data"];
    assert!(d["sample"].as_u64().unwrap() >= 1, "{e}");
    assert!(d["sampled_at"].as_str().unwrap().ends_with('Z'), "{e}");
    assert!(
        d["system"]["process"]["rss_bytes"].as_u64().unwrap() > 0,
        "{e}"
    );
    assert!(
        d["system"]["process"]["peak_rss_bytes"].as_u64()
            >= d["system"]["process"]["rss_bytes"].as_u64()
    );
    assert!(
        d["system"]["host"]["total_bytes"].as_u64().unwrap() > 0,
        "{e}"
    );
    for k in [
        "available_bytes",
        "used_bytes",
        "swap_total_bytes",
        "swap_used_bytes",
    ] {
        assert!(d["system"]["host"][k].is_u64(), "{k}: {e}");
    }
    assert!(d["system"].get("cgroup").is_some(), "{e}");
    for k in [
        "current_bytes",
        "peak_bytes",
        "live_blocks",
        "total_allocations",
    ] {
        assert!(d["allocator"][k].is_u64(), "{k}: {e}");
    }
    assert!(d["tracking"]["enabled"].is_boolean(), "{e}");
    // interval_s 2: every second sample.
    let seqs: Vec<u64> = got
        .iter()
        .map(|e| e["data"]["sample"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] - w[0] == 2), "{seqs:?}");

    // The same id twice on one socket is refused; another id streams alongside.
    ws.send("d", "debug/memory_subscribe", json!({"interval_s": 1}))
        .await;
    let r = reply(&mut ws, "d").await;
    assert_eq!(r["error_code"], "precondition_failed", "{r}");
    ws.send("d2", "debug/memory_subscribe", json!({"interval_s": 1}))
        .await;
    assert_eq!(reply(&mut ws, "d2").await["result"]["subscribed"], true);

    ws.send(
        "u",
        "debug/memory_unsubscribe",
        json!({"subscription": "d"}),
    )
    .await;
    assert_eq!(
        reply(&mut ws, "u").await["result"],
        json!({"unsubscribed": true})
    );
    ws.send(
        "u2",
        "debug/memory_unsubscribe",
        json!({"subscription": "d2"}),
    )
    .await;
    assert_eq!(
        reply(&mut ws, "u2").await["result"],
        json!({"unsubscribed": true})
    );
    // At most one event already queued may follow; then none for many ticks.
    let mut late = 0;
    let until = Instant::now() + TICK * 12;
    while let Ok(m) = tokio::time::timeout_at(until.into(), ws.recv()).await {
        assert_eq!(m["event"], "memory_stats", "{m}");
        late += 1;
    }
    assert!(late <= 2, "{late} events after unsubscribing");
    let st = streams(&mut ws).await;
    assert_eq!(st["memory_subscribers"], 0, "{st}");
    let r = ws
        .call(
            "u3",
            "debug/memory_unsubscribe",
            json!({"subscription": "d"}),
        )
        .await;
    assert_eq!(r["error_code"], "not_found", "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sampler_serves_every_subscriber_and_stops_when_none_is_left() {
    let s = TestServer::start_with(|_| {}, fast()).await;
    let mut a = ws(s.ingress).await;
    let mut b = ws(s.ingress).await;
    let mut c = ws(s.ingress).await;
    let mut watcher = ws(s.ingress).await;

    let (_, ea) = subscribe(&mut a, "a", 1).await;
    let (_, eb) = subscribe(&mut b, "b", 1).await;
    let (_, ec) = subscribe(&mut c, "c", 3).await;
    let taken_before = streams(&mut watcher).await["samples_taken"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let mut ea = [ea, events(&mut a, "a", 12).await].concat();
    let mut eb = [eb, events(&mut b, "b", 12).await].concat();
    let ec = [ec, events(&mut c, "c", 4).await].concat();
    let st = streams(&mut watcher).await;
    let elapsed = started.elapsed();
    assert_eq!(st["memory_subscribers"], 3, "{st}");
    assert_eq!(st["sampling"], true, "{st}");

    // Samples both interval-1 subscribers received are the same samples: same number,
    // same timestamp, same figures.
    ea.retain(|e| {
        eb.iter()
            .any(|f| f["data"]["sample"] == e["data"]["sample"])
    });
    assert!(
        ea.len() >= 8,
        "the streams overlap: {} shared samples",
        ea.len()
    );
    for e in &ea {
        let f = eb
            .iter()
            .find(|f| f["data"]["sample"] == e["data"]["sample"])
            .unwrap();
        assert_eq!(e["data"], f["data"], "one sample, delivered twice");
    }
    eb.clear();
    // The interval-3 subscriber gets every third of the same samples.
    let seqs: Vec<u64> = ec
        .iter()
        .map(|e| e["data"]["sample"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] - w[0] == 3), "{seqs:?}");

    // One sample per tick in all, not one per subscriber per tick.
    let taken = st["samples_taken"].as_u64().unwrap() - taken_before;
    let ticks = elapsed.as_millis() as u64 / TICK.as_millis() as u64 + 2;
    assert!(
        taken <= ticks,
        "{taken} samples in {elapsed:?} ({ticks} ticks at most)"
    );

    // Everyone leaves (one by unsubscribing, two by closing the socket): the task ends and
    // the counter stands still.
    a.send(
        "ua",
        "debug/memory_unsubscribe",
        json!({"subscription": "a"}),
    )
    .await;
    assert_eq!(reply(&mut a, "ua").await["result"]["unsubscribed"], true);
    drop(b);
    drop(c);
    let deadline = Instant::now() + WAIT;
    loop {
        let st = streams(&mut watcher).await;
        if st["sampling"] == false {
            assert_eq!(st["memory_subscribers"], 0, "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "the sampler never stopped: {st}");
        tokio::time::sleep(TICK).await;
    }
    let idle = streams(&mut watcher).await["samples_taken"].clone();
    tokio::time::sleep(TICK * 8).await;
    assert_eq!(
        streams(&mut watcher).await["samples_taken"],
        idle,
        "no task samples while nobody subscribes"
    );

    // A new subscriber starts it again.
    let mut d = ws(s.ingress).await;
    let (_, early) = subscribe(&mut d, "d", 1).await;
    let got = [early, events(&mut d, "d", 2).await].concat();
    assert!(got[0]["data"]["sample"].as_u64() > idle.as_u64(), "{got:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_that_stops_reading_is_closed_with_1008() {
    // A clock far faster than production and a small queue, so the socket's buffers fill
    // within a second or two; the write timeout stays long so that it is the full queue,
    // not a timed-out write, that ends the session.
    let limits = Limits {
        stream_tick: Duration::from_millis(1),
        outbound_queue: 4,
        write_timeout: Duration::from_secs(15),
        ..Limits::default()
    };
    let s = TestServer::start_with(|_| {}, limits).await;
    let mut watcher = ws(s.ingress).await;

    // A client with a tiny receive buffer that subscribes and then does not read.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(s.ingress).await.unwrap();
    let req = format!("ws://{}/ws", s.ingress)
        .into_client_request()
        .unwrap();
    let (stream, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut slow = Ws {
        stream,
        info: Value::Null,
    };
    slow.send("s", "debug/memory_subscribe", json!({"interval_s": 1}))
        .await;

    // The hub drops the subscriber when its queue is full and the session ends.
    let started = Instant::now();
    loop {
        let st = streams(&mut watcher).await;
        if st["samples_taken"].as_u64().unwrap() > 0 && st["memory_subscribers"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the slow subscriber was never dropped: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reading now drains what was buffered and then the close: 1008, slow consumer.
    let frame = slow.expect_close(1008).await;
    assert!(frame.reason.contains("not reading"), "{frame:?}");
    // Others are unaffected.
    assert_eq!(
        watcher.call("p", "ping", json!({})).await["result"]["pong"],
        true
    );
    s.stop().await;
}
