//! Logs: tracing, through tracing-appender's non-blocking writer to stdout (the add-on's
//! Log tab) and to a daily-rolling file under `data_dir/logs` (at most [`MAX_LOG_FILES`]),
//! so a bug report can include them. If `data_dir` is not writable, that is logged once
//! and stdout carries on alone. Keep the returned guard alive until exit: dropping it
//! flushes what is buffered.

use std::path::Path;

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

    let (stdout, stdout_guard) = tracing_appender::non_blocking(std::io::stdout());
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
            let (writer, guard) = tracing_appender::non_blocking(appender);
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
        .init();
    (
        LogGuard {
            _stdout: stdout_guard,
            _file: file_guard,
        },
        problem,
    )
}
