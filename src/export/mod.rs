//! Exports: the tracked heap in the formats other tools read, and the server's numbers as
//! Prometheus metrics.
//!
//! - `pprof`: gzipped profile.proto for `go tool pprof`, Pyroscope and friends.
//! - `folded`: folded stacks (`outer;…;inner bytes`) for flame-graph tools.
//! - `flamegraph`: an SVG flame graph of the folded stacks, drawn by `inferno`.
//! - `metrics`: the Prometheus text exposition format.
//!
//! Pure formatting: these take typed values from `memory`, `system` and `trend` and return
//! bytes. `commands::export` decides what to export (locks, baselines, blocking threads)
//! and `http` serves the bytes.

pub mod flamegraph;
pub mod folded;
pub mod metrics;
pub mod pprof;
