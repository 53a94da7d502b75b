//! Logs: tracing, through tracing-appender's non-blocking writer to stdout (the add-on's
//! Log tab) and to a daily-rolling file under `data_dir/logs` (at most [`MAX_LOG_FILES`]),
//! so a bug report can include them. If `data_dir` is not writable, that is logged once
//! and stdout carries on alone. Keep the returned guard alive until exit: dropping it
//! flushes what is buffered.
//!
//! The same lines also go to a bounded in-memory ring ([`ring`]: the last
//! [`RING_MAX_LINES`] lines, at most [`RING_MAX_BYTES`]) that `GET /api/report` copies into
//! the report. The ring is process-global, like the tracing subscriber that feeds it: there
//! is one log per process. [`init`] installs its layer; a test or an embedding program with
//! its own subscriber adds [`ring_layer`] to it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::LogLevel;

/// A week of daily files.
pub const MAX_LOG_FILES: usize = 7;

/// Flushes buffered log lines when dropped.
pub struct LogGuard {
    _stdout: WorkerGuard,
    _file: Option<WorkerGuard>,
}

/// Installs the global subscriber. Returns the guard and, when the log directory could
/// not be used, why (the caller logs it once the subscriber is up).
pub fn init(level: LogLevel, data_dir: &Path) -> (LogGuard, Option<String>) {
    let level = LevelFilter::from_level(level.as_tracing());
    // Our own lines at the chosen level; dependencies only from warnings up, unless the
    // user asked for debug or trace.
    let deps = if level >= LevelFilter::DEBUG {
        level
    } else {
        LevelFilter::WARN
    };
    let filter = Targets::new()
        .with_default(deps)
        .with_target("heapwatch", level);

    let (stdout, stdout_guard) = buffered(std::io::stdout());
    let stdout_layer = tracing_subscriber::fmt::layer()
        .with_writer(stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));

    let dir = data_dir.join("logs");
    let file = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            Builder::new()
                .rotation(Rotation::DAILY)
                .filename_prefix("heapwatch")
                .filename_suffix("log")
                .max_log_files(MAX_LOG_FILES)
                .build(&dir)
                .map_err(|e| e.to_string())
        });
    let (file_layer, file_guard, problem) = match file {
        Ok(appender) => {
            let (writer, guard) = buffered(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false);
            (Some(layer), Some(guard), None)
        }
        Err(e) => (
            None,
            None,
            Some(format!(
                "cannot write logs under {}: {e}; logging to stdout only",
                dir.display()
            )),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stdout_layer)
        .with(file_layer)
        .with(ring_layer())
        .init();
    (
        LogGuard {
            _stdout: stdout_guard,
            _file: file_guard,
        },
        problem,
    )
}

/// Lines the ring keeps: enough to see what led up to a problem, small enough for a report.
pub const RING_MAX_LINES: usize = 500;
/// Bytes the ring keeps at most (the oldest lines go first).
pub const RING_MAX_BYTES: usize = 256 * 1024;
/// A longer line is cut here (and marked with `…`), so one huge field cannot empty the ring.
pub const RING_MAX_LINE_BYTES: usize = 4 * 1024;

/// The most recent log lines, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentLogs {
    pub lines: Vec<String>,
    /// Lines pushed out since the process started.
    pub dropped: u64,
}

/// A bounded ring of formatted log lines.
#[derive(Debug)]
pub struct LogRing {
    /// std mutex: held to push or copy lines only; nothing inside logs or awaits.
    state: Mutex<RingState>,
}

#[derive(Debug)]
struct RingState {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
}

impl LogRing {
    /// An empty ring.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(RingState {
                lines: VecDeque::new(),
                bytes: 0,
                dropped: 0,
            }),
        }
    }

    /// Appends a line (cut at [`RING_MAX_LINE_BYTES`]), dropping the oldest lines beyond
    /// the bounds.
    pub fn push(&self, mut line: String) {
        if line.len() > RING_MAX_LINE_BYTES {
            let mut cut = RING_MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.bytes += line.len();
        state.lines.push_back(line);
        while state.lines.len() > RING_MAX_LINES || state.bytes > RING_MAX_BYTES {
            let Some(old) = state.lines.pop_front() else {
                break;
            };
            state.bytes -= old.len();
            state.dropped += 1;
        }
    }

    /// A copy of the lines, oldest first.
    pub fn recent(&self) -> RecentLogs {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        RecentLogs {
            lines: state.lines.iter().cloned().collect(),
            dropped: state.dropped,
        }
    }
}

