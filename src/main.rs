//! The `heapwatch` binary.

#[global_allocator]
static GLOBAL: heapwatch::memory::Tracker = heapwatch::memory::Tracker::new();

fn main() {}
