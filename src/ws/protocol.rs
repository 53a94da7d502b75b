//! The WebSocket envelopes (after ESPHome device-builder's, so its users feel at home):
//!
//! - request: `{"message_id": "<1–64 chars>", "command": "area/verb", "args": {…}}`
//! - success: `{"message_id": "…", "result": …}`
//! - error:   `{"message_id": "…", "error_code": "…", "details": "…"}`
//! - event:   `{"message_id": "…" | null, "event": "…", "data": …}`
//!
//! Unlike device-builder, an error echoes `message_id` whenever it could be read, even
//! when the rest of the frame is invalid; it is null only when it could not be read.

use serde_json::{Map, Value, json};

use crate::commands::CommandError;

/// Longest accepted `message_id`, in characters.
pub const MESSAGE_ID_MAX_CHARS: usize = 64;

/// A parsed, well-formed request.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub message_id: String,
    pub command: String,
    pub args: Value,
}

/// A request that could not be parsed: the error and whatever `message_id` was readable.
#[derive(Debug, PartialEq)]
pub struct BadRequest {
    pub message_id: Value,
    pub error: CommandError,
}

/// Parses one text frame into a request.
///
/// # Errors
/// A [`BadRequest`] carrying `invalid_message` and the readable `message_id`.
pub fn parse_request(text: &str) -> Result<Request, BadRequest> {
    let bad = |message_id: Value, why: &str| BadRequest {
        message_id,
        error: CommandError::InvalidMessage(why.into()),
    };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let why = if e.to_string().contains("recursion limit") {
            "the message is nested too deeply".to_string()
        } else {
            format!("not valid JSON: {e}")
        };
        bad(Value::Null, &why)
    })?;
    let Value::Object(mut obj) = value else {
        return Err(bad(Value::Null, "expected a JSON object"));
    };
    let raw_id = obj.remove("message_id");
    // Echo what the client sent when it is readable as an identifier.
    let echo = match &raw_id {
        Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
        _ => Value::Null,
    };
    let message_id = match raw_id {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MESSAGE_ID_MAX_CHARS => s,
        Some(Value::String(_)) => {
            return Err(bad(
                echo,
                "`message_id` must be a string of 1 to 64 characters",
            ));
        }
        None => return Err(bad(echo, "`message_id` is missing")),
        Some(_) => {
            return Err(bad(
                echo,
                "`message_id` must be a string of 1 to 64 characters",
            ));
        }
    };
    let command = match obj.remove("command") {
        Some(Value::String(s)) if !s.is_empty() => s,
        None => return Err(bad(echo, "`command` is missing")),
        Some(_) => return Err(bad(echo, "`command` must be a non-empty string")),
    };
    let args = match obj.remove("args") {
        None => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(bad(echo, "`args` must be an object")),
    };
    // Other envelope fields are ignored, so clients may add their own (a timestamp, a
    // trace id) without breaking.
    Ok(Request {
        message_id,
        command,
        args,
    })
}

/// A success reply.
pub fn result(message_id: &str, result: Value) -> String {
    json!({"message_id": message_id, "result": result}).to_string()
}

/// An error reply.
pub fn error(message_id: &Value, error: &CommandError) -> String {
    json!({"message_id": message_id, "error_code": error.code(), "details": error.details()})
        .to_string()
}

/// An event.
pub fn event(message_id: Option<&str>, event: &str, data: Value) -> String {
    json!({"message_id": message_id, "event": event, "data": data}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(text: &str) -> BadRequest {
        parse_request(text).expect_err(text)
    }

    #[test]
    fn good_request() {
        let r = parse_request(r#"{"message_id":"1","command":"ping"}"#).unwrap();
        assert_eq!(
            r,
            Request {
                message_id: "1".into(),
                command: "ping".into(),
                args: json!({})
            }
        );
    }

    #[test]
    fn bad_requests_echo_readable_ids() {
        assert_eq!(bad("nope").message_id, Value::Null);
        assert_eq!(bad("[1]").message_id, Value::Null);
        assert_eq!(bad(r#"{"command":"ping"}"#).message_id, Value::Null);
        assert_eq!(bad(r#"{"message_id":"a"}"#).message_id, json!("a"));
        assert_eq!(
            bad(r#"{"message_id":"a","command":5}"#).message_id,
            json!("a")
        );
        assert_eq!(
            bad(r#"{"message_id":"a","command":"ping","args":[]}"#).message_id,
            json!("a")
        );
        assert_eq!(
            bad(r#"{"message_id":7,"command":"ping"}"#).message_id,
            json!(7)
        );
        assert_eq!(
            bad(r#"{"message_id":"","command":"ping"}"#).message_id,
            json!("")
        );
        let long = "x".repeat(65);
        assert_eq!(
            bad(&format!(r#"{{"message_id":"{long}","command":"ping"}}"#)).message_id,
            json!(long)
        );
        assert!(parse_request(r#"{"message_id":"a","command":"ping","extra":1}"#).is_ok());
        for b in ["nope", r#"{"message_id":"a"}"#] {
            assert_eq!(bad(b).error.code(), "invalid_message");
        }
        let deep = "[".repeat(100_000);
        assert!(bad(&deep).error.details().contains("nested too deeply"));
    }
}
