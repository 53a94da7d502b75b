//! Routing: normalise the path, apply the listener's trust rule, then dispatch.
//!
//! - Ingress listener: only peers in `trusted_proxies` (the Supervisor) are served; the
//!   user comes from `X-Remote-User-*`. `/healthz` answers any peer, so the image's own
//!   health check (from inside the container) works; it reveals nothing.
//! - Direct listener: `Authorization: Bearer <api_token>` on every request, except a
//!   WebSocket upgrade without the header, which may authenticate in-band with `auth`.
//!
//! Routes: `/healthz`, `/ws` (the upgrade), `/` and `/assets/…` (the panel),
//! `/api/memory/snapshot` and `/api/report` (a JSON download); all GET or HEAD.
//!
//! Every error body is `{"error_code": "…", "details": "…"}`; [`status_for`] is the one
//! mapping from error code to HTTP status.

use std::borrow::Cow;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::Verdict;
use super::{Conn, Server, exports, panel, upgrade};
use crate::commands::{self, CommandError, Context, ListenerKind, Session, User};

/// The response type of every route.
pub type Resp = Response<Full<Bytes>>;

/// Routes one request.
pub async fn handle(req: Request<Incoming>, conn: Conn, server: Arc<Server>) -> Resp {
    let path = normalize_path(req.uri().path());
    let trusted = match conn.kind {
        ListenerKind::Ingress => {
            let ok = server
                .shared
                .settings
                .trusted_proxies
                .contains(&conn.peer.ip());
            if !ok && path != "/healthz" {
                server.log_refused(conn.peer, "peer is not a trusted ingress proxy");
                return error(
                    &CommandError::NotAuthenticated(
                        "forbidden: this port serves Home Assistant ingress only".into(),
                    ),
                    Some(StatusCode::FORBIDDEN),
                );
            }
            ok
        }
        ListenerKind::Direct => {
            let presented = bearer(&req);
            let in_band_ws = path == "/ws" && req.headers().get(header::AUTHORIZATION).is_none();
            if in_band_ws {
                if let Some(retry) = server.shared.auth.blocked(conn.peer.ip()) {
                    return rate_limited(retry);
                }
                false
            } else {
                match server
                    .shared
                    .auth
                    .check(conn.peer.ip(), presented.as_deref())
                {
                    Verdict::Allowed => true,
                    Verdict::Denied => return unauthorized(),
                    Verdict::RateLimited { retry_after_s } => return rate_limited(retry_after_s),
                }
            }
        }
    };
    let user = if conn.kind == ListenerKind::Ingress && trusted {
        ingress_user(&req)
    } else {
        None
    };
    let session = || Session::new(conn.kind, conn.peer.ip(), user.clone(), trusted);
    let context = || Context {
        shared: server.shared.clone(),
        session: session(),
        message_id: None,
    };

    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let asset = panel::asset(&path);
    match &*path {
        "/healthz" | "/ws" | "/" | "/api/memory/snapshot" | "/api/report" if !is_get => {
            method_not_allowed()
        }
        exports::PROFILE
        | exports::FOLDED
        | exports::FLAMEGRAPH
        | exports::TREND
        | exports::METRICS
            if !is_get =>
        {
            method_not_allowed()
        }
        _ if asset.is_some() && !is_get => method_not_allowed(),
        "/healthz" => constant_json_response(StatusCode::OK, HEALTHZ),
        "/ws" => upgrade::handle(req, conn, session(), server),
        // X-Ingress-Path is believed only from the trusted ingress proxy.
        "/" => panel::index(&req, conn.kind == ListenerKind::Ingress && trusted),
        "/api/memory/snapshot" => snapshot(&req, context()).await,
        "/api/report" => report(&req, context()).await,
        exports::PROFILE
        | exports::FOLDED
        | exports::FLAMEGRAPH
        | exports::TREND
        | exports::METRICS => exports::route(&path, &req, context()).await,
        _ if asset.is_some() => panel::serve(asset.expect("checked above")),
        _ => error(
            &CommandError::NotFound(format!("no such path: {}", truncate(&path, 200))),
            None,
        ),
    }
}

async fn snapshot(req: &Request<Incoming>, ctx: Context) -> Resp {
    let args = match query_args(req.uri().query().unwrap_or("")) {
        Ok(a) => a,
        Err(e) => return error(&e, None),
    };
    match commands::dispatch(ctx, commands::debug::MEMORY_SNAPSHOT.name, args).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error(&e, None),
    }
}

/// `GET /api/report`: the report as a JSON download.
async fn report(req: &Request<Incoming>, ctx: Context) -> Resp {
    let args = match query_args(req.uri().query().unwrap_or("")) {
        Ok(a) => a,
        Err(e) => return error(&e, None),
    };
    match commands::report::build(ctx.shared, args).await {
        Ok(v) => {
            let body = serde_json::to_vec_pretty(&v).expect("a JSON value always serializes");
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            let name = commands::report::file_name(std::time::SystemTime::now());
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                    .expect("the file name is ASCII letters, digits, '-' and '.'"),
            );
            resp
        }
        Err(e) => error(&e, None),
    }
}

