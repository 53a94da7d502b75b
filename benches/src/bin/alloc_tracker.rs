//! Allocator cost with heapwatch's `Tracker` installed, the tracking mode chosen at run
//! time: `off` (counters only), `sampled512k`, `sampled64k`, `exact` (every block, 32
//! frames). See `heapwatch_bench::alloc_cost` for the workload and command line.

use heapwatch_tracker::{self as memory, Mode, TrackingConfig};

#[global_allocator]
static GLOBAL: memory::Tracker = memory::Tracker::new();

/// Frames kept per stack: the add-on's default.
const FRAMES: u32 = 32;

/// Stops tracking when the measurement is over.
struct Session;

impl Drop for Session {
    fn drop(&mut self) {
        memory::stop();
    }
}

fn main() -> std::process::ExitCode {
    heapwatch_bench::alloc_cost::run_cli(|config| {
        let (mode, interval) = match config {
            "off" => return Ok(None),
            "sampled512k" => (Mode::Sampled, 512 * 1024),
            "sampled64k" => (Mode::Sampled, 64 * 1024),
            "exact" => (Mode::Exact, 0),
            other => {
                return Err(format!(
                    "alloc_tracker: unknown config {other:?} (off, sampled512k, sampled64k, exact)"
                ));
            }
        };
        let started = memory::start(TrackingConfig {
            mode,
            frames: FRAMES,
            sample_interval_bytes: interval,
            seed: None,
        })
        .map_err(|e| e.to_string())?;
        if !started {
            return Err("tracking was already on".into());
        }
        Ok(Some(Session))
    })
}
