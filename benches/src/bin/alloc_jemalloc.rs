//! Allocator cost with plain jemalloc (`tikv-jemallocator`, built without profiling): the
//! baseline of jemalloc's own profiler (`jemalloc-prof/`). See
//! `heapwatch_bench::alloc_cost` for the workload and command line.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    heapwatch_bench::alloc_cost::run_cli(|config| match config {
        "jemalloc" => Ok(()),
        other => Err(format!(
            "alloc_jemalloc knows only the config `jemalloc`, not {other:?}"
        )),
    })
}