impl Default for LogRing {
    fn default() -> Self {
        Self::new()
    }
}

static RING: LogRing = LogRing::new();

/// The process's log ring.
pub fn ring() -> &'static LogRing {
    &RING
}

/// A tracing layer that writes each event as one line into [`ring`]:
/// `2026-11-26T10:15:00.123Z  INFO heapwatch::app: message key=value`.
pub fn ring_layer() -> RingLayer {
    RingLayer { _private: () }
}

/// See [`ring_layer`].
#[derive(Debug)]
pub struct RingLayer {
    _private: (),
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RingLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let meta = event.metadata();
        let now = time::OffsetDateTime::now_utc();
        let mut line = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {:>5} {}:",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond(),
            meta.level(),
            meta.target()
        );
        event.record(&mut LineVisitor(&mut line));
        RING.push(line);
    }
}

/// Appends ` message` and ` key=value` for each field.
struct LineVisitor<'a>(&'a mut String);

impl tracing::field::Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// Log lines a writer's queue holds before it drops new ones (and counts them).
/// tracing-appender's default, 128,000, is a channel of that many slots allocated up
/// front: 4 MiB per writer, 8 MiB of the add-on's 8 MiB heap at start. The add-on writes
/// a few lines a minute; a burst of thousands is already a problem worth losing lines of.
pub const QUEUED_LINES: usize = 4_096;

/// A writer on its own thread with a queue of [`QUEUED_LINES`].
fn buffered<W: std::io::Write + Send + 'static>(
    w: W,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_lines_within_both_bounds() {
        let ring = LogRing::new();
        for i in 0..(RING_MAX_LINES + 20) {
            ring.push(format!("line {i}"));
        }
        let r = ring.recent();
        assert_eq!(r.lines.len(), RING_MAX_LINES);
        assert_eq!(r.lines[0], "line 20");
        assert_eq!(
            r.lines.last().unwrap(),
            &format!("line {}", RING_MAX_LINES + 19)
        );
        assert_eq!(r.dropped, 20);

        let ring = LogRing::new();
        for _ in 0..200 {
            ring.push("x".repeat(RING_MAX_LINE_BYTES * 2));
        }
        let r = ring.recent();
        let bytes: usize = r.lines.iter().map(String::len).sum();
        assert!(bytes <= RING_MAX_BYTES, "{bytes}");
        assert!(r.lines.iter().all(|l| l.ends_with('…')));
        assert_eq!(
            r.lines.len(),
            RING_MAX_BYTES / (RING_MAX_LINE_BYTES + '…'.len_utf8())
        );
    }

    #[test]
    fn a_long_multibyte_line_is_cut_on_a_char_boundary() {
        let ring = LogRing::new();
        ring.push("ä".repeat(RING_MAX_LINE_BYTES));
        let line = &ring.recent().lines[0];
        assert!(line.len() <= RING_MAX_LINE_BYTES + '…'.len_utf8());
    }

    #[test]
    fn the_layer_formats_level_target_message_and_fields() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(ring_layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(peer = "10.0.0.1", count = 3, "ring layer test {}", 42);
        });
        let lines = ring().recent().lines;
        let line = lines
            .iter()
            .find(|l| l.contains("ring layer test 42"))
            .expect("the line is in the ring");
        assert!(line.contains(" WARN heapwatch::logging::tests:"), "{line}");
        assert!(
            line.contains(r#"peer="10.0.0.1""#) && line.contains("count=3"),
            "{line}"
        );
        assert!(
            line.as_bytes()[..4].iter().all(u8::is_ascii_digit) && line.contains("Z "),
            "{line}"
        );
    }
}
