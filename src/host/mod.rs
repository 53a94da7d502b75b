//! Host monitoring: which add-on — or Home Assistant Core, or the Supervisor — keeps
//! growing?
//!
//! Every poll interval the [`HostMonitor`] asks the Supervisor for its add-on list and then,
//! at most [`CONCURRENCY`] calls at a time, each container's stats (about a second each on a real
//! Supervisor), and records the memory into a [`history::History`] per container; the
//! verdict per container (growing / stable / insufficient data over 1 h, 6 h, 24 h and
//! 7 d, restarts, sawtooth leaks) comes from there.
//!
//! This module knows nothing of the server's transports: it talks to the Supervisor
//! through its own client (`supervisor`), and commands turn its typed rows into JSON.
//! Without a Supervisor token the monitor is off and says why.

pub mod history;
pub mod store;
pub mod supervisor;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::settings::{Secret, Settings};
use crate::system::SharedSampler;
use history::{ContainerVerdict, HOUR_MS, History, Judgement};
use store::{Store, Write};
use supervisor::{AddonInfo, Supervisor, SupervisorError};

/// Stats calls in flight at once: a real Supervisor takes about a second per call, so 100
/// add-ons (plus the list, Core, the Supervisor and 5 plugins: 108 calls) are polled in
/// about 12 s, well inside the default minute and the 15 s the host view promises.
pub const CONCURRENCY: usize = 10;
/// One call's deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Containers tracked at most (a Home Assistant host runs a few dozen): bounds memory and
/// the metrics' series.
pub const MAX_CONTAINERS: usize = 200;
/// The plugins whose stats the Supervisor serves, with the names users know them by.
pub const PLUGINS: [(&str, &str); 5] = [
    ("dns", "DNS"),
    ("audio", "Audio"),
    ("cli", "CLI"),
    ("multicast", "Multicast"),
    ("observer", "Observer"),
];

/// What a container is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Core,
    Supervisor,
    Plugin,
    Addon,
}

/// Something to poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub slug: String,
    pub name: String,
    pub kind: Kind,
    /// The add-on's state and version from the list (Core, Supervisor and plugins: none).
    pub state: Option<String>,
    pub version: Option<String>,
}

impl Kind {
    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Core => "core",
            Self::Supervisor => "supervisor",
            Self::Plugin => "plugin",
            Self::Addon => "addon",
        }
    }

    /// From [`Kind::as_str`]; anything else is an add-on.
    pub fn parse(s: &str) -> Self {
        match s {
            "core" => Self::Core,
            "supervisor" => Self::Supervisor,
            "plugin" => Self::Plugin,
            _ => Self::Addon,
        }
    }
}

impl Target {
    fn stats_path(&self) -> String {
        match self.kind {
            Kind::Core => "/core/stats".into(),
            Kind::Supervisor => "/supervisor/stats".into(),
            Kind::Plugin => format!("/{}/stats", self.slug),
            Kind::Addon => format!("/addons/{}/stats", self.slug),
        }
    }
}

/// The fixed targets: Core, the Supervisor, the plugins.
fn fixed_targets() -> Vec<Target> {
    let mut t = vec![
        Target {
            slug: "core".into(),
            name: "Home Assistant Core".into(),
            kind: Kind::Core,
            state: None,
            version: None,
        },
        Target {
            slug: "supervisor".into(),
            name: "Supervisor".into(),
            kind: Kind::Supervisor,
            state: None,
            version: None,
        },
    ];
    t.extend(PLUGINS.iter().map(|(slug, name)| Target {
        slug: (*slug).into(),
        name: format!("Plugin: {name}"),
        kind: Kind::Plugin,
        state: None,
        version: None,
    }));
    t
}

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct HostSettings {
    pub supervisor_url: String,
    /// How often to poll, in real time.
    pub poll: Duration,
    /// How much history one poll stands for: `poll` in production; tests compress time
    /// (poll every 20 ms, each standing for a minute).
    pub poll_stands_for: Duration,
    /// The slope a window needs to be `growing`, in bytes per hour.
    pub growth_threshold_bytes_per_hour: u64,
    pub notify_leaks: bool,
    /// Where the history is kept (`data_dir/history.sqlite3`).
    pub database: std::path::PathBuf,
}

