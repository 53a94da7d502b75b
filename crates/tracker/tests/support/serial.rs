//! Tracking is process-wide: tests in one file that start and stop it take turns. Under
//! nextest each test is its own process anyway; under `cargo test` they share one.

use std::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the turn until dropped (a test that failed does not poison it for the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `attempt` until one run sees no other thread's allocations (a quiet window):
/// under nextest each test has the process to itself and the first attempt passes; under
/// `cargo test` the harness thread may allocate in between.
#[allow(dead_code)] // not every file that takes turns needs it
pub fn in_quiet_window(attempt: impl Fn() -> Result<(), String>) {
    let mut errors = Vec::new();
    for _ in 0..20 {
        match attempt() {
            Ok(()) => return,
            Err(e) => errors.push(e),
        }
    }
    panic!("never a clean window: {errors:#?}");
}
