//! Allocator cost with the plain system allocator: the baseline every ratio divides by.
//! See `heapwatch_bench::alloc_cost` for the workload and command line.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() -> std::process::ExitCode {
    heapwatch_bench::alloc_cost::run_cli(|config| match config {
        "system" => Ok(()),
        other => Err(format!(
            "alloc_system knows only the config `system`, not {other:?}"
        )),
    })
}
