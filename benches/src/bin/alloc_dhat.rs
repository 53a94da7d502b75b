//! Allocator cost with dhat-rs (the Rust peer) in heap-profiling mode: every allocation
//! is recorded with a backtrace, as `dhat::Profiler::new_heap()` does. The profile is
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
        if config != "dhat" {
            return Err(format!(
                "alloc_dhat knows only the config `dhat`, not {config:?}"
            ));
        }
        let file =
            std::env::temp_dir().join(format!("heapwatch-bench-dhat-{}.json", std::process::id()));
        let profiler = dhat::Profiler::builder().file_name(&file).build();
        Ok(Profiling {
            profiler: Some(profiler),
            file,
        })
    })
}
