//! A client for the Home Assistant Supervisor's API, just what host monitoring needs: the
//! add-on list, each container's stats, and two calls into Core (a persistent
//! notification, an entity's state).
//!
//! Every call is one HTTP/1.1 request on a fresh connection (the Supervisor is on the
//! container network, a connection costs nothing next to the ~1 s a stats call takes),
//! with the token as a bearer header and a deadline on the whole exchange. Replies are the
//! Supervisor's envelope, `{"result": "ok", "data": …}`; its errors are
//! `{"result": "error", "message": …}` with a 4xx/5xx status, except 401 and 403, which
//! are plain text.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::settings::Secret;

/// Largest reply read: an add-on list of a few hundred entries is far below this.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Why a Supervisor call failed. Each message is written for the add-on log and the
/// panel: what happened and, where there is one, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot reach the Supervisor at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the Supervisor did not answer {path} within {seconds} s")]
    Timeout { path: String, seconds: u64 },
    #[error(
        "the Supervisor refused {path} ({status}): the add-on needs `hassio_api: true` and `hassio_role: manager` to read other add-ons' memory"
    )]
    Forbidden { path: String, status: u16 },
    #[error("{path} is not running")]
    NotRunning { path: String },
    #[error("the Supervisor answered {path} with {status}: {message}")]
    Failed {
        path: String,
        status: u16,
        message: String,
    },
    #[error("the Supervisor's reply to {path} is not what it should be: {reason}")]
    Malformed { path: String, reason: String },
}

/// The Supervisor's base address and the add-on's token.
#[derive(Clone, Debug)]
pub struct Supervisor {
    /// `host:port` to connect to.
    authority: String,
    /// What `Host:` says (the URL's host, with the port when one was given).
    host: String,
    url: String,
    token: Secret,
    timeout: Duration,
}

/// One container the Supervisor reports on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddonInfo {
    pub slug: String,
    pub name: String,
    /// `started`, `stopped`, `error`, … as the Supervisor says.
    pub state: String,
    pub version: Option<String>,
}

/// One stats reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_percent: f64,
    pub cpu_percent: f64,
}

