//! `debug/memory_subscribe` and `debug/memory_unsubscribe`: live memory figures for the
//! panel's cards and chart, as `memory_stats` events on the subscribe request's
//! `message_id`.
//!
//! One [`Hub`] samples for every subscriber together: while anyone is subscribed, a
//! single task ticks once per `Limits::stream_tick` (one second), takes one sample (off the
//! async workers) and hands it to each subscriber whose `interval_s` is due. With nobody
//! subscribed there is no task at all; the next subscriber starts it again.
//!
//! Events go through the caller's bounded outbound queue (`Caller::events`). A
//! subscriber whose queue is full is dropped and its session told to close with 1008
//! (`Caller::slow_consumer`): the server never buffers more for a client that fell behind.
//! A subscription ends with `debug/memory_unsubscribe` or with its socket (the hub notices
//! the closed queue on its next tick).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::mpsc::error::TrySendError;

use super::args::{Bounded, Range};
use super::debug::{rfc3339, system_json, totals_json, tracking_json};
use super::{Caller, Command, CommandError, Context, Event, blocking};
use crate::memory;
use crate::system::SharedSampler;

/// Bounds of `interval_s`: a sample a second is the finest the hub takes; a minute is the
/// coarsest that still draws a useful 15-minute chart.
pub const INTERVAL_S_MIN: i64 = 1;
/// See [`INTERVAL_S_MIN`].
pub const INTERVAL_S_MAX: i64 = 60;
/// What the panel's chart wants when the client does not say.
pub const INTERVAL_S_DEFAULT: i64 = 2;
/// Subscriptions one socket may hold: a panel needs one; the cap keeps a misbehaving
/// client from growing the hub's list without bound.
pub const MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 8;
/// The event name.
pub const EVENT: &str = "memory_stats";

/// `debug/memory_subscribe`.
pub const MEMORY_SUBSCRIBE: Command = Command {
    name: "debug/memory_subscribe",
    summary: "Streams process, host and heap memory as memory_stats events every interval_s seconds until unsubscribed.",
    run: |ctx, args| Box::pin(async move { subscribe(ctx, args).map(Into::into) }),
};

/// `debug/memory_unsubscribe`.
pub const MEMORY_UNSUBSCRIBE: Command = Command {
    name: "debug/memory_unsubscribe",
    summary: "Ends a debug/memory_subscribe stream on this socket.",
    run: |ctx, args| Box::pin(async move { unsubscribe(ctx, args).map(Into::into) }),
};

/// `interval_s`'s bounds.
pub struct IntervalS;

impl Range for IntervalS {
    const MIN: u64 = INTERVAL_S_MIN.unsigned_abs();
    const MAX: u64 = INTERVAL_S_MAX.unsigned_abs();
    const UNIT: &'static str = " (seconds)";
}

/// `debug/memory_subscribe` arguments.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeArgs {
    /// Seconds between events, 1 to 60 (default 2).
    pub interval_s: Option<Bounded<IntervalS>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeArgs {
    subscription: String,
}

/// Validates `interval_s`: an integer from 1 to 60 (booleans, floats and strings are
/// rejected, as for `top_n`).
///
/// # Errors
/// [`CommandError::InvalidArgs`] naming `interval_s`.
pub fn parse_interval(args: Value) -> Result<u64, CommandError> {
    interval(super::Args::Json(args))
}

/// `interval_s` from the arguments, or its default.
fn interval(args: super::Args) -> Result<u64, CommandError> {
    let SubscribeArgs { interval_s } = args.parse()?;
    Ok(interval_s.map_or(INTERVAL_S_DEFAULT.unsigned_abs(), Bounded::get))
}

fn subscribe(ctx: Context, args: super::Args) -> Result<Value, CommandError> {
    let interval_s = interval(args)?;
    let (Some(message_id), Some(events)) = (ctx.message_id.clone(), ctx.caller.events.get()) else {
        return Err(CommandError::PreconditionFailed(
            "debug/memory_subscribe streams events: send it over the WebSocket".into(),
        ));
    };
    let hub = &ctx.services.stream;
    let start = {
        let mut state = hub.state.lock().expect("hub lock poisoned");
        let mine = state
            .subscribers
            .iter()
            .filter(|s| Arc::ptr_eq(&s.caller, &ctx.caller))
            .collect::<Vec<_>>();
        if mine.iter().any(|s| s.message_id == message_id) {
            return Err(CommandError::PreconditionFailed(format!(
                "a subscription with message_id {message_id:?} is already active on this socket"
            )));
        }
        if mine.len() >= MAX_SUBSCRIPTIONS_PER_SOCKET {
            return Err(CommandError::PreconditionFailed(format!(
                "at most {MAX_SUBSCRIPTIONS_PER_SOCKET} subscriptions per socket; unsubscribe one first"
            )));
        }
        state.subscribers.push(Subscriber {
            caller: ctx.caller.clone(),
            events: events.clone(),
            message_id,
            every: interval_s,
            next_due: hub.samples_taken.load(Ordering::Acquire) + 1,
        });
        !std::mem::replace(&mut state.running, true)
    };
    if start {
        let services = ctx.services.clone();
        tokio::spawn(async move { run_hub(&services.stream, &services.system).await });
    }
    Ok(json!({"subscribed": true, "interval_s": interval_s, "event": EVENT}))
}

