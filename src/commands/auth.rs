//! `auth`: in-band authentication for WebSocket clients on the direct listener (browsers
//! cannot set an Authorization header on `new WebSocket`).

use std::sync::atomic::Ordering;

use serde_json::json;

use super::{Args, Command, CommandError, Context, ListenerKind};
use crate::gate::Decision;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthArgs {
    token: String,
}

/// `auth` with `{"token": "…"}` → `{"authenticated": true}`.
pub const AUTH: Command = Command {
    name: "auth",
    summary: "Authenticates this WebSocket on the direct listener with the API token.",
    run: |ctx, args| Box::pin(async move { run(ctx, args).map(Into::into) }),
};

fn run(ctx: Context, args: Args) -> Result<serde_json::Value, CommandError> {
    let AuthArgs { token } = args.parse()?;
    if ctx.caller.listener == ListenerKind::Ingress {
        // Home Assistant already authenticated ingress users.
        return Ok(json!({"authenticated": true}));
    }
    match ctx.services.gate.check(ctx.caller.peer, Some(&token)) {
        Decision::Allowed => {
            ctx.caller.authenticated.store(true, Ordering::Release);
            Ok(json!({"authenticated": true}))
        }
        Decision::Denied => Err(CommandError::NotAuthenticated("wrong token".into())),
        Decision::RateLimited { retry_after_s } => Err(CommandError::RateLimited(format!(
            "too many failed attempts from this address; try again in {retry_after_s} s"
        ))),
    }
}
