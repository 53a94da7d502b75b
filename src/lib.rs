//! Heapwatch: what is eating this process's memory?
//!
//! Module map:
//! - [`memory`]: the allocation tracker (global allocator, stacks, snapshots, baselines),
//!   re-exported from the `heapwatch-tracker` crate.
//! - [`system`]: process, host and cgroup memory from `sysinfo` and the kernel.
//! - [`settings`]: typed settings from defaults, the options file and the environment.
//! - [`logging`]: tracing to stdout and a rolling file.
//! - [`commands`]: the command registry and handlers (the typed API transports call).
//! - [`ws`]: the WebSocket protocol and sessions.
//! - [`http`]: listeners, routing, authentication, the panel.
//! - [`app`]: binds listeners, runs tasks, shuts down.
//! - [`trend`]: the always-on RSS/heap history, checkpoints and the leak-trend verdict.
//! - [`export`]: pprof, folded stacks, flame graphs and Prometheus metrics.
#![deny(unsafe_code)]

pub mod app;
pub mod commands;
pub mod export;
pub mod http;
pub mod logging;
pub mod settings;
pub mod system;
pub mod trend;
pub mod ws;

/// The allocation tracker, a crate of its own (`crates/tracker`), under its old path so
/// `crate::memory::…` and `heapwatch::memory::…` keep working.
pub use heapwatch_tracker as memory;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
