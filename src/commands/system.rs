//! `ping` and `system/info`: liveness and what this server is.

use serde_json::{Value, json};

use super::{Command, Context, NoArgs, REGISTRY, SERVER_VERSION, parse_args};
use crate::commands::debug::tracking_json;

/// `ping` → `{"pong": true}`.
pub const PING: Command = Command {
    name: "ping",
    summary: "Checks that the server answers.",
    run: |_ctx, args| {
        Box::pin(async move {
            let NoArgs {} = parse_args(args)?;
            Ok(json!({"pong": true}))
        })
    },
};

/// `system/info` → version, uptime, user, listeners, settings (redacted), tracking state,
/// and the registered commands.
pub const INFO: Command = Command {
    name: "system/info",
    summary: "Describes the server: version, uptime, user, listeners, settings, tracking state and commands.",
    run: |ctx, args| {
        Box::pin(async move {
            let NoArgs {} = parse_args(args)?;
            Ok(info(&ctx))
        })
    },
};

fn info(ctx: &Context) -> Value {
    let shared = &ctx.shared;
    let commands: Vec<Value> = REGISTRY
        .iter()
        .map(|c| json!({"name": c.name, "summary": c.summary}))
        .collect();
    json!({
        "server_version": SERVER_VERSION,
        "uptime_s": shared.started_at.elapsed().as_secs(),
        "ha_addon": shared.ha_addon,
        "listener": ctx.session.listener,
        "user": ctx.session.user,
        "listeners": {
            "ingress": shared.listeners.ingress.to_string(),
            "direct": shared.listeners.direct.map(|a| a.to_string()),
        },
        "settings": shared.settings.redacted_json(),
        "tracking": tracking_json(),
        "streams": shared.memory_stream.status(),
        "commands": commands,
    })
}
