//! `ping` and `system/info`: liveness and what this server is.
//!
//! Both are on the add-on's busiest path (clients poll them), so their results are
//! written straight into the reply ([`Reply::Constant`], [`Reply::typed`]) rather than
//! built as a `Value` tree first: as a tree, `system/info` cost some 300 allocations.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::debug::{TrackingJson, tracking};
use super::stream::HubStatus;
use super::{
    Caller, Command, Context, ListenerKind, NoArgs, REGISTRY, Reply, SERVER_VERSION, Services, User,
};

/// `ping`'s answer, compact, as `json!({"pong": true})` writes it.
const PONG: &str = r#"{"pong":true}"#;

/// `ping` → `{"pong": true}`.
pub const PING: Command = Command {
    name: "ping",
    summary: "Checks that the server answers.",
    run: |_ctx, args| {
        Box::pin(async move {
            let NoArgs {} = args.parse()?;
            Ok(Reply::Constant(PONG))
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
            let NoArgs {} = args.parse()?;
            Ok(Reply::typed(info(ctx)))
        })
    },
};

/// The `system/info` result: the figures of the moment the command ran, plus the parts that
/// never change, read from the shared state when the reply is written.
struct Info {
    services: Arc<Services>,
    caller: Arc<Caller>,
    streams: HubStatus,
    tracking: TrackingJson,
    uptime_s: u64,
}

/// [`Info`] as written. Fields are in alphabetical order, the order a `Value` map writes
/// them in, so the text is the same as when this result was built as a tree.
#[derive(Serialize)]
struct InfoJson<'a> {
    commands: Commands,
    ha_addon: bool,
    listener: ListenerKind,
    listeners: Listeners,
    server_version: &'static str,
    settings: &'a Value,
    streams: HubStatus,
    tracking: &'a TrackingJson,
    uptime_s: u64,
    user: &'a Option<User>,
}

impl Serialize for Info {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        InfoJson {
            commands: Commands,
            ha_addon: self.services.server.ha_addon,
            listener: self.caller.listener,
            listeners: Listeners {
                direct: self.services.server.listeners.direct,
                ingress: self.services.server.listeners.ingress,
            },
            server_version: SERVER_VERSION,
            settings: &self.services.server.settings_json,
            streams: self.streams,
            tracking: &self.tracking,
            uptime_s: self.uptime_s,
            user: &self.caller.user,
        }
        .serialize(serializer)
    }
}

/// Where the listeners are bound, written as text.
#[derive(Serialize)]
struct Listeners {
    #[serde(serialize_with = "display_opt")]
    direct: Option<SocketAddr>,
    #[serde(serialize_with = "display")]
    ingress: SocketAddr,
}

/// [`REGISTRY`] as `[{"name": …, "summary": …}, …]`.
struct Commands;

#[derive(Serialize)]
struct CommandJson {
    name: &'static str,
    summary: &'static str,
}

impl Serialize for Commands {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(REGISTRY.iter().map(|c| CommandJson {
            name: c.name,
            summary: c.summary,
        }))
    }
}

/// Writes a value's `Display` text as a JSON string: what `to_string()` then serializing
/// the `String` writes, without the `String`.
fn display<T: Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// [`display`] for an optional value (`None` is `null`).
fn display_opt<T: Display, S: Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.collect_str(v),
        None => serializer.serialize_none(),
    }
}

fn info(ctx: Context) -> Info {
    Info {
        streams: ctx.services.stream.status(),
        tracking: tracking(),
        uptime_s: ctx.services.server.started_at.elapsed().as_secs(),
        services: ctx.services,
        caller: ctx.caller,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::commands::BoundListeners;
    use crate::limits::Limits;
    use crate::memory::{self, Mode};
    use crate::settings::{Secret, Settings};

    /// `system/info` as it was built before it was typed: a tree, from the same figures.
    fn info_as_tree(info: &Info, settings: &Settings) -> Value {
        let server = &info.services.server;
        let s = memory::status();
        let tracking = json!({
            "enabled": s.enabled,
            "mode": match s.mode { Mode::Sampled => "sampled", Mode::Exact => "exact" },
            "sample_interval_bytes": s.sample_interval_bytes,
            "frames": s.frames,
            "seed": s.seed,
            "since": s.since.map(crate::commands::debug::rfc3339),
            "estimated": s.enabled && s.mode == Mode::Sampled,
        });
        let commands: Vec<Value> = REGISTRY
            .iter()
            .map(|c| json!({"name": c.name, "summary": c.summary}))
            .collect();
        json!({
            "server_version": SERVER_VERSION,
            "uptime_s": info.uptime_s,
            "ha_addon": server.ha_addon,
            "listener": info.caller.listener,
            "user": info.caller.user,
            "listeners": {
                "ingress": server.listeners.ingress.to_string(),
                "direct": server.listeners.direct.map(|a| a.to_string()),
            },
            "settings": settings.redacted_json(),
            "tracking": tracking,
            "streams": info.services.stream.status(),
            "commands": commands,
        })
    }

    #[test]
    fn ping_answers_what_json_wrote() {
        assert_eq!(PONG, json!({"pong": true}).to_string());
    }

    #[test]
    fn info_is_the_same_text_as_the_tree_was() {
        let users = [
            None,
            Some(User::default()),
            Some(User {
                display_name: Some("Ada \"L\" ☃".into()),
                id: Some("8f1e".into()),
                name: Some("ada".into()),
            }),
            Some(User {
                display_name: None,
                id: Some("8f1e".into()),
                name: None,
            }),
        ];
        for (direct, token) in [
            (None, None),
            (Some("[::1]:8100"), Some("a-token-for-tests-0123456789")),
        ] {
            let (mut settings, _) =
                Settings::load_from(Path::new("/nonexistent/options.json"), std::iter::empty())
                    .expect("defaults load");
            settings.api_token = token.map(Secret::new);
            let bound = BoundListeners {
                ingress: "0.0.0.0:8099".parse().unwrap(),
                direct: direct.map(|d| d.parse().unwrap()),
            };
            let services = Arc::new(Services::new(&settings, &Limits::default(), bound));
            for user in &users {
                for kind in [ListenerKind::Ingress, ListenerKind::Direct] {
                    let ctx = Context {
                        services: services.clone(),
                        caller: Caller::new(kind, "127.0.0.1".parse().unwrap(), user.clone(), true),
                        message_id: None,
                    };
                    let info = info(ctx);
                    let before = info_as_tree(&info, &settings).to_string();
                    let mut text = Vec::new();
                    Reply::typed(info).write_json(&mut text);
                    assert_eq!(String::from_utf8(text).unwrap(), before);
                }
            }
        }
    }
}
