//! The authentication gate: the direct listener's bearer token, compared in constant
//! time, and a per-address brute-force limit. Both transports ask it (HTTP for the
//! `Authorization` header, the `auth` command for a WebSocket's in-band token); it knows
//! nothing of either.
//!
//! More than [`MAX_FAILURES`] failures from one IP address within [`WINDOW`] block that
//! address for [`BLOCK`]: every request from it then gets 429 / `rate_limited`, even with
//! the right token, until the block ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::settings::Secret;

/// Failures allowed per address and window (the figure).
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long an address stays blocked.
pub const BLOCK: Duration = Duration::from_secs(5 * 60);
/// Addresses remembered at most; a scan from many addresses cannot grow the map past this
/// (the oldest entries are dropped first).
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// What a credential check decided. (Not `Verdict`: that is the trend's word.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
    RateLimited { retry_after_s: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

/// Token check plus failure bookkeeping.
pub struct AuthGate {
    token: Option<Secret>,
    window: Duration,
    block: Duration,
    /// std mutex: held for a map lookup only, never across `.await`.
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl AuthGate {
    /// A gate for `token` (`None`: the direct listener is off, every check is denied).
    pub fn new(token: Option<Secret>) -> Self {
        Self::with_timing(token, WINDOW, BLOCK)
    }

    /// A gate with shorter windows, for tests.
    pub fn with_timing(token: Option<Secret>, window: Duration, block: Duration) -> Self {
        Self {
            token,
            window,
            block,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `peer` is blocked now.
    pub fn blocked(&self, peer: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let map = self.failures.lock().expect("auth map poisoned");
        map.get(&peer)
            .and_then(|f| f.blocked_until)
            .filter(|until| *until > now)
            .map(|until| (until - now).as_secs().max(1))
    }

    /// Checks `presented` from `peer`; a failure counts towards the limit.
    pub fn check(&self, peer: IpAddr, presented: Option<&str>) -> Decision {
        if let Some(retry_after_s) = self.blocked(peer) {
            return Decision::RateLimited { retry_after_s };
        }
        let ok = match (&self.token, presented) {
            (Some(t), Some(p)) => bool::from(t.expose().as_bytes().ct_eq(p.as_bytes())),
            _ => false,
        };
        if ok {
            return Decision::Allowed;
        }
        self.record_failure(peer)
    }

    fn record_failure(&self, peer: IpAddr) -> Decision {
        let now = Instant::now();
        let mut map = self.failures.lock().expect("auth map poisoned");
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&peer) {
            map.retain(|_, f| {
                f.blocked_until.is_some_and(|u| u > now) || now - f.window_start < self.window
            });
            if map.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, f)| f.window_start)
                    .map(|(ip, _)| *ip)
            {
                map.remove(&oldest);
            }
        }
        let f = map.entry(peer).or_insert(Failures {
            window_start: now,
            count: 0,
            blocked_until: None,
        });
        if now - f.window_start >= self.window || f.blocked_until.is_some() {
            *f = Failures {
                window_start: now,
                count: 0,
                blocked_until: None,
            };
        }
        f.count += 1;
        if f.count > MAX_FAILURES {
            f.blocked_until = Some(now + self.block);
            tracing::warn!(%peer, "too many failed authentication attempts; address blocked for {} s", self.block.as_secs());
            return Decision::RateLimited {
                retry_after_s: self.block.as_secs().max(1),
            };
        }
        Decision::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> AuthGate {
        let t = Secret::new("0123456789abcdef0123456789abcdef");
        AuthGate::with_timing(Some(t), Duration::from_secs(60), Duration::from_millis(200))
    }

    #[test]
    fn right_token_allowed_wrong_denied() {
        let g = gate();
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        assert_eq!(
            g.check(ip, Some("0123456789abcdef0123456789abcdef")),
            Decision::Allowed
        );
        assert_eq!(
            g.check(ip, Some("0123456789abcdef0123456789abcdeX")),
            Decision::Denied
        );
        assert_eq!(g.check(ip, Some("short")), Decision::Denied);
        assert_eq!(g.check(ip, None), Decision::Denied);
    }

    #[test]
    fn eleventh_failure_blocks_then_window_ends() {
        let g = gate();
        let ip: IpAddr = "127.0.0.6".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(g.check(ip, Some("nope")), Decision::Denied);
        }
        assert!(matches!(
            g.check(ip, Some("nope")),
            Decision::RateLimited { .. }
        ));
        // Even the right token is refused while blocked.
        assert!(matches!(
            g.check(ip, Some("0123456789abcdef0123456789abcdef")),
            Decision::RateLimited { .. }
        ));
        // Another address is unaffected.
        assert_eq!(
            g.check(
                "127.0.0.7".parse().unwrap(),
                Some("0123456789abcdef0123456789abcdef")
            ),
            Decision::Allowed
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            g.check(ip, Some("0123456789abcdef0123456789abcdef")),
            Decision::Allowed
        );
    }

    #[test]
    fn no_token_denies_everything() {
        let g = AuthGate::new(None);
        assert_eq!(
            g.check("127.0.0.1".parse().unwrap(), Some("")),
            Decision::Denied
        );
    }

    #[test]
    fn address_map_is_bounded() {
        let g = gate();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            g.check(ip, Some("x"));
        }
        assert!(g.failures.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }
}
