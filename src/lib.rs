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
//! - [`host`]: every add-on's, Core's and the Supervisor's memory through the Supervisor,
//!   and which of them keeps growing.
//! - [`heap`]: the server's baselines and symbolizing lock beside the tracker.
//! - [`limits`], [`gate`]: every bound the server keeps; the token check.
//! - [`healthcheck`]: the `heapwatch healthcheck` client (`GET /healthz` over loopback).
#![deny(unsafe_code)]

pub mod app;
pub mod commands;
pub mod export;
pub mod gate;
pub mod healthcheck;
pub mod heap;
pub mod host;
pub mod http;
pub mod limits;
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
