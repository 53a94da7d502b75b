//! The WebSocket envelopes (after ESPHome device-builder's, so its users feel at home):
//!
//! - request: `{"message_id": "<1–64 chars>", "command": "area/verb", "args": {…}}`
//! - success: `{"message_id": "…", "result": …}`
//! - error:   `{"message_id": "…", "error_code": "…", "details": "…"}`
//! - event:   `{"message_id": "…" | null, "event": "…", "data": …}`
//!
//! Unlike device-builder, an error echoes `message_id` whenever it could be read, even
//! when the rest of the frame is invalid; it is null only when it could not be read.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::commands::{CommandError, Reply};

/// Longest accepted `message_id`, in characters.
pub const MESSAGE_ID_MAX_CHARS: usize = 64;

/// A parsed, well-formed request. `command` borrows from the frame when it can.
#[derive(Debug, PartialEq)]
pub struct Request<'a> {
    pub message_id: Arc<str>,
    pub command: Cow<'a, str>,
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
/// The frame is read in one pass into just the three envelope fields, so a request costs
/// one allocation (its `message_id`) plus whatever its `args` hold, not a whole tree. It
/// accepts and refuses exactly what parsing the frame into a `Value` and then looking the
/// fields up did: the same JSON errors at the same places (the same nesting limit), the
/// last of repeated keys wins, other fields are read and ignored.
///
/// # Errors
/// A [`BadRequest`] carrying `invalid_message` and the readable `message_id`.
pub fn parse_request(text: &str) -> Result<Request<'_>, BadRequest> {
    let bad = |message_id: Value, why: &str| BadRequest {
        message_id,
        error: CommandError::InvalidMessage(why.into()),
    };
    let frame: Frame<'_> = serde_json::from_str(text).map_err(|e| {
        let why = if e.to_string().contains("recursion limit") {
            "the message is nested too deeply".to_string()
        } else {
            format!("not valid JSON: {e}")
        };
        bad(Value::Null, &why)
    })?;
    let Frame::Object(envelope) = frame else {
        return Err(bad(Value::Null, "expected a JSON object"));
    };
    let Envelope {
        message_id: raw_id,
        command,
        args,
    } = envelope;
    // Echo what the client sent when it is readable as an identifier.
    let echo = || match &raw_id {
        Some(Field::Str(s)) => Value::String(s.to_string()),
        Some(Field::Other(v @ Value::Number(_))) => v.clone(),
        _ => Value::Null,
    };
    let message_id: Arc<str> = match &raw_id {
        Some(Field::Str(s)) if !s.is_empty() && s.chars().count() <= MESSAGE_ID_MAX_CHARS => {
            Arc::from(&**s)
        }
        None => return Err(bad(echo(), "`message_id` is missing")),
        Some(_) => {
            return Err(bad(
                echo(),
                "`message_id` must be a string of 1 to 64 characters",
            ));
        }
    };
    let command = match command {
        Some(Field::Str(s)) if !s.is_empty() => s,
        None => return Err(bad(echo(), "`command` is missing")),
        Some(_) => return Err(bad(echo(), "`command` must be a non-empty string")),
    };
    let args = match args {
        None => Value::Object(Map::new()),
        Some(Field::Other(v @ Value::Object(_))) => v,
        Some(_) => return Err(bad(echo(), "`args` must be an object")),
    };
    // Other envelope fields are ignored, so clients may add their own (a timestamp, a
    // trace id) without breaking.
    Ok(Request {
        message_id,
        command,
        args,
    })
}

/// A whole frame: an object's envelope fields, or anything else (read to its end, so JSON
/// errors anywhere in it are found as a `Value` parse would find them).
enum Frame<'a> {
    Object(Envelope<'a>),
    NotAnObject,
}

/// The envelope fields of an object frame; `None` when absent.
#[derive(Default)]
struct Envelope<'a> {
    message_id: Option<Field<'a>>,
    command: Option<Field<'a>>,
    args: Option<Field<'a>>,
}

/// One envelope field's value: a string (borrowed from the frame unless it has escapes),
/// or any other JSON value as a tree.
enum Field<'a> {
    Str(Cow<'a, str>),
    Other(Value),
}

