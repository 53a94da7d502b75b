//! Allocator cost with jemalloc built with its heap profiler. Whether it profiles is set
//! when jemalloc starts, from the `_RJEM_MALLOC_CONF` environment variable (the prefixed
//! name `tikv-jemalloc-sys` gives `MALLOC_CONF`), so the driver sets it and the config
//! argument says what it set: `off` (profiling compiled in, not enabled) or `prof512k`
//! (`prof:true,prof_active:true,lg_prof_sample:19`: a sample every 512 KiB on average,
//! like heapwatch's default). See `heapwatch_bench::alloc_cost` for the workload.

#[path = "../../../src/alloc_cost.rs"]
mod alloc_cost;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What each config expects in `_RJEM_MALLOC_CONF`.
const CONFIGS: [(&str, &str); 2] = [
    ("off", ""),
    ("prof512k", "prof:true,prof_active:true,lg_prof_sample:19"),
];

fn main() -> std::process::ExitCode {
    alloc_cost::run_cli(|config| {
        let set = std::env::var("_RJEM_MALLOC_CONF").unwrap_or_default();
        match CONFIGS.iter().find(|(name, _)| *name == config) {
            Some((_, want)) if *want == set => Ok(()),
            Some((_, want)) => Err(format!(
                "alloc_jemalloc_prof {config}: _RJEM_MALLOC_CONF is {set:?}, want {want:?}"
            )),
            None => Err(format!(
                "alloc_jemalloc_prof: unknown config {config:?} (off, prof512k)"
            )),
        }
    })
}
