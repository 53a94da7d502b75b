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
