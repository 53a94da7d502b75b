//! The ingress panel: `web/index.html` and its assets, embedded into the binary at build
//! time (the page fetches nothing from anywhere else).
//!
//! Every URL in the page is relative. Behind ingress the page lives at
//! `/api/hassio_ingress/<token>/`; the index carries a `<base href>` built from the
//! trusted proxy's `X-Ingress-Path`, so relative URLs resolve under the prefix even if the
//! browser's address lacks the trailing slash. Without that header (direct use at `/`)
//! the base is the page itself.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};

use super::response::Resp;

/// Allows only this origin's own resources (scripts, styles, images, the WebSocket) and no
/// inline script or style; it does not forbid framing, because Home Assistant shows the
/// panel in an iframe. `base-uri 'self'` lets the index name its ingress base.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'none'";

/// The page; `<!--BASE-->` is replaced by the `<base>` element.
const INDEX: &str = include_str!("../../web/index.html");
/// Where the `<base>` element goes.
const BASE_MARKER: &str = "<!--BASE-->";
/// Longest `X-Ingress-Path` accepted (Home Assistant's are about 60 characters).
const INGRESS_PATH_MAX: usize = 256;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The request path, under `/assets/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The panel's script.
pub const APP_JS: Asset = Asset {
    path: "/assets/app.js",
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("../../web/app.js"),
};

/// The panel's style sheet.
pub const STYLE_CSS: Asset = Asset {
    path: "/assets/style.css",
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("../../web/style.css"),
};

/// The panel's icon.
pub const ICON_SVG: Asset = Asset {
    path: "/assets/icon.svg",
    content_type: "image/svg+xml",
    body: include_bytes!("../../web/icon.svg"),
};

/// Every file the page loads (each has a route in `router::ROUTES`).
pub const ASSETS: &[Asset] = &[APP_JS, STYLE_CSS, ICON_SVG];

/// `GET /assets/…`.
pub fn serve(asset: &'static Asset) -> Resp {
    respond(Bytes::from_static(asset.body), asset.content_type)
}

/// `GET /`. `from_ingress`: the request came from the trusted ingress proxy, so its
/// `X-Ingress-Path` is believed.
pub fn index(req: &Request<Incoming>, from_ingress: bool) -> Resp {
    let prefix = from_ingress
        .then(|| req.headers().get("x-ingress-path"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(ingress_prefix);
    let base = match prefix {
        Some(p) => format!(r#"<base href="{p}/">"#),
        None => String::new(),
    };
    let page = INDEX.replacen(BASE_MARKER, &base, 1);
    respond(Bytes::from(page), "text/html; charset=utf-8")
}

/// A usable ingress prefix: an absolute path of plain characters (letters, digits, `/`,
/// `_`, `-`, `.`, `~`) without empty, `.` or `..` segments, trailing slash removed. Anything
/// else is ignored rather than written into the page.
pub fn ingress_prefix(raw: &str) -> Option<String> {
    let p = raw.trim().trim_end_matches('/');
    let plain = |c: char| c.is_ascii_alphanumeric() || "/_-.~".contains(c);
    let segments_ok = p
        .split('/')
        .skip(1)
        .all(|s| !s.is_empty() && s != "." && s != "..");
    (p.starts_with('/') && p.len() <= INGRESS_PATH_MAX && p.chars().all(plain) && segments_ok)
        .then(|| p.to_string())
}

fn respond(body: Bytes, content_type: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // Revalidate every time: an add-on update must show its new panel at once, and the
    // files are small.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_prefixes() {
        assert_eq!(
            ingress_prefix("/api/hassio_ingress/abcDEF-123_x").as_deref(),
            Some("/api/hassio_ingress/abcDEF-123_x")
        );
        assert_eq!(
            ingress_prefix("/api/hassio_ingress/tok/").as_deref(),
            Some("/api/hassio_ingress/tok")
        );
        for bad in [
            "",
            "/",
            "api/x",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/a\"><script>",
            "/a b",
            "//evil.example/x",
            "javascript:alert(1)",
        ] {
            assert_eq!(ingress_prefix(bad), None, "{bad:?}");
        }
        assert_eq!(ingress_prefix(&format!("/{}", "a".repeat(300))), None);
    }

    #[test]
    fn index_has_one_base_marker_and_no_inline_script_or_style() {
        assert_eq!(INDEX.matches(BASE_MARKER).count(), 1);
        let lower = INDEX.to_ascii_lowercase();
        for tag in lower.split("<script").skip(1) {
            let head = &tag[..tag.find('>').expect("tag closes")];
            assert!(head.contains("src="), "inline script: <script{head}>");
        }
        assert!(!lower.contains("<style"), "inline style block");
        assert!(!lower.contains(" style="), "inline style attribute");
        assert!(!lower.contains(" onclick="), "inline handler");
        for a in ASSETS {
            let rel = a.path.trim_start_matches('/');
            if a.content_type.starts_with("text/javascript")
                || a.content_type.starts_with("text/css")
            {
                assert!(
                    INDEX.contains(&format!("\"{rel}\"")),
                    "{rel} is linked relatively"
                );
            }
        }
    }

    #[test]
    fn assets_use_only_relative_urls() {
        let index = Asset {
            path: "/",
            content_type: "text/html",
            body: INDEX.as_bytes(),
        };
        for a in ASSETS.iter().chain([&index]) {
            // The SVG namespace is a name, not something the page fetches.
            let text = std::str::from_utf8(a.body)
                .expect("assets are UTF-8")
                .replace("http://www.w3.org/2000/svg", "");
            for needle in [
                "http://",
                "https://",
                "ws://",
                "wss://",
                "\"//",
                "'//",
                "`//",
                "href=\"/",
                "src=\"/",
                "url(",
                "@import",
                "fetch(",
                "XMLHttpRequest",
                "eval(",
            ] {
                let hits: Vec<_> = text
                    .lines()
                    .filter(|l| l.contains(needle))
                    // Comments in JS and CSS may say anything.
                    .filter(|l| {
                        !l.trim_start().starts_with("//") && !l.trim_start().starts_with("/*")
                    })
                    .collect();
                assert!(hits.is_empty(), "{} contains {needle}: {hits:?}", a.path);
            }
        }
    }
}