impl HostSettings {
    /// From the settings and the trend's threshold.
    pub fn new(settings: &Settings, growth_threshold_bytes_per_hour: u64) -> Self {
        let nominal = Duration::from_secs(settings.host_poll_seconds.into());
        Self {
            supervisor_url: settings.supervisor_url.clone(),
            poll: settings
                .host_poll_interval_ms
                .map_or(nominal, |ms| Duration::from_millis(ms.into())),
            poll_stands_for: nominal,
            growth_threshold_bytes_per_hour,
            notify_leaks: settings.notify_leaks,
            database: settings.data_dir.join(store::FILE_NAME),
        }
    }
}

/// One container as the monitor knows it.
#[derive(Clone, Debug)]
struct Container {
    target: Target,
    history: History,
    /// The last stats call's failure, for the panel (`None` after a good one).
    error: Option<String>,
    /// Polls that did not see it in the list: dropped after a day of absence.
    seen_at_ms: i64,
}

/// The last poll, for the panel and the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PollStatus {
    pub polls: u64,
    pub last_at_ms: Option<i64>,
    pub last_duration: Option<Duration>,
    /// Why the add-on list (or everything) failed, if it did.
    pub error: Option<String>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Container>,
    status: PollStatus,
    host_total_bytes: u64,
    host_available_bytes: u64,
    /// Per container: consecutive checks that found it growing, and whether this
    /// growth episode was already notified.
    episodes: BTreeMap<String, Episode>,
}

/// One container's growth episode, for the one-notification-per-episode rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Episode {
    streak: u32,
    notified: bool,
}

/// Checks in a row a container must be growing before the user is told: one check could
/// be a fluke of the newest points.
pub const NOTIFY_AFTER_CHECKS: u32 = 2;

/// What one poll tells Home Assistant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Announcements {
    /// New growth episodes: (slug, notification body) for `persistent_notification.create`.
    pub notifications: Vec<serde_json::Value>,
    /// `binary_sensor.heapwatch_leak_detected` and `sensor.heapwatch_top_grower`.
    pub states: Vec<(String, serde_json::Value)>,
}

/// One row of the host table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub slug: String,
    pub name: String,
    pub kind: Kind,
    pub state: Option<String>,
    pub version: Option<String>,
    pub memory_bytes: Option<u64>,
    /// Share of the host's RAM, 0..=1.
    pub host_share: Option<f64>,
    pub judgement: Judgement,
    /// At the growing slope, hours until the host's available memory is gone.
    pub hours_to_exhaustion: Option<f64>,
    /// The last 24 h as 15-minute averages (time ms, bytes).
    pub sparkline: Vec<(i64, u64)>,
    pub error: Option<String>,
}

/// A container's memory over a span: (time ms, bytes) points and restart times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub points: Vec<(i64, u64)>,
    pub restarts: Vec<i64>,
}

/// Host monitoring's state: off (no token), or the Supervisor client and what it found.
pub struct HostMonitor {
    settings: HostSettings,
    supervisor: Result<Supervisor, String>,
    /// std mutex: the history database, used on blocking threads only (open, load, one
    /// write per poll); `None` until opened, or when it cannot be (then history lives in
    /// memory only, and the log says why once).
    store: Arc<Mutex<Option<Store>>>,
    /// A write failure was logged and not yet followed by a success.
    store_failing: Arc<std::sync::atomic::AtomicBool>,
    /// std mutex: held to record a poll or copy rows out, never across `.await`.
    state: Mutex<State>,
    /// The monitor's clock: real time, sped up by `poll_stands_for / poll`.
    started: Instant,
    started_wall_ms: i64,
    /// Added to the clock so it never runs behind the newest stored sample (a history
    /// written under a compressed clock, or before the wall clock stepped back).
    clock_offset_ms: std::sync::atomic::AtomicI64,
}

