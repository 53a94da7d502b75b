//! The export routes: `/api/memory/profile.pb.gz`, `/api/memory/folded`,
//! `/api/memory/flamegraph.svg`, `/api/memory/trend` and `/metrics`. They sit behind the
//! router's trust and token gate like every other route; this file only reads the query,
//! calls `commands::export` / `commands::trend` and wraps the bytes.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::router::{Resp, error, json_response};
use crate::commands::export::{self, Format};
use crate::commands::{CommandError, Context, trend};

/// The only query parameter the heap exports take: `baseline`.
fn baseline_arg(req: &Request<Incoming>) -> Result<Option<String>, CommandError> {
    let mut baseline = None;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "baseline" if baseline.is_none() => baseline = Some(v.into_owned()),
            "baseline" => {
                return Err(CommandError::InvalidArgs(
                    "argument `baseline`: given more than once".into(),
                ));
            }
            other => {
                return Err(CommandError::InvalidArgs(format!(
                    "unknown argument `{}`; the only argument is `baseline`",
                    other.chars().take(40).collect::<String>()
                )));
            }
        }
    }
    Ok(baseline)
}

fn bytes_response(body: Vec<u8>, content_type: &'static str, file_name: Option<&str>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(name) = file_name
        && let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// A heap export in `format`.
pub async fn heap(req: &Request<Incoming>, ctx: Context, format: Format) -> Resp {
    let baseline = match baseline_arg(req) {
        Ok(b) => b,
        Err(e) => return error(&e, None),
    };
    match export::export(ctx.shared, format, baseline).await {
        // The profile downloads as a file; text and SVG open in the browser.
        Ok(e) => bytes_response(
            e.body,
            e.content_type,
            (format == Format::Pprof).then_some(e.file_name),
        ),
        Err(e) => error(&e.logged("export"), None),
    }
}

/// `/api/memory/trend`: the `debug/memory_trend` result.
pub async fn trend(req: &Request<Incoming>, ctx: Context) -> Resp {
    if req.uri().query().is_some_and(|q| !q.is_empty()) {
        return error(
            &CommandError::InvalidArgs("this endpoint takes no arguments".into()),
            None,
        );
    }
    match trend::report(ctx.shared).await {
        Ok(r) => json_response(StatusCode::OK, &trend::report_json(&r)),
        Err(e) => error(&e.logged("debug/memory_trend"), None),
    }
}

/// `/metrics`: Prometheus text format.
pub async fn metrics(ctx: Context) -> Resp {
    match export::metrics(ctx.shared).await {
        Ok(text) => bytes_response(
            text.into_bytes(),
            crate::export::metrics::CONTENT_TYPE,
            None,
        ),
        Err(e) => error(&e.logged("metrics"), None),
    }
}

/// The pprof profile.
pub const PROFILE: &str = "/api/memory/profile.pb.gz";
/// Folded stacks.
pub const FOLDED: &str = "/api/memory/folded";
/// The SVG flame graph.
pub const FLAMEGRAPH: &str = "/api/memory/flamegraph.svg";
/// The trend report.
pub const TREND: &str = "/api/memory/trend";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// Serves one of the paths above.
pub async fn route(path: &str, req: &Request<Incoming>, ctx: Context) -> Resp {
    match path {
        PROFILE => heap(req, ctx, Format::Pprof).await,
        FOLDED => heap(req, ctx, Format::Folded).await,
        FLAMEGRAPH => heap(req, ctx, Format::FlameGraph).await,
        TREND => trend(req, ctx).await,
        _ => metrics(ctx).await,
    }
}
