//! The ingress panel. Until the panel lands this is a plain page that says what the add-on
//! is and where its API lives. Every URL on it is relative, so it works at any path prefix
//! (Home Assistant serves it under `/api/hassio_ingress/<token>/`).

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};

use super::router::Resp;

/// Allows only this origin's own resources and does not forbid framing (Home Assistant
/// shows the panel in an iframe).
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'";

const INDEX: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Heapwatch</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 40rem; line-height: 1.5; }
  @media (prefers-color-scheme: dark) { body { background: #111; color: #eee; } a { color: #8cf; } }
  code { font-size: 0.95em; }
</style>
</head>
<body>
<h1>Heapwatch</h1>
<p>What is eating this process's memory? The admin API is up.</p>
<ul>
  <li>WebSocket: <code>ws</code> (relative to this page) — send <code>{"message_id": "1", "command": "system/info"}</code></li>
  <li>Health: <a href="healthz">healthz</a></li>
  <li>Snapshot over HTTP: <a href="api/memory/snapshot?top_n=10">api/memory/snapshot</a></li>
</ul>
</body>
</html>
"#;

/// `GET /`.
pub fn index(_req: &Request<Incoming>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(INDEX.as_bytes())));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
