//! Allocator cost with dhat-rs (the Rust peer) in heap-profiling mode: every allocation
//! is recorded with a backtrace, as `dhat::Profiler::new_heap()` does. Config `dhat`
//! keeps dhat's default of 10 frames per backtrace; `dhat32` keeps 32, the depth of
//! heapwatch's exact mode in these benchmarks (dhat's walk stops at the frames it keeps). The profile is
//! written to a temporary file and removed. See `heapwatch_bench::alloc_cost` for the
//! workload and command line.

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

/// Holds the profiler while measuring; removes its output file afterwards.
struct Profiling {
    profiler: Option<dhat::Profiler>,
    file: std::path::PathBuf,
}

impl Drop for Profiling {
    fn drop(&mut self) {
        // Dropping the profiler writes the file (and prints a summary on stderr).
        drop(self.profiler.take());
        let _ = std::fs::remove_file(&self.file);
    }
}

fn main() -> std::process::ExitCode {
    heapwatch_bench::alloc_cost::run_cli(|config| {
        let frames = match config {
            "dhat" => 10,
            "dhat32" => 32,
            other => {
                return Err(format!(
                    "alloc_dhat knows the configs `dhat` and `dhat32`, not {other:?}"
                ));
            }
        };
        let file =
            std::env::temp_dir().join(format!("heapwatch-bench-dhat-{}.json", std::process::id()));
        let profiler = dhat::Profiler::builder()
            .file_name(&file)
            .trim_backtraces(Some(frames))
            .build();
        Ok(Profiling {
            profiler: Some(profiler),
            file,
        })
    })
}
