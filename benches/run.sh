#!/usr/bin/env bash
# Heapwatch's benchmarks, one command: builds the add-on's release binary and the bench
# binaries, runs them interleaved and repeated, and writes the results into BENCHMARKS.md.
#   bash benches/run.sh            # the full run (about 12 minutes on 2 cores)
#   bash benches/run.sh --quick    # fewer repetitions, to try things out
#   bash benches/run.sh --only alloc,load,snapshot,size,accuracy [--no-write]
# These are benchmarks, not tests: nothing fails on a number.
set -euo pipefail
cd "$(dirname "$0")/.."
# The add-on's binary as the image ships it (static, compressed line tables).
bash .ci/build-static
# From inside benches/, so its .cargo/config.toml (target dir target/bench) applies.
(cd benches && cargo build --release)
# jemalloc with its profiler built in: a package of its own, built by a cargo invocation of
# its own, so its `profiling` feature does not unify into the plain jemalloc above.
(cd benches/jemalloc-prof && cargo build --release)
# The allocation-cost section also runs heaptrack (Debian package `heaptrack`) and stops
# with an error without it; the other sections do not need it.
command -v heaptrack >/dev/null || echo "heaptrack is not installed (apt-get install heaptrack): the alloc section will fail" >&2
exec target/bench/release/driver "$@"
