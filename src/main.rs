//! The `heapwatch` binary: parse the command line, load settings (a bad options file exits
//! 78 before any port is bound), start allocation tracking when the settings ask for it
//! (before logging, the runtime and the server allocate anything), start logging, run the
//! app until SIGTERM or SIGINT.
//! `heapwatch healthcheck` instead asks a running server for `/healthz` (the image's
//! HEALTHCHECK; see `heapwatch::healthcheck`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use heapwatch::app::{self, Limits};
use heapwatch::heap::tracking_config;
use heapwatch::settings::{DEFAULT_OPTIONS_PATH, OptionsSource, Settings};

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

/// Exit status for a configuration error (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// Heapwatch: what is eating this process's memory?
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The options file the Supervisor writes [default: /data/options.json, or
    /// ./data/options.json with --dev].
    #[arg(long, value_name = "PATH", global = true)]
    options: Option<PathBuf>,
    /// Run on your own machine: ingress on 127.0.0.1:8099 with loopback trusted as the
    /// ingress proxy, data under ./data.
    #[arg(long, global = true)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the server started with the same options answers `GET /healthz` on its
    /// ingress port (over loopback): exit 0 if it does, 1 if not, within 2 s.
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = cli.options.clone().unwrap_or_else(|| {
        PathBuf::from(if cli.dev {
            "./data/options.json"
        } else {
            DEFAULT_OPTIONS_PATH
        })
    });
    let loaded = if cli.dev {
        Settings::load_dev(&options)
    } else {
        Settings::load(&options)
    };
    if let Some(Command::Healthcheck) = cli.command {
        return healthcheck(loaded.map(|(settings, _)| settings));
    }
    let (settings, source) = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("heapwatch: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Tracking from boot starts here, before the server's own start-up allocations (the
    // logger, the runtime, the listeners, the trend's history); only the command line
    // and the settings were allocated before it. The result is dropped on purpose:
    // nothing else can have started a session yet, and `app::build_server` starts it
    // again with the same settings, which returns the outcome (a failure included) to log.
    if settings.debug_memory {
        let _ = heapwatch::memory::start(tracking_config(&settings));
    }
    let (_log_guard, log_problem) =
        heapwatch::logging::init(settings.log_level, &settings.data_dir);
    if let Some(problem) = log_problem {
        tracing::warn!("{problem}");
    }
    if !settings.ignored_env.is_empty() {
        let known: Vec<String> = heapwatch::settings::KEYS
            .iter()
            .map(|k| format!("HEAPWATCH_{}", k.name.to_ascii_uppercase()))
            .collect();
        for name in &settings.ignored_env {
            tracing::warn!(
                "ignoring environment variable {name}: Heapwatch has no such setting (known: {})",
                known.join(", ")
            );
        }
    }
    match source {
        OptionsSource::File(p) => tracing::info!(path = %p.display(), "options loaded"),
        OptionsSource::Missing(p) => {
            tracing::info!(path = %p.display(), "no options file; using defaults")
        }
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "heapwatch starting");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let dev = cli.dev;
    let result = runtime.block_on(async move {
        let listeners = app::bind(&settings).await?;
        if dev {
            let addr = listeners
                .ingress
                .local_addr()
                .map_err(app::AppError::LocalAddr)?;
            println!("Heapwatch is running: open http://{addr}/ (Ctrl-C stops it)");
        }
        app::run(
            settings,
            listeners,
            Limits::default(),
            app::shutdown_signal(),
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: the log (stdout, the add-on's Log tab, and the log file) has it.
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `heapwatch healthcheck`: Docker reads 0 as healthy and 1 as unhealthy (2 is reserved),
/// so an unreadable options file is 1 too, with the reason on stderr (the health log).
fn healthcheck(loaded: Result<Settings, heapwatch::settings::SettingsError>) -> ExitCode {
    use heapwatch::healthcheck::{DEADLINE, check, target};
    let settings = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("heapwatch healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = target(&settings);
    match check(addr, DEADLINE) {
        Ok(()) => {
            println!("healthy: http://{addr}/healthz answered 200");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("heapwatch healthcheck: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}
