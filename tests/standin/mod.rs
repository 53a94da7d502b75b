//! A Supervisor stand-in on loopback for the host-monitoring tests (tests/host.rs) and the
//! panel's Host view (tests/panel.rs): the add-on list and every container's stats in the
//! Supervisor's shapes (envelope, plain-text 401/403, 400 for a stopped add-on), Core's
//! API for notifications and states, with memory that follows a shape per container on a
//! compressed clock.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub const MIB: f64 = 1024.0 * 1024.0;
pub const SUPERVISOR_TOKEN: &str = "0123456789abcdef0123456789abcdef";
/// One real millisecond is this many simulated ones (20 ms stands for a minute).
pub const SCALE: f64 = 3000.0;

/// Memory in bytes at a simulated hour.
pub type Shape = Box<dyn Fn(f64) -> f64 + Send + Sync>;

/// How a stand-in container answers.
pub enum Answer {
    Memory(Shape),
    /// 400 `app_not_running_error`.
    Stopped,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Closes the connection without answering.
    Drop,
}

pub struct StandIn {
    pub addons: BTreeMap<String, (String, Answer)>,
    pub fixed: BTreeMap<String, Answer>,
    /// `true`: the add-on's role is too low (every call gets 403); tests flip it.
    pub forbidden: AtomicBool,
    pub latency: Duration,
    pub started: Instant,
    /// GET requests (the add-on list and stats calls).
    pub calls: Mutex<u64>,
    /// Every POST to Core's API: (path, body).
    pub posts: Mutex<Vec<(String, Value)>>,
}

impl StandIn {
    pub fn hours(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * SCALE / 3_600.0
    }

    pub fn answer(&self, path: &str) -> (StatusCode, String) {
        let envelope = |data: Value| json!({"result": "ok", "data": data}).to_string();
        if path == "/addons" {
            let list: Vec<Value> = self
                .addons
                .iter()
                .map(|(slug, (name, a))| {
                    let state = if matches!(a, Answer::Stopped) {
                        "stopped"
                    } else {
                        "started"
                    };
                    json!({"slug": slug, "name": name, "state": state, "version": "1.0.0",
                           "repository": "local", "update_available": false})
                })
                .collect();
            return (StatusCode::OK, envelope(json!({"addons": list})));
        }
        let Some(target) = path.strip_suffix("/stats") else {
            return (
                StatusCode::NOT_FOUND,
                json!({"result": "error", "message": "no such path"}).to_string(),
            );
        };
        let answer = match target.strip_prefix("/addons/") {
            Some(slug) => self.addons.get(slug).map(|(_, a)| a),
            None => self.fixed.get(target.trim_start_matches('/')),
        };
        match answer {
            None => (
                StatusCode::NOT_FOUND,
                json!({"result": "error", "message": "App does not exist"}).to_string(),
            ),
            Some(Answer::Stopped) => (
                StatusCode::BAD_REQUEST,
                json!({"result": "error", "message": "App is not running",
                       "error_key": "app_not_running_error", "extra_fields": {"app": target}})
                .to_string(),
            ),
            Some(Answer::Garbage) => (StatusCode::OK, "{\"result\": \"ok\", \"data\": {".into()),
            Some(Answer::Drop) => (StatusCode::IM_A_TEAPOT, String::new()),
            Some(Answer::Memory(f)) => {
                let bytes = f(self.hours()).max(0.0) as u64;
                (
                    StatusCode::OK,
                    envelope(json!({"cpu_percent": 0.4, "memory_usage": bytes,
                        "memory_limit": 4_000_000_000u64, "memory_percent": bytes as f64 / 4e7,
                        "network_rx": 0, "network_tx": 0, "blk_read": 0, "blk_write": 0})),
                )
            }
        }
    }
}

/// A stand-in whose clock starts now.
pub fn new_standin(
    addons: BTreeMap<String, (String, Answer)>,
    fixed: BTreeMap<String, Answer>,
    forbidden: bool,
    latency: Duration,
) -> Arc<StandIn> {
    Arc::new(StandIn {
        addons,
        fixed,
        forbidden: AtomicBool::new(forbidden),
        latency,
        started: Instant::now(),
        calls: Mutex::new(0),
        posts: Mutex::default(),
    })
}

/// Serves the stand-in on 127.0.0.1:0.
pub async fn serve(standin: Arc<StandIn>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let standin = standin.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let standin = standin.clone();
                    async move {
                        if req.method() == hyper::Method::GET {
                            *standin.calls.lock().unwrap() += 1;
                        }
                        tokio::time::sleep(standin.latency).await;
                        let authorized = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            == Some(&format!("Bearer {SUPERVISOR_TOKEN}"));
                        let path = req.uri().path().to_owned();
                        let post = req.method() == hyper::Method::POST;
                        let body_in = http_body_util::BodyExt::collect(req.into_body())
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (status, body) = if !authorized {
                            (StatusCode::UNAUTHORIZED, "401: Unauthorized".to_string())
                        } else if standin.forbidden.load(Ordering::Relaxed) {
                            (StatusCode::FORBIDDEN, "403: Forbidden".to_string())
                        } else if post && path.starts_with("/core/api/") {
                            let body: Value =
                                serde_json::from_slice(&body_in).unwrap_or(Value::Null);
                            standin.posts.lock().unwrap().push((path, body));
                            (StatusCode::OK, "[]".to_string())
                        } else {
                            standin.answer(&path)
                        };
                        if status == StatusCode::IM_A_TEAPOT {
                            return Err(std::io::Error::other("dropped on purpose"));
                        }
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = status;
                        Ok::<_, std::io::Error>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

pub fn flat(mib: f64) -> Answer {
    Answer::Memory(Box::new(move |t| (mib + 0.3 * (t * 977.0).sin()) * MIB))
}
