//! `auth`: in-band authentication for WebSocket clients on the direct listener (browsers
//! cannot set an Authorization header on `new WebSocket`).

use std::sync::atomic::Ordering;

use serde_json::json;

use super::{Command, CommandError, Context, ListenerKind, parse_args};
use crate::http::auth::Verdict;

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

fn run(ctx: Context, args: serde_json::Value) -> Result<serde_json::Value, CommandError> {
    let AuthArgs { token } = parse_args(args)?;
    if ctx.session.listener == ListenerKind::Ingress {
        // Home Assistant already authenticated ingress users.
        return Ok(json!({"authenticated": true}));
    }
    match ctx.shared.auth.check(ctx.session.peer, Some(&token)) {
        Verdict::Allowed => {
            ctx.session.authenticated.store(true, Ordering::Release);
            Ok(json!({"authenticated": true}))
        }
        Verdict::Denied => Err(CommandError::NotAuthenticated("wrong token".into())),
        Verdict::RateLimited { retry_after_s } => Err(CommandError::RateLimited(format!(
            "too many failed attempts from this address; try again in {retry_after_s} s"
        ))),
    }
}
