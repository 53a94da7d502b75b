//! Shared pieces of Heapwatch's benchmarks: the allocation workload every allocator binary
//! runs, small statistics helpers, and /proc readers.
//!
//! The binaries in `src/bin/` each install one `#[global_allocator]` (a process has
//! exactly one): `alloc_system` (plain `System`), `alloc_tracker` (heapwatch's `Tracker`,
//! tracking mode chosen at run time), `alloc_dhat` (`dhat::Alloc` in heap-profiling
//! mode), `snapshot_cost` and `sampling_accuracy` (the tracker at scale). `driver` runs
//! them interleaved and repeated, drives the real add-on binary under load, and writes
//! the medians and ratios into BENCHMARKS.md. Nothing here installs an allocator.

pub mod alloc_cost;
pub mod load;
pub mod procfs;
pub mod stats;