fn unsubscribe(ctx: Context, args: super::Args) -> Result<Value, CommandError> {
    let UnsubscribeArgs { subscription } = args.parse()?;
    let mut state = ctx.services.stream.state.lock().expect("hub lock poisoned");
    let before = state.subscribers.len();
    state
        .subscribers
        .retain(|s| !(Arc::ptr_eq(&s.caller, &ctx.caller) && *s.message_id == *subscription));
    if state.subscribers.len() == before {
        return Err(CommandError::NotFound(format!(
            "no active subscription {:?} on this socket (`subscription` is the message_id of the debug/memory_subscribe request)",
            super::shorten(&subscription, super::DETAIL_PART_MAX_CHARS)
        )));
    }
    Ok(json!({"unsubscribed": true}))
}

/// The shared sampler: its subscribers and how many samples it has taken.
pub struct Hub {
    tick: Duration,
    /// std mutex: held only to change or walk the subscriber list, never across `.await`.
    state: Mutex<HubState>,
    samples_taken: AtomicU64,
}

#[derive(Default)]
struct HubState {
    subscribers: Vec<Subscriber>,
    /// Whether the sampling task exists; set and cleared under the lock, so exactly one
    /// task runs while the list is not empty.
    running: bool,
}

struct Subscriber {
    caller: Arc<Caller>,
    events: tokio::sync::mpsc::Sender<Event>,
    message_id: Arc<str>,
    /// Deliver every this-many samples.
    every: u64,
    /// The sample number this subscriber gets next.
    next_due: u64,
}

/// What `system/info` reports about the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HubStatus {
    pub memory_subscribers: usize,
    /// Samples taken since the server started (one per tick while anyone subscribes).
    pub samples_taken: u64,
    /// Whether the sampling task exists now.
    pub sampling: bool,
}

impl Hub {
    /// A hub ticking every `tick`, with no task until the first subscriber.
    pub fn new(tick: Duration) -> Self {
        Self {
            tick,
            state: Mutex::default(),
            samples_taken: AtomicU64::new(0),
        }
    }

    /// Subscribers, samples taken and whether the task runs.
    pub fn status(&self) -> HubStatus {
        let state = self.state.lock().expect("hub lock poisoned");
        HubStatus {
            memory_subscribers: state.subscribers.len(),
            samples_taken: self.samples_taken.load(Ordering::Acquire),
            sampling: state.running,
        }
    }
}

/// The one sampling task: ticks while anyone subscribes, then ends.
async fn run_hub(hub: &Hub, system: &Arc<SharedSampler>) {
    let mut ticker = tokio::time::interval(hub.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::debug!("memory stream sampler started");
    loop {
        ticker.tick().await;
        {
            let mut state = hub.state.lock().expect("hub lock poisoned");
            state.subscribers.retain(|s| !s.events.is_closed());
            if state.subscribers.is_empty() {
                state.running = false;
                break;
            }
        }
        let sampler = system.clone();
        let data = match blocking(move || sample(&sampler)).await {
            Ok(d) => d,
            Err(e) => {
                e.logged(MEMORY_SUBSCRIBE.name);
                continue;
            }
        };
        let seq = hub.samples_taken.fetch_add(1, Ordering::AcqRel) + 1;
        let mut data = data;
        data["sample"] = Value::from(seq);
        deliver(hub, seq, &Arc::new(data));
    }
    tracing::debug!("memory stream sampler stopped: no subscribers");
}

/// Queues sample `seq` for every subscriber it is due for; drops the ones whose socket is
/// gone or whose queue is full (and tells those sessions to close).
fn deliver(hub: &Hub, seq: u64, data: &Arc<Value>) {
    let mut state = hub.state.lock().expect("hub lock poisoned");
    state.subscribers.retain_mut(|s| {
        if seq < s.next_due {
            return true;
        }
        s.next_due = seq + s.every;
        let event = Event {
            message_id: Some(s.message_id.clone()),
            name: EVENT,
            data: data.clone(),
        };
        match s.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(_)) => {
                tracing::info!(peer = %s.caller.peer, "memory stream subscriber fell behind; closing its socket");
                s.caller.slow_consumer.cancel();
                false
            }
        }
    });
}

/// One sample: the same shapes as the snapshot's `tracking`, `allocator` and `system`.
fn sample(system: &SharedSampler) -> Value {
    let system = system.sample();
    json!({
        "sampled_at": rfc3339(SystemTime::now()),
        "tracking": tracking_json(),
        "allocator": totals_json(&memory::totals()),
        "system": system_json(&system),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_an_integer_from_1_to_60() {
        assert_eq!(parse_interval(json!({})).unwrap(), 2);
        assert_eq!(parse_interval(json!({"interval_s": 1})).unwrap(), 1);
        assert_eq!(parse_interval(json!({"interval_s": 60})).unwrap(), 60);
        for bad in [
            json!(0),
            json!(61),
            json!(1.5),
            json!(2.0),
            json!("2"),
            json!(true),
            json!(-1),
        ] {
            let e = parse_interval(json!({"interval_s": bad})).unwrap_err();
            assert_eq!(e.code(), "invalid_args");
            assert!(e.details().contains("interval_s"), "{bad}: {e:?}");
        }
        let e = parse_interval(json!({"every": 2})).unwrap_err();
        assert!(e.details().contains("every"), "{e:?}");
    }
}