impl Supervisor {
    /// A client for `url` (`http://host[:port]`, as the `supervisor_url` setting gives
    /// it), each call bounded by `timeout`.
    ///
    /// # Errors
    /// [`SupervisorError::Unreachable`] for a URL that is not plain `http://host[:port]`.
    pub fn new(url: &str, token: Secret, timeout: Duration) -> Result<Self, SupervisorError> {
        let bad = |reason: &str| SupervisorError::Unreachable {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(
                "only http:// is supported (the Supervisor is on the local network)",
            ));
        }
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(bad("give the base address only, with no path"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        Ok(Self {
            authority: format!(
                "{}:{}",
                authority.host(),
                authority.port_u16().unwrap_or(80)
            ),
            host: authority.as_str().to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            token,
            timeout,
        })
    }

    /// The base URL, as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET path`, the envelope's `data`.
    ///
    /// # Errors
    /// Any [`SupervisorError`].
    pub async fn get(&self, path: &str) -> Result<Value, SupervisorError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, the reply's `data` (or the whole reply, for Core's API,
    /// which answers without the Supervisor's envelope).
    ///
    /// # Errors
    /// Any [`SupervisorError`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, SupervisorError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// The installed add-ons.
    ///
    /// # Errors
    /// Any [`SupervisorError`]; `Malformed` when an entry lacks a slug.
    pub async fn addons(&self) -> Result<Vec<AddonInfo>, SupervisorError> {
        let path = "/addons";
        let data = self.get(path).await?;
        let malformed = |reason: &str| SupervisorError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let list = data
            .get("addons")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no `addons` list"))?;
        list.iter()
            .map(|a| {
                let text = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
                Ok(AddonInfo {
                    slug: text("slug").ok_or_else(|| malformed("an add-on without a slug"))?,
                    name: text("name").unwrap_or_else(|| text("slug").unwrap_or_default()),
                    state: text("state").unwrap_or_else(|| "unknown".into()),
                    version: text("version"),
                })
            })
            .collect()
    }

    /// Memory and CPU of the container behind `stats_path` (`/addons/<slug>/stats`,
    /// `/core/stats`, …).
    ///
    /// # Errors
    /// Any [`SupervisorError`]; `NotRunning` for a stopped add-on.
    pub async fn stats(&self, stats_path: &str) -> Result<Stats, SupervisorError> {
        let data = self.get(stats_path).await?;
        let number = |k: &str| data.get(k).and_then(Value::as_f64);
        let memory_usage = data
            .get("memory_usage")
            .and_then(Value::as_u64)
            .ok_or_else(|| SupervisorError::Malformed {
                path: stats_path.to_owned(),
                reason: "no `memory_usage` in bytes".into(),
            })?;
        Ok(Stats {
            memory_usage,
            memory_limit: data
                .get("memory_limit")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            memory_percent: number("memory_percent").unwrap_or(0.0),
            cpu_percent: number("cpu_percent").unwrap_or(0.0),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, SupervisorError> {
        let seconds = self.timeout.as_secs().max(1);
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SupervisorError::Timeout {
                path: path.to_owned(),
                seconds,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, SupervisorError> {
        let unreachable = |reason: String| SupervisorError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // The connection is driven beside the request and ends with it.
        let driver = tokio::spawn(connection);
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).expect("a JSON value serializes")),
            None => Bytes::new(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = request
            .body(Full::new(bytes))
            .map_err(|e| unreachable(format!("bad request for {path}: {e}")))?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
            .map_err(|_| unreachable("the token is not a valid header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, auth);

        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("{path}: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(format!("{path}: reading the reply: {e}")))?
            .to_bytes();
        driver.abort();
        decode(path, status, &body)
    }
}

/// The envelope's `data`, or the error its status and body say.
fn decode(path: &str, status: StatusCode, body: &[u8]) -> Result<Value, SupervisorError> {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(SupervisorError::Forbidden {
            path: path.to_owned(),
            status: status.as_u16(),
        });
    }
    let json: Result<Value, _> = serde_json::from_slice(body);
    let message = |json: &Result<Value, serde_json::Error>| {
        json.as_ref()
            .ok()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str)
            .map_or_else(
                || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                str::to_owned,
            )
    };
    if !status.is_success() {
        let key = json
            .as_ref()
            .ok()
            .and_then(|v| v.get("error_key"))
            .and_then(Value::as_str);
        if key == Some("app_not_running_error") || status == StatusCode::BAD_REQUEST {
            return Err(SupervisorError::NotRunning {
                path: path.to_owned(),
            });
        }
        return Err(SupervisorError::Failed {
            path: path.to_owned(),
            status: status.as_u16(),
            message: message(&json),
        });
    }
    let json = json.map_err(|e| SupervisorError::Malformed {
        path: path.to_owned(),
        reason: format!("not JSON: {e}"),
    })?;
    match json.get("result").and_then(Value::as_str) {
        Some("ok") => Ok(json.get("data").cloned().unwrap_or(Value::Null)),
        // Core's own API (under /core/api/) answers without the envelope.
        None if path.starts_with("/core/api/") => Ok(json),
        _ => Err(SupervisorError::Malformed {
            path: path.to_owned(),
            reason: "no `\"result\": \"ok\"`".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_are_plain_http_base_addresses() {
        let t = || Secret::new("x");
        let s = Supervisor::new("http://supervisor", t(), Duration::from_secs(1)).unwrap();
        assert_eq!(
            (s.authority.as_str(), s.host.as_str()),
            ("supervisor:80", "supervisor")
        );
        let s = Supervisor::new("http://127.0.0.1:9/", t(), Duration::from_secs(1)).unwrap();
        assert_eq!(s.authority, "127.0.0.1:9");
        for bad in [
            "https://supervisor",
            "supervisor",
            "http://supervisor/api",
            "",
        ] {
            assert!(
                Supervisor::new(bad, t(), Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_decode_as_the_supervisor_writes_them() {
        let ok = br#"{"result":"ok","data":{"memory_usage":5}}"#;
        assert_eq!(
            decode("/core/stats", StatusCode::OK, ok).unwrap(),
            json!({"memory_usage": 5})
        );
        assert!(matches!(
            decode("/addons", StatusCode::FORBIDDEN, b"403: Forbidden"),
            Err(SupervisorError::Forbidden { status: 403, .. })
        ));
        let stopped = br#"{"result":"error","message":"App x is not running","error_key":"app_not_running_error"}"#;
        assert!(matches!(
            decode("/addons/x/stats", StatusCode::BAD_REQUEST, stopped),
            Err(SupervisorError::NotRunning { .. })
        ));
        let e = decode(
            "/addons/y/stats",
            StatusCode::NOT_FOUND,
            br#"{"result":"error","message":"App does not exist"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("App does not exist"), "{e}");
        assert!(matches!(
            decode("/addons", StatusCode::OK, b"{not json"),
            Err(SupervisorError::Malformed { .. })
        ));
        assert_eq!(
            decode(
                "/core/api/states/x",
                StatusCode::OK,
                br#"{"entity_id":"x"}"#
            )
            .unwrap(),
            json!({"entity_id": "x"})
        );
    }
}
