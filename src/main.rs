//! The `heapwatch` binary.

fn main() {}
