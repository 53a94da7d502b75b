//! Routing: normalise the path, apply the listener's trust rule, then look the path up in
//! the one route table, [`ROUTES`].
//!
//! - Ingress listener: only peers in `trusted_proxies` (the Supervisor) are served; the
//!   user comes from `X-Remote-User-*`. `/healthz` answers any peer, so the image's own
//!   health check (from inside the container) works; it reveals nothing.
//! - Direct listener: `Authorization: Bearer <api_token>` on every request, except a
//!   WebSocket upgrade without the header, which may authenticate in-band with `auth`.
//!
//! A route is a path, its methods and a handler: the health check, the upgrade, the panel
//! and its assets, or a command from the registry. A command route turns the query string
//! into the command's arguments and goes through `commands::dispatch`, the same path a
//! WebSocket request takes; its [`Reply`] becomes a JSON body or, for a document, the
//! document's bytes and headers. The table is a handful of exact paths, scanned in order:
//! with no path parameters there is nothing for a routing crate to do.
//!
//! Every error body is `{"error_code": "…", "details": "…"}`; [`status_for`](super::response::status_for) is the one
//! mapping from error code to HTTP status.

use std::borrow::Cow;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::panel::{self, Asset};
use super::response::{Resp, constant_json_response, error, json_response};
use super::{Conn, Server, upgrade};
use crate::commands::{
    self, Args, Caller, Command, CommandError, Context, Document, ListenerKind, Reply, User, debug,
    download, host, report, trend,
};
use crate::gate::Decision;

/// What a route does.
#[derive(Clone, Copy)]
pub enum Handler {
    /// `{"status":"ok"}`.
    Health,
    /// The WebSocket upgrade.
    Upgrade,
    /// The panel's page.
    Index,
    /// One of the panel's files.
    Asset(&'static Asset),
    /// A command; the query string is its arguments.
    Command(&'static Command),
}

/// One row of the route table.
pub struct Route {
    pub path: &'static str,
    /// Allowed methods; anything else gets 405 with `Allow` listing these.
    pub methods: &'static [Method],
    pub handler: Handler,
}

/// Every route is read-only.
const GET: &[Method] = &[Method::GET, Method::HEAD];

/// The route table: every path the server answers.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/healthz",
        methods: GET,
        handler: Handler::Health,
    },
    Route {
        path: "/ws",
        methods: GET,
        handler: Handler::Upgrade,
    },
    Route {
        path: "/",
        methods: GET,
        handler: Handler::Index,
    },
    Route {
        path: "/assets/app.js",
        methods: GET,
        handler: Handler::Asset(&panel::APP_JS),
    },
    Route {
        path: "/assets/style.css",
        methods: GET,
        handler: Handler::Asset(&panel::STYLE_CSS),
    },
    Route {
        path: "/assets/icon.svg",
        methods: GET,
        handler: Handler::Asset(&panel::ICON_SVG),
    },
    Route {
        path: "/api/memory/snapshot",
        methods: GET,
        handler: Handler::Command(&debug::MEMORY_SNAPSHOT),
    },
    Route {
        path: "/api/memory/trend",
        methods: GET,
        handler: Handler::Command(&trend::MEMORY_TREND),
    },
    Route {
        path: "/api/memory/history",
        methods: GET,
        handler: Handler::Command(&trend::MEMORY_HISTORY),
    },
    Route {
        path: "/api/report",
        methods: GET,
        handler: Handler::Command(&report::REPORT),
    },
    Route {
        path: "/api/memory/profile.pb.gz",
        methods: GET,
        handler: Handler::Command(&download::PROFILE),
    },
    Route {
        path: "/api/memory/folded",
        methods: GET,
        handler: Handler::Command(&download::FOLDED),
    },
    Route {
        path: "/api/memory/flamegraph.svg",
        methods: GET,
        handler: Handler::Command(&download::FLAMEGRAPH),
    },
    Route {
        path: "/api/host/memory",
        methods: GET,
        handler: Handler::Command(&host::MEMORY),
    },
    Route {
        path: "/api/host/memory_history",
        methods: GET,
        handler: Handler::Command(&host::MEMORY_HISTORY),
    },
    Route {
        path: "/metrics",
        methods: GET,
        handler: Handler::Command(&download::METRICS),
    },
];

