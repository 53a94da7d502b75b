//! A WebSocket text frame through envelope parsing and command dispatch, as a session
//! would run it, on an authenticated ingress session and an unauthenticated direct one.
#![no_main]

#[path = "common.rs"]
mod common;

use heapwatch::commands::{self, Args, Caller, Context, ListenerKind, Started};
use heapwatch::ws::protocol;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let req = match protocol::parse_request(text) {
        Ok(r) => r,
        Err(bad) => {
            assert!(matches!(
                bad.message_id,
                Value::Null | Value::String(_) | Value::Number(_)
            ));
            assert_eq!(bad.error.code(), "invalid_message");
            assert!(!bad.error.details().is_empty());
            let reply: Value =
                serde_json::from_str(&protocol::error(&bad.message_id, &bad.error)).unwrap();
            assert_eq!(reply["error_code"], "invalid_message");
            return;
        }
    };
    assert!(
        !req.message_id.is_empty()
            && req.message_id.chars().count() <= protocol::MESSAGE_ID_MAX_CHARS
    );
    assert!(req.args.is_object());
    let server = common::server();
    let ingress = selector & 1 == 0;
    let kind = if ingress {
        ListenerKind::Ingress
    } else {
        ListenerKind::Direct
    };
    let caller = Caller::new(kind, "127.0.0.1".parse().unwrap(), None, ingress);
    let ctx = Context {
        services: server.services.clone(),
        caller,
        message_id: Some(req.message_id.clone()),
    };
    // The session's own path: start where the request was read (inside the runtime, as a
    // session is), finish what waits.
    let _in_runtime = common::runtime().enter();
    let outcome = match commands::start_named(ctx, &req.command, Args::Json(req.args)) {
        Started::Done(outcome) => outcome,
        Started::Pending(pending) => common::runtime().block_on(pending.finish()),
    };
    match outcome {
        Ok(v) => {
            serde_json::to_string(&v).unwrap();
        }
        Err(e) => {
            assert_ne!(e.code(), "internal_error", "{e:?} for {text}");
            assert!(!e.details().is_empty());
            if !ingress && req.command != "auth" {
                assert!(
                    matches!(e.code(), "not_authenticated" | "unknown_command"),
                    "{e:?}"
                );
            }
        }
    }
});
