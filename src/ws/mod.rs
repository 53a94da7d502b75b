//! The WebSocket protocol ([`protocol`]: envelopes and error replies) and sessions
//! ([`session`]: the per-socket loop). The HTTP layer validates the upgrade and hands a
//! ready stream to [`session::run`].

pub mod protocol;
pub mod session;