/// The route for a normalised path.
pub fn route(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.path == path)
}

/// Routes one request.
pub async fn handle(req: Request<Incoming>, conn: Conn, server: Arc<Server>) -> Resp {
    let path = normalize_path(req.uri().path());
    let trusted = match conn.kind {
        ListenerKind::Ingress => {
            let ok = server.trusted_proxies.contains(&conn.peer.ip());
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
            let gate = &server.services.gate;
            if in_band_ws {
                if let Some(retry) = gate.blocked(conn.peer.ip()) {
                    return rate_limited(retry);
                }
                false
            } else {
                match gate.check(conn.peer.ip(), presented.as_deref()) {
                    Decision::Allowed => true,
                    Decision::Denied => return unauthorized(),
                    Decision::RateLimited { retry_after_s } => return rate_limited(retry_after_s),
                }
            }
        }
    };
    let Some(route) = route(&path) else {
        return error(
            &CommandError::NotFound(format!("no such path: {}", truncate(&path, 200))),
            None,
        );
    };
    if !route.methods.contains(req.method()) {
        return method_not_allowed(route.methods);
    }
    // Built only for the routes that use it: `/healthz` stays free of allocations.
    let caller = || {
        let user = if conn.kind == ListenerKind::Ingress && trusted {
            ingress_user(&req)
        } else {
            None
        };
        Caller::new(conn.kind, conn.peer.ip(), user, trusted)
    };
    match route.handler {
        Handler::Health => constant_json_response(StatusCode::OK, HEALTHZ),
        Handler::Upgrade => {
            let caller = caller();
            upgrade::handle(req, conn, caller, server)
        }
        // X-Ingress-Path is believed only from the trusted ingress proxy.
        Handler::Index => panel::index(&req, conn.kind == ListenerKind::Ingress && trusted),
        Handler::Asset(asset) => panel::serve(asset),
        Handler::Command(command) => {
            let ctx = Context {
                services: server.services.clone(),
                caller: caller(),
                message_id: None,
            };
            let args = Args::Query(req.uri().query().unwrap_or("").to_owned());
            match commands::dispatch(ctx, command, args).await {
                Ok(Reply::Document(document)) => document_response(document),
                Ok(reply) => json_response(StatusCode::OK, &reply),
                Err(e) => error(&e, None),
            }
        }
    }
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

/// `GET /healthz`'s body, compact, as `json!({"status": "ok"})` writes it.
const HEALTHZ: &str = r#"{"status":"ok"}"#;

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

fn method_not_allowed(methods: &[Method]) -> Resp {
    let allow = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let e = CommandError::InvalidMessage(format!("only {allow} is allowed here"));
    let mut r = error(&e, Some(StatusCode::METHOD_NOT_ALLOWED));
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_str(&allow).expect("method names are header-safe"),
    );
    r
}

/// A document: its bytes, its type, never cached; a download (`file_name`) is saved
/// rather than shown.
fn document_response(document: Document) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(document.body)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(document.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(name) = document.file_name
        && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
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
        assert_eq!(HEALTHZ, serde_json::json!({"status": "ok"}).to_string());
    }

    #[test]
    fn every_route_is_unique_and_every_document_command_has_one() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert(r.path), "{} listed twice", r.path);
            assert_eq!(normalize_path(r.path), r.path, "{} is not normal", r.path);
            assert!(!r.methods.is_empty());
        }
        for c in commands::DOCUMENTS {
            assert!(
                ROUTES
                    .iter()
                    .any(|r| matches!(r.handler, Handler::Command(rc) if rc.name == c.name)),
                "{} has no route",
                c.name
            );
        }
        for a in panel::ASSETS {
            assert!(route(a.path).is_some(), "{} has no route", a.path);
        }
    }
}
