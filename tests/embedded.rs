//! The admin API mounted on an embedder's own server (`app::Admin`), with the settings
//! made for embedding (`Settings::embedded`): the embedder's accept loop, the admin's
//! service on each connection, a real HTTP client and a real WebSocket client.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use heapwatch::app::{Admin, Limits};
use heapwatch::settings::Settings;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::{TOKEN, get, ws_connect};
use tokio::net::TcpListener;

/// The embedder's accept loop: every connection served with the admin's service.
async fn embed() -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Admin>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings = Settings::embedded(TOKEN).expect("a 38-character token is accepted");
    settings.data_dir = std::env::temp_dir();
    let admin = Admin::start(settings, Limits::default(), addr);
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let served = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        // Until the test says stop; then the admin goes back for shutdown.
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = &mut stopped => break,
            };
            let svc = admin.service(peer);
            connections.spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
        admin
    });
    (addr, stop, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_admin_api_wants_its_token_and_shuts_down_cleanly() {
    let (addr, stop, served) = embed().await;
    let bearer = format!("Bearer {TOKEN}");

    // Requests without the token are refused, with it they are served.
    let r = get(addr, "/api/memory/trend", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_code"], "not_authenticated");
    let r = get(addr, "/api/memory/trend", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert!(r.json()["verdict"].is_string());
    let r = get(addr, "/healthz", &[]).await;
    assert_eq!(r.status, 401, "the embedder's port is token-only");

    // A WebSocket authenticates in band, then runs commands.
    let mut ws = ws_connect(addr, &[], None).await.unwrap();
    assert_eq!(ws.info["data"]["requires_auth"], true);
    let r = ws.call("1", "nope/nope", json!({})).await;
    assert_eq!(r["error_code"], "not_authenticated", "{r}");
    let r = ws.call("2", "auth", json!({"token": TOKEN})).await;
    assert_eq!(r["result"]["authenticated"], true, "{r}");
    let r = ws.call("3", "system/info", json!({})).await;
    assert_eq!(r["result"]["listeners"]["direct"], addr.to_string(), "{r}");

    // Shutdown closes the session with 1001 within the deadline.
    stop.send(()).unwrap();
    let admin = tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the accept loop ends")
        .unwrap();
    let started = std::time::Instant::now();
    admin.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    ws.expect_close(1001).await;
}

#[test]
fn embedded_settings_are_loopback_with_a_token() {
    let s = Settings::embedded(TOKEN).unwrap();
    assert!(s.ingress_listen.ip().is_loopback() && s.direct_listen.ip().is_loopback());
    assert!(s.trusted_proxies.iter().all(|ip| ip.is_loopback()));
    assert_eq!(s.api_token.as_ref().map(|t| t.expose()), Some(TOKEN));
    let e = Settings::embedded("short").unwrap_err().to_string();
    assert!(e.contains("api_token") && e.contains("at least 32"), "{e}");
}