impl HostMonitor {
    /// A monitor for `settings`; `token` is the Supervisor's (`SUPERVISOR_TOKEN`): without
    /// one the monitor is off.
    pub fn new(settings: HostSettings, token: Option<Secret>) -> Self {
        let supervisor = match token {
            None => Err("the host view needs the Supervisor: it is on when Heapwatch runs as a Home Assistant add-on (SUPERVISOR_TOKEN is set)".to_owned()),
            Some(t) => Supervisor::new(&settings.supervisor_url, t, CALL_TIMEOUT)
                .map_err(|e| e.to_string()),
        };
        Self {
            settings,
            supervisor,
            state: Mutex::default(),
            store: Arc::default(),
            store_failing: Arc::default(),
            started: Instant::now(),
            started_wall_ms: unix_ms(SystemTime::now()),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Why the monitor is off, if it is.
    pub fn off_reason(&self) -> Option<&str> {
        self.supervisor.as_ref().err().map(String::as_str)
    }

    /// The monitor's settings.
    pub fn settings(&self) -> &HostSettings {
        &self.settings
    }

    /// The monitor's time now, in ms since the epoch (compressed in tests).
    pub fn now_ms(&self) -> i64 {
        let scale = self.settings.poll_stands_for.as_secs_f64()
            / self.settings.poll.as_secs_f64().max(1e-3);
        self.started_wall_ms
            + (self.started.elapsed().as_secs_f64() * 1000.0 * scale) as i64
            + self
                .clock_offset_ms
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn poll_ms(&self) -> i64 {
        i64::try_from(self.settings.poll_stands_for.as_millis()).unwrap_or(i64::MAX)
    }

    /// Polls every container once and records what came back. Errors are kept for the
    /// panel (and logged once per change); the monitor carries on.
    pub async fn poll_once(self: &Arc<Self>, system: &SharedSampler) {
        let Ok(supervisor) = &self.supervisor else {
            return;
        };
        let began = Instant::now();
        let mut targets = fixed_targets();
        let list_error = match supervisor.addons().await {
            Ok(addons) => {
                targets.extend(addons.into_iter().take(MAX_CONTAINERS - targets.len()).map(
                    |AddonInfo {
                         slug,
                         name,
                         state,
                         version,
                     }| Target {
                        slug,
                        name,
                        kind: Kind::Addon,
                        state: Some(state),
                        version,
                    },
                ));
                None
            }
            Err(e) => Some(e),
        };
        let results: Vec<(Target, Result<supervisor::Stats, SupervisorError>)> =
            futures_util::stream::iter(targets)
                .map(|t| async move {
                    let path = t.stats_path();
                    let stats = supervisor.stats(&path).await;
                    (t, stats)
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let host = system.sample().host;
        let now = self.now_ms();
        let (writes, gone) = self.record(now, results, list_error, host, began);
        self.persist(now, writes, gone).await;
        if self.settings.notify_leaks {
            // Judging every container is Theil–Sen over hundreds of points each: off the
            // async workers.
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.announcements()).await {
                Ok(news) => self.announce(supervisor, news).await,
                Err(e) => tracing::warn!(error = %e, "judging the containers failed"),
            }
        }
    }

    /// The notifications and entity states this poll's verdicts call for: a container
    /// growing for [`NOTIFY_AFTER_CHECKS`] checks in a row gets one notification per
    /// growth episode (the episode ends when it stops growing); the two entities are
    /// refreshed every poll.
    pub fn announcements(&self) -> Announcements {
        let rows = self.table();
        let now = self.now_ms();
        let mut state = self.state.lock().expect("host state lock poisoned");
        let mut out = Announcements::default();
        let growing: Vec<&Row> = rows
            .iter()
            .filter(|r| r.judgement.verdict == ContainerVerdict::Growing)
            .collect();
        for r in &rows {
            let episode = state.episodes.entry(r.slug.clone()).or_default();
            if r.judgement.verdict == ContainerVerdict::Growing {
                episode.streak += 1;
                if episode.streak >= NOTIFY_AFTER_CHECKS && !episode.notified {
                    episode.notified = true;
                    out.notifications.push(notification(r, now));
                }
            } else {
                *episode = Episode::default();
            }
        }
        let live: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.slug.as_str()).collect();
        state
            .episodes
            .retain(|slug, _| live.contains(slug.as_str()));
        drop(state);
        let slugs: Vec<&str> = growing.iter().map(|r| r.slug.as_str()).collect();
        out.states.push((
            "binary_sensor.heapwatch_leak_detected".into(),
            serde_json::json!({
                "state": if growing.is_empty() { "off" } else { "on" },
                "attributes": {
                    "friendly_name": "Heapwatch leak detected",
                    "device_class": "problem",
                    "growing": slugs,
                },
            }),
        ));
        let top = growing.iter().max_by(|a, b| {
            let s = |r: &Row| r.judgement.slope_bytes_per_hour.unwrap_or(0.0);
            s(a).total_cmp(&s(b))
        });
        let mib_per_hour = top
            .and_then(|r| r.judgement.slope_bytes_per_hour)
            .map_or(0.0, |s| (s / (1024.0 * 1024.0) * 10.0).round() / 10.0);
        out.states.push((
            "sensor.heapwatch_top_grower".into(),
            serde_json::json!({
                "state": mib_per_hour,
                "attributes": {
                    "friendly_name": "Heapwatch top grower",
                    "unit_of_measurement": "MiB/h",
                    "state_class": "measurement",
                    "slug": top.map(|r| r.slug.as_str()),
                    "name": top.map(|r| r.name.as_str()),
                },
            }),
        ));
        out
    }

    /// Sends the announcements through Core's API; a failure is logged, never retried
    /// in a loop (the states are sent again next poll; a lost notification is not).
    async fn announce(&self, supervisor: &Supervisor, news: Announcements) {
        for body in news.notifications {
            let path = "/core/api/services/persistent_notification/create";
            match supervisor.post(path, &body).await {
                Ok(_) => {
                    tracing::info!(notification_id = %body["notification_id"], "leak notification sent")
                }
                Err(e) => tracing::warn!("leak notification not sent: {e}"),
            }
        }
        for (entity, body) in news.states {
            if let Err(e) = supervisor
                .post(&format!("/core/api/states/{entity}"), &body)
                .await
            {
                tracing::debug!("{entity} not updated: {e}");
            }
        }
    }

    /// Applies one poll's results to the histories; returns what to write to the store and
    /// the containers it forgot.
    fn record(
        &self,
        now: i64,
        results: Vec<(Target, Result<supervisor::Stats, SupervisorError>)>,
        list_error: Option<SupervisorError>,
        host: crate::system::HostMemory,
        began: Instant,
    ) -> (Vec<Write>, Vec<String>) {
        let mut writes = Vec::with_capacity(results.len());
        let mut state = self.state.lock().expect("host state lock poisoned");
        state.host_total_bytes = host.total_bytes;
        state.host_available_bytes = host.available_bytes;
        let forbidden_everywhere = results
            .iter()
            .all(|(_, r)| matches!(r, Err(SupervisorError::Forbidden { .. })));
        for (target, result) in results {
            let c = state
                .containers
                .entry(target.slug.clone())
                .or_insert_with(|| Container {
                    target: target.clone(),
                    history: History::default(),
                    error: None,
                    seen_at_ms: now,
                });
            c.seen_at_ms = now;
            c.target.name.clone_from(&target.name);
            let mut point = None;
            match result {
                Ok(stats) => {
                    let state_now = target.state.as_deref().unwrap_or("started");
                    c.history.observe(now, state_now, target.version.as_deref());
                    c.history.push(now, stats.memory_usage);
                    c.target.state = Some(state_now.to_owned());
                    c.error = None;
                    point = c.history.latest();
                }
                Err(SupervisorError::NotRunning { .. }) => {
                    let s = target.state.as_deref().unwrap_or("stopped");
                    c.history.observe(now, s, target.version.as_deref());
                    c.target.state = Some(s.to_owned());
                    c.error = None;
                }
                Err(e) => c.error = Some(e.to_string()),
            }
            c.target.version = target.version.or(c.target.version.take());
            writes.push(Write {
                slug: c.target.slug.clone(),
                name: c.target.name.clone(),
                kind: c.target.kind.as_str().to_owned(),
                bucket: point.and(c.history.last_bucket()),
                point,
                meta: c.history.meta(),
                restarts: c.history.restarts().filter(|&t| t == now).collect(),
            });
        }
        // Forget what has been gone from the list for a day (an uninstalled add-on).
        let day = 24 * HOUR_MS;
        let mut gone = Vec::new();
        state.containers.retain(|slug, c| {
            let keep = now - c.seen_at_ms < day;
            if !keep {
                gone.push(slug.clone());
            }
            keep
        });
        let error = list_error.map(|e| e.to_string()).or_else(|| {
            forbidden_everywhere.then(|| "the Supervisor refused every stats call".to_owned())
        });
        if error != state.status.error {
            match &error {
                Some(e) => tracing::warn!("host memory poll: {e}"),
                None if state.status.error.is_some() => {
                    tracing::info!("host memory poll works again")
                }
                None => {}
            }
        }
        state.status = PollStatus {
            polls: state.status.polls + 1,
            last_at_ms: Some(now),
            last_duration: Some(began.elapsed()),
            error,
        };
        (writes, gone)
    }

    /// Opens the history database and loads what it holds (call it off the async
    /// workers, before the first poll): the containers' histories into the monitor, and
    /// the add-on's own samples of the last [`store::OWN_SPAN_MS`], returned as (when,
    /// RSS, heap) for the trend. A damaged file is moved aside; a database that cannot be
    /// opened leaves the history in memory only. Both are logged.
    pub fn open_store(&self) -> Vec<(SystemTime, u64, u64)> {
        let path = &self.settings.database;
        let since = unix_ms(SystemTime::now()) - store::OWN_SPAN_MS;
        let opened = Store::open(path).and_then(|(store, aside)| {
            if let Some(aside) = aside {
                tracing::warn!(path = %path.display(), moved_to = %aside.display(), "the history database was damaged; it was moved aside and a fresh one started");
            }
            let now = self.now_ms();
            let loaded = store.load_since(
                now - history::RAW_IN_MEMORY_MS,
                now - history::BUCKETS_IN_MEMORY_MS,
            )?;
            let own = store
                .load_own(since)?
                .into_iter()
                .map(|(t, rss, heap)| (from_unix_ms(t), rss, heap))
                .collect::<Vec<_>>();
            Ok((store, loaded, own))
        });
        match opened {
            Ok((store, loaded, own)) => {
                let newest = loaded
                    .values()
                    .filter_map(|l| l.saved.raw.last().map(|&(t, _)| t))
                    .max();
                if let Some(newest) = newest {
                    let behind = newest + self.poll_ms() - self.now_ms();
                    if behind > 0 {
                        self.clock_offset_ms
                            .store(behind, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let mut state = self.state.lock().expect("host state lock poisoned");
                let now = self.now_ms();
                for (slug, l) in loaded {
                    let target = Target {
                        slug: slug.clone(),
                        name: l.name,
                        kind: Kind::parse(&l.kind),
                        state: l.saved.meta.state.clone(),
                        version: l.saved.meta.version.clone(),
                    };
                    state.containers.insert(
                        slug,
                        Container {
                            target,
                            history: History::restore(l.saved),
                            error: None,
                            seen_at_ms: now,
                        },
                    );
                }
                tracing::info!(path = %path.display(), containers = state.containers.len(), own_samples = own.len(), "memory history loaded");
                *self.store.lock().expect("store lock poisoned") = Some(store);
                own
            }
            Err(e) => {
                tracing::warn!("memory history stays in memory only: {e}");
                Vec::new()
            }
        }
    }

    /// Writes one sample of the add-on's own memory (call it off the async workers); a
    /// failure is logged like a poll's.
    pub fn record_own(&self, at: SystemTime, rss: u64, heap: u64) {
        let mut guard = self.store.lock().expect("store lock poisoned");
        let Some(store) = guard.as_mut() else {
            return;
        };
        note_write(&self.store_failing, store.write_own(unix_ms(at), rss, heap));
    }

    /// Writes one poll to the database on a blocking thread; a failure (a full disk) is
    /// logged once until a write works again, and polling goes on in memory.
    async fn persist(&self, now: i64, writes: Vec<Write>, gone: Vec<String>) {
        let (store, failing) = (self.store.clone(), self.store_failing.clone());
        let done = tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().expect("store lock poisoned");
            let Some(store) = guard.as_mut() else {
                return;
            };
            let written = store
                .write_poll(now, &writes)
                .and_then(|()| gone.iter().try_for_each(|slug| store.forget(slug)));
            note_write(&failing, written);
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "host memory history write failed");
        }
    }

    /// The last poll's status.
    pub fn status(&self) -> PollStatus {
        self.state
            .lock()
            .expect("host state lock poisoned")
            .status
            .clone()
    }

    /// Every container with its verdict, largest first.
    pub fn table(&self) -> Vec<Row> {
        let now = self.now_ms();
        let state = self.state.lock().expect("host state lock poisoned");
        let threshold = self.settings.growth_threshold_bytes_per_hour as f64;
        let mut rows: Vec<Row> = state
            .containers
            .values()
            .map(|c| {
                let judgement = c.history.judge(now, self.poll_ms(), threshold);
                let memory_bytes = c.history.latest().map(|(_, b)| b);
                let host_share = memory_bytes
                    .filter(|_| state.host_total_bytes > 0)
                    .map(|b| b as f64 / state.host_total_bytes as f64);
                let hours_to_exhaustion = judgement
                    .slope_bytes_per_hour
                    .filter(|s| *s > 0.0 && judgement.verdict.rises())
                    .map(|s| state.host_available_bytes as f64 / s);
                let sparkline = c
                    .history
                    .averages_since(now - 24 * HOUR_MS)
                    .map(|b| {
                        let (t, v) = b.point();
                        (t, v as u64)
                    })
                    .collect();
                Row {
                    slug: c.target.slug.clone(),
                    name: c.target.name.clone(),
                    kind: c.target.kind,
                    state: c.target.state.clone(),
                    version: c.target.version.clone(),
                    memory_bytes,
                    host_share,
                    judgement,
                    hours_to_exhaustion,
                    sparkline,
                    error: c.error.clone(),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.memory_bytes
                .cmp(&a.memory_bytes)
                .then_with(|| a.slug.cmp(&b.slug))
        });
        rows
    }

    /// A container's memory over `span_ms` back from now: raw points for spans up to 48 h,
    /// 15-minute averages beyond (from the database for spans longer than memory keeps);
    /// with the restarts in that span. `None` for an unknown slug. Blocks on the database:
    /// call it off the async workers.
    pub fn history(&self, slug: &str, span_ms: i64) -> Option<Span> {
        let now = self.now_ms();
        let averaged = span_ms > history::RAW_SPAN_MS;
        let in_memory = if averaged {
            history::BUCKETS_IN_MEMORY_MS
        } else {
            history::RAW_IN_MEMORY_MS
        };
        if span_ms > in_memory {
            // Longer than memory keeps: the database's (call this off the async workers).
            // Without a database, what memory has.
            let store = self.store.lock().expect("store lock poisoned");
            if let Some(store) = store.as_ref() {
                match store.span(slug, now - span_ms, averaged) {
                    Ok(Some((points, restarts))) => return Some(Span { points, restarts }),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("memory history not read: {e}"),
                }
            }
        }
        let state = self.state.lock().expect("host state lock poisoned");
        let c = state.containers.get(slug)?;
        let from = now - span_ms;
        let points = if span_ms <= history::RAW_SPAN_MS {
            c.history.raw_since(from).collect()
        } else {
            c.history
                .averages_since(from)
                .map(|b| {
                    let (t, v) = b.point();
                    (t, v as u64)
                })
                .collect()
        };
        let restarts = c.history.restarts().filter(|&t| t >= from).collect();
        Some(Span { points, restarts })
    }
}

/// Logs a failing history write once (a full disk fails every write), and the first good
/// one after.
fn note_write(failing: &std::sync::atomic::AtomicBool, written: Result<(), store::StoreError>) {
    use std::sync::atomic::Ordering;
    match written {
        Ok(()) => {
            if failing.swap(false, Ordering::AcqRel) {
                tracing::info!("memory history is written again");
            }
        }
        Err(e) => {
            if !failing.swap(true, Ordering::AcqRel) {
                tracing::warn!("memory history not written (kept in memory): {e}");
            }
        }
    }
}

/// A persistent notification for a container that keeps growing, in a user's words.
fn notification(r: &Row, now_ms: i64) -> serde_json::Value {
    let mib_per_hour = r.judgement.slope_bytes_per_hour.unwrap_or(0.0) / (1024.0 * 1024.0);
    let hours = r
        .judgement
        .growing_since_ms
        .map_or(0.0, |t| (now_ms - t) as f64 / HOUR_MS as f64);
    let mut message = format!(
        "{} has been using more memory for about {:.0} hours, growing by about {:.0} MiB per hour.",
        r.name,
        hours.max(1.0),
        mib_per_hour.max(1.0)
    );
    if let Some(h) = r.hours_to_exhaustion {
        message.push_str(&format!(
            " At this rate the host runs out of free memory in about {:.0} hours.",
            h
        ));
    }
    if r.judgement.sawtooth {
        message.push_str(
            " It grew the same way before its last restarts: a restart only hides it for a while.",
        );
    }
    message.push_str(" Open Heapwatch (in the sidebar) and its Host view for the history; restarting it frees the memory for now, and its maintainers will want to hear about it.");
    serde_json::json!({
        "notification_id": format!("heapwatch_leak_{}", r.slug),
        "title": format!("{} keeps growing", r.name),
        "message": message,
    })
}

/// The polling task: polls every `poll` until `cancel`. Does nothing when the monitor is
/// off. Open the store first ([`HostMonitor::open_store`]) for the history to persist.
pub async fn run(monitor: Arc<HostMonitor>, system: Arc<SharedSampler>, cancel: CancellationToken) {
    if let Some(why) = monitor.off_reason() {
        tracing::info!("host memory view off: {why}");
        return;
    }
    let mut ticker = tokio::time::interval(monitor.settings.poll.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticker.tick() => monitor.poll_once(&system).await,
        }
    }
}

/// The time `ms` milliseconds after the Unix epoch (the epoch itself for a negative `ms`):
/// the inverse of [`unix_ms`].
pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