/// Query parameters as command arguments: integers become numbers, the rest strings.
fn query_args(query: &str) -> Result<Value, CommandError> {
    let mut args = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let value = match v.parse::<i64>() {
            Ok(n) if k == "top_n" => Value::from(n),
            _ => Value::String(v.into_owned()),
        };
        if args.insert(k.to_string(), value).is_some() {
            return Err(CommandError::InvalidArgs(format!(
                "argument `{k}`: given more than once"
            )));
        }
    }
    Ok(Value::Object(args))
}

/// Collapses repeated slashes; everything else is matched literally. A path that needs
/// no change (nearly every one) is borrowed, not copied.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let normal =
        !path.is_empty() && !path.contains("//") && (path.len() == 1 || !path.ends_with('/'));
    if normal {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    Cow::Owned(if out.is_empty() { "/".into() } else { out })
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn ingress_user(req: &Request<Incoming>) -> Option<User> {
    let get = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| truncate(s, 256))
            .filter(|s| !s.is_empty())
    };
    let user = User {
        id: get("x-remote-user-id"),
        name: get("x-remote-user-name"),
        display_name: get("x-remote-user-display-name"),
    };
    (user != User::default()).then_some(user)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The HTTP status of each error code: the one mapping for this transport.
pub fn status_for(e: &CommandError) -> StatusCode {
    match e {
        CommandError::InvalidMessage(_) | CommandError::InvalidArgs(_) => StatusCode::BAD_REQUEST,
        CommandError::UnknownCommand(_) | CommandError::NotFound(_) => StatusCode::NOT_FOUND,
        CommandError::PreconditionFailed(_) => StatusCode::CONFLICT,
        CommandError::NotAuthenticated(_) => StatusCode::UNAUTHORIZED,
        CommandError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        CommandError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error response; `status` overrides the mapping where the transport needs to (403).
pub fn error(e: &CommandError, status: Option<StatusCode>) -> Resp {
    let body = json!({"error_code": e.code(), "details": e.details()});
    json_response(status.unwrap_or_else(|| status_for(e)), &body)
}

/// `GET /healthz`'s body, compact, as `json!({"status": "ok"})` writes it.
const HEALTHZ: &str = r#"{"status":"ok"}"#;

/// A JSON response that is never cached.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec(body).expect("a response body always serializes");
    json_bytes_response(status, Bytes::from(body))
}

/// A constant JSON response (its body is not copied).
fn constant_json_response(status: StatusCode, body: &'static str) -> Resp {
    json_bytes_response(status, Bytes::from_static(body.as_bytes()))
}

fn json_bytes_response(status: StatusCode, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn unauthorized() -> Resp {
    let mut r = error(
        &CommandError::NotAuthenticated("missing or wrong bearer token".into()),
        None,
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn rate_limited(retry_after_s: u64) -> Resp {
    let e = CommandError::RateLimited(format!(
        "too many failed attempts from this address; try again in {retry_after_s} s"
    ));
    let mut r = error(&e, None);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}

fn method_not_allowed() -> Resp {
    let e = CommandError::InvalidMessage("only GET is allowed here".into());
    let mut r = error(&e, Some(StatusCode::METHOD_NOT_ALLOWED));
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalize_path("//healthz"), "/healthz");
        assert_eq!(
            normalize_path("/api//memory///snapshot/"),
            "/api/memory/snapshot"
        );
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("///"), "/");
    }

    #[test]
    fn paths_that_need_no_change_are_borrowed_and_the_rest_normalised_as_before() {
        for (path, want) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("///", "/"),
            ("/healthz", "/healthz"),
            ("/healthz/", "/healthz"),
            ("//healthz", "/healthz"),
            ("/a//b", "/a/b"),
            ("/a/b//", "/a/b"),
            ("healthz", "healthz"),
            ("healthz/", "healthz"),
            ("a//", "a"),
            ("/é/ü", "/é/ü"),
            ("/%2F/", "/%2F"),
            ("/assets/app.js", "/assets/app.js"),
            ("*", "*"),
        ] {
            let normal = normalize_path(path);
            assert_eq!(normal, want, "{path:?}");
            assert_eq!(
                matches!(normal, Cow::Borrowed(_)),
                normal == path,
                "{path:?}"
            );
        }
    }

    #[test]
    fn healthz_answers_what_json_wrote() {
        assert_eq!(HEALTHZ, json!({"status": "ok"}).to_string());
    }

    #[test]
    fn query_becomes_args() {
        let a = query_args("top_n=5&save_as=a%20b&group_by=file").unwrap();
        assert_eq!(a, json!({"top_n": 5, "save_as": "a b", "group_by": "file"}));
        assert_eq!(query_args("top_n=x").unwrap(), json!({"top_n": "x"}));
        assert_eq!(query_args("save_as=12").unwrap(), json!({"save_as": "12"}));
        assert!(
            query_args("top_n=1&top_n=2")
                .unwrap_err()
                .details()
                .contains("top_n")
        );
    }

    #[test]
    fn every_error_code_has_a_status() {
        assert_eq!(
            status_for(&CommandError::InvalidArgs(String::new())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_for(&CommandError::NotFound(String::new())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_for(&CommandError::PreconditionFailed(String::new())),
            StatusCode::CONFLICT
        );
    }
}