impl<'de> Deserialize<'de> for Frame<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Frame<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut envelope = Envelope::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let slot = match &*key.0 {
                "message_id" => &mut envelope.message_id,
                "command" => &mut envelope.command,
                "args" => &mut envelope.args,
                _ => {
                    // Read (and check) the value like any other, then forget it.
                    map.next_value::<Value>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Field<'de>>()?);
        }
        Ok(Frame::Object(envelope))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Frame::NotAnObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Frame::NotAnObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Frame::NotAnObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Frame::NotAnObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Frame::NotAnObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Frame::NotAnObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Frame::NotAnObject)
    }
}

/// An object key, borrowed from the frame unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor).map(Key)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

/// Builds a [`Field`]: strings as they are, everything else as `Value`'s own visitor
/// builds it.
struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(s)))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Bool(b)))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Number(n.into())))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Number(n.into())))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Field::Other(
            Number::from_f64(n).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Other(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Field::Other(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            object.insert(key, value);
        }
        Ok(Field::Other(Value::Object(object)))
    }
}

/// Writes envelopes into a buffer kept from one message to the next, so a reply costs one
/// allocation — the message handed to the socket, at its exact size — instead of one per
/// key, value and growth step. One per session.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

/// A buffer that grew past this for one message (a large snapshot) is freed after it, so
/// an idle socket does not keep the memory of its largest reply.
const WRITER_KEEP_BYTES: usize = 16 * 1024;

impl Writer {
    /// A success reply: `{"message_id": …, "result": …}`.
    pub fn result(&mut self, message_id: &str, result: &Reply) -> String {
        // Written by hand because `result` may be constant text; the keys are in the
        // order a `Value` map writes them.
        self.buf.extend_from_slice(br#"{"message_id":"#);
        serde_json::to_writer(&mut self.buf, message_id).expect("a string always serializes");
        self.buf.extend_from_slice(br#","result":"#);
        result.write_json(&mut self.buf);
        self.buf.push(b'}');
        self.take()
    }

    /// An error reply: `{"details": …, "error_code": …, "message_id": …}`.
    pub fn error(&mut self, message_id: &Value, error: &CommandError) -> String {
        let envelope = ErrorEnvelope {
            details: &error.details(),
            error_code: error.code(),
            message_id,
        };
        serde_json::to_writer(&mut self.buf, &envelope).expect("an envelope always serializes");
        self.take()
    }

    /// An event: `{"data": …, "event": …, "message_id": …}`.
    pub fn event(
        &mut self,
        message_id: Option<&str>,
        event: &str,
        data: &impl serde::Serialize,
    ) -> String {
        let envelope = EventEnvelope {
            data,
            event,
            message_id,
        };
        serde_json::to_writer(&mut self.buf, &envelope).expect("an envelope always serializes");
        self.take()
    }

    /// The message written, as an exactly sized `String`; the buffer is emptied for the next.
    fn take(&mut self) -> String {
        let text = std::str::from_utf8(&self.buf)
            .expect("serde_json writes UTF-8")
            .to_owned();
        self.buf.clear();
        if self.buf.capacity() > WRITER_KEEP_BYTES {
            self.buf = Vec::new();
        }
        text
    }
}

/// Keys in alphabetical order, as a `Value` map writes them.
#[derive(serde::Serialize)]
struct ErrorEnvelope<'a> {
    details: &'a str,
    error_code: &'a str,
    message_id: &'a Value,
}

/// Keys in alphabetical order, as a `Value` map writes them.
#[derive(serde::Serialize)]
struct EventEnvelope<'a, T> {
    data: &'a T,
    event: &'a str,
    message_id: Option<&'a str>,
}

/// A success reply.
pub fn result(message_id: &str, result: &Reply) -> String {
    Writer::default().result(message_id, result)
}

/// An error reply.
pub fn error(message_id: &Value, error: &CommandError) -> String {
    Writer::default().error(message_id, error)
}

