#!/usr/bin/env bash
# Heapwatch's benchmarks, one command: builds the add-on's release binary and the bench
# binaries, runs them interleaved and repeated, and writes the results into BENCHMARKS.md.
#   bash benches/run.sh            # the full run (about 6 minutes on 2 cores)
#   bash benches/run.sh --quick    # fewer repetitions, to try things out
#   bash benches/run.sh --only alloc,load,snapshot,size,accuracy [--no-write]
# These are benchmarks, not tests: nothing fails on a number.
set -euo pipefail
cd "$(dirname "$0")/.."
# The add-on's binary as the image ships it (static, compressed line tables).
bash .ci/build-static
# From inside benches/, so its .cargo/config.toml (target dir target/bench) applies.
(cd benches && cargo build --release)
exec target/bench/release/driver "$@"
