//! The response side shared by the routes and the upgrade: the response type, JSON bodies
//! that are never cached, and the one mapping from error code to HTTP status.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::commands::CommandError;

/// The response type of every route.
pub type Resp = Response<Full<Bytes>>;

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

/// A JSON response that is never cached.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec(body).expect("a response body always serializes");
    json_bytes_response(status, Bytes::from(body))
}

/// A constant JSON response (its body is not copied).
pub fn constant_json_response(status: StatusCode, body: &'static str) -> Resp {
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

#[cfg(test)]
mod tests {
    use super::*;

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