/// An event.
pub fn event(message_id: Option<&str>, event: &str, data: &impl serde::Serialize) -> String {
    Writer::default().event(message_id, event, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

/// The one-pass parser and the envelope writer against the way this module worked before
/// them — parse into a `Value`, look the fields up; build replies with `json!` — which is
/// the behaviour clients know. Any difference, in what is accepted, in an error's words or
/// in a reply's bytes, is a bug.
#[cfg(test)]
mod same_as_tree {
    use super::*;
    use serde_json::json;

    /// The previous `parse_request`, verbatim but for the types it returns.
    fn parse_via_tree(text: &str) -> Result<(String, String, Value), BadRequest> {
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
        let echo = match &raw_id {
            Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
            _ => Value::Null,
        };
        let message_id = match raw_id {
            Some(Value::String(s))
                if !s.is_empty() && s.chars().count() <= MESSAGE_ID_MAX_CHARS =>
            {
                s
            }
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
        Ok((message_id, command, args))
    }

    fn frames() -> Vec<String> {
        let mut frames: Vec<String> = [
            r#"{"message_id":"1","command":"ping"}"#,
            r#"{"message_id":"1","command":"ping","args":{}}"#,
            r#" { "args" : { "top_n" : 5 , "x" : [1, 2.5, -3, null, true, {"a": "b"}] } , "command" : "debug/memory_snapshot" , "message_id" : "é\u00e9" } "#,
            r#"{"message_id":"a","message_id":"b","command":"ping"}"#,
            r#"{"message_id":"a","message_id":7,"command":"ping"}"#,
            r#"{"message_id":7,"message_id":"a","command":"ping"}"#,
            r#"{"message_id":"a","command":"ping","command":""}"#,
            r#"{"message_id":"a","command":"ping","args":{"a":1},"args":{}}"#,
            r#"{"message_id":"a","command":"ping","args":{"k":1,"k":2}}"#,
            r#"{"message\u005fid":"esc","comm\u0061nd":"p\u0069ng"}"#,
            r#"{"message_id":"\ud83d\ude00\n\"\\","command":"ping"}"#,
            r#"{"message_id":"\ud800","command":"ping"}"#,
            r#"{"message_id":"a","command":"ping","extra":1}"#,
            r#"{"message_id":"a","command":"ping","extra":{"deep":[[[]]]}}"#,
            r#"{"message_id":1.5,"command":"ping"}"#,
            r#"{"message_id":-0,"command":"ping"}"#,
            r#"{"message_id":1e400,"command":"ping"}"#,
            r#"{"message_id":18446744073709551616,"command":"ping"}"#,
            r#"{"message_id":null,"command":"ping"}"#,
            r#"{"message_id":true,"command":"ping"}"#,
            r#"{"message_id":["a"],"command":"ping"}"#,
            r#"{"message_id":{"a":1},"command":"ping"}"#,
            r#"{"message_id":"","command":"ping"}"#,
            r#"{"message_id":"a"}"#,
            r#"{"message_id":"a","command":null}"#,
            r#"{"message_id":"a","command":5}"#,
            r#"{"message_id":"a","command":""}"#,
            r#"{"message_id":"a","command":"nope"}"#,
            r#"{"message_id":"a","command":"ping","args":[]}"#,
            r#"{"message_id":"a","command":"ping","args":null}"#,
            r#"{"message_id":"a","command":"ping","args":"{}"}"#,
            r#"{"message_id":"a","command":"ping","args":{"$serde_json::private::RawValue":"1"}}"#,
            r#"{"command":"ping"}"#,
            r#"{}"#,
            r#"[]"#,
            r#"[1, {"message_id": "a"}]"#,
            r#""text""#,
            "5",
            "-5",
            "2.5",
            "true",
            "null",
            "",
            " ",
            "nope",
            "{",
            r#"{"message_id":"a""#,
            r#"{"message_id":"a",}"#,
            r#"{"message_id":"a","command":"ping"} x"#,
            r#"{"message_id":"a","command":"ping"}{}"#,
            r#"[1,"#,
            r#"{"message_id":"a","command":"ping","args":{"x":[1,}}"#,
            r#"{"message_id":"a","command":"ping","args":{"x":"\q"}}"#,
            r#"{"message_id":"a" "command":"ping"}"#,
            r#"{1:2}"#,
            "{\"message_id\":\"a\u{2028}b\",\"command\":\"ping\"}",
            "{\"message_id\":\"tab\tinside\",\"command\":\"ping\"}",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        frames.push(format!(
            r#"{{"message_id":"{}","command":"ping"}}"#,
            "x".repeat(64)
        ));
        frames.push(format!(
            r#"{{"message_id":"{}","command":"ping"}}"#,
            "x".repeat(65)
        ));
        frames.push(format!(
            r#"{{"message_id":"{}","command":"ping"}}"#,
            "é".repeat(64)
        ));
        // Nesting around the limit (128), in every position.
        for depth in [126, 127, 128, 129, 100_000] {
            let open = "[".repeat(depth);
            let close = "]".repeat(depth);
            frames.push(format!("{open}{close}"));
            frames.push(open.clone());
            frames.push(format!(
                r#"{{"message_id":"d","command":"ping","extra":{open}{close}}}"#
            ));
            frames.push(format!(
                r#"{{"message_id":"d","command":"ping","args":{{"a":{open}{close}}}}}"#
            ));
            frames.push(format!(
                r#"{{"message_id":{open}{close},"command":"ping"}}"#
            ));
            frames.push(format!(
                r#"{{"message_id":"d","command":"ping","args":{}1{}}}"#,
                r#"{"a":"#.repeat(depth),
                "}".repeat(depth)
            ));
        }
        // The fuzz targets' regression inputs (the first byte picked the listener).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions/ws_request");
        for entry in std::fs::read_dir(dir).expect("the regression inputs exist") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Some((_, rest)) = bytes.split_first()
                && let Ok(text) = std::str::from_utf8(rest)
            {
                frames.push(text.to_string());
            }
        }
        frames
    }

    #[test]
    fn parsing_accepts_and_refuses_exactly_as_before() {
        for frame in frames() {
            let new = parse_request(&frame)
                .map(|r| (r.message_id.to_string(), r.command.into_owned(), r.args));
            assert_eq!(new, parse_via_tree(&frame), "frame {frame:?}");
        }
    }

    #[test]
    fn every_cut_of_a_frame_fails_as_before() {
        for frame in frames().iter().filter(|f| f.len() < 300) {
            for (cut, _) in frame.char_indices() {
                let text = &frame[..cut];
                let new = parse_request(text)
                    .map(|r| (r.message_id.to_string(), r.command.into_owned(), r.args));
                assert_eq!(new, parse_via_tree(text), "frame {text:?}");
            }
        }
    }

    #[test]
    fn replies_are_the_same_bytes_as_before() {
        let mut writer = Writer::default();
        let ids = ["1", "a b", "é\"\\\n\u{1}\u{2028}😀", &"x".repeat(64)];
        let results = [
            Reply::Constant(r#"{"pong":true}"#),
            Reply::Json(json!({"b": [1, 2.5, null], "a": {"z": "y", "c": true}})),
            Reply::typed(json!({"k": "v"})),
        ];
        for id in ids {
            for result in &results {
                let before = json!({"message_id": id, "result": result.to_value()}).to_string();
                assert_eq!(writer.result(id, result), before);
                assert_eq!(self::result(id, result), before);
            }
            let e = CommandError::InvalidArgs(format!("argument `{id}`: no"));
            for message_id in [json!(id), json!(7), Value::Null] {
                let before = json!({
                    "message_id": message_id,
                    "error_code": e.code(),
                    "details": e.details(),
                })
                .to_string();
                assert_eq!(writer.error(&message_id, &e), before);
                assert_eq!(self::error(&message_id, &e), before);
            }
            let data = json!({"sample": 1, "allocator": {"x": 1}});
            for message_id in [Some(id), None] {
                let before =
                    json!({"message_id": message_id, "event": "memory_stats", "data": data})
                        .to_string();
                assert_eq!(writer.event(message_id, "memory_stats", &data), before);
                assert_eq!(self::event(message_id, "memory_stats", &data), before);
            }
        }
    }

    #[test]
    fn a_large_reply_does_not_keep_its_buffer() {
        let mut writer = Writer::default();
        let big = Reply::Json(json!("x".repeat(WRITER_KEEP_BYTES * 2)));
        assert!(writer.result("1", &big).len() > WRITER_KEEP_BYTES * 2);
        assert_eq!(writer.buf.capacity(), 0);
        writer.result("1", &Reply::Constant("1"));
        assert!(writer.buf.capacity() > 0, "a small reply's buffer is kept");
    }
}
