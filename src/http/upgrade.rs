//! The WebSocket upgrade, in two steps (STYLE rule 6): [`handle`] validates the request
//! (method, headers, origin, the session cap) and answers 101; the spawned task receives
//! the upgraded connection and hands a ready stream to `ws::session::run`.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::response::{Resp, error};
use super::{Conn, Server};
use crate::commands::{Caller, CommandError, Context, ListenerKind};

/// Validates an upgrade request and, when it is good, answers 101 and starts the session.
pub fn handle(
    mut req: Request<Incoming>,
    conn: Conn,
    caller: Arc<Caller>,
    server: Arc<Server>,
) -> Resp {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return bad_request(
            "this path takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut r = bad_request("unsupported WebSocket version; use 13");
        *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return bad_request("Sec-WebSocket-Key is missing");
    };
    if conn.kind == ListenerKind::Direct && !same_origin(&req) {
        server.log_refused(conn.peer, "cross-origin WebSocket upgrade");
        let e =
            CommandError::NotAuthenticated("forbidden: the Origin does not match the Host".into());
        return error(&e, Some(StatusCode::FORBIDDEN));
    }
    let Ok(permit) = server.ws_slots.clone().try_acquire_owned() else {
        let e = CommandError::Unavailable(format!(
            "too many WebSocket sessions (at most {}); try again later",
            server.limits.max_ws_sessions
        ));
        return error(&e, None);
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = server.limits.clone();
    let cancel = server.cancel.clone();
    let ctx = Context {
        services: server.services.clone(),
        caller,
        message_id: None,
    };
    server.tasks.spawn(async move {
        let _permit = permit;
        match on_upgrade.await {
            Ok(upgraded) => {
                // An 8 KiB read buffer instead of tungstenite's 128 KiB: it is zero-filled
                // before every read (10-15% of the add-on's CPU under load, measured) and
                // held per socket; messages larger than it still arrive, in more reads.
                let config = WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .max_message_size(Some(limits.max_message_bytes))
                    .max_frame_size(Some(limits.max_message_bytes))
                    .max_write_buffer_size(limits.max_write_buffer_bytes);
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                crate::ws::session::run(socket, ctx, limits, cancel).await;
            }
            Err(e) => tracing::debug!(peer = %conn.peer, error = %e, "websocket upgrade failed"),
        }
    });
    let mut resp = Response::new(http_body_util::Full::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    resp
}

/// Cross-site WebSocket hijacking guard: a browser always sends `Origin`; its host (and
/// port) must equal `Host`. Clients that send no `Origin` are not browsers.
fn same_origin(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host.trim())
}

fn bad_request(why: &str) -> Resp {
    error(&CommandError::InvalidMessage(why.into()), None)
}
