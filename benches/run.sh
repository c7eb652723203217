#!/usr/bin/env bash
# One full benchmark run, as BENCHMARKS.md reports it: the corpus (built
# once), every benchmark in one go, then the tables and the plot.
#
#   sudo benches/run.sh          # about 25 minutes on 2 cores
#
# Writes target/bench-report/{machine.txt,criterion.txt,memory.txt,tables.md}
# and docs/bench-lookup-depth.png (when matplotlib is installed). Needs
# root, umoci, gzip, zstd, and debootstrap for the Debian corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
report=$target/bench-report
mkdir -p "$report"

benches/corpus.sh

{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "kernel: $(uname -r)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
    echo "disk: $(findmnt -no FSTYPE -T "$target") under $target"
    echo "rustc: $(rustc --version)"
    echo "umoci: $(umoci --version)"
    echo "tar: $(tar --version | head -1)"
    echo "gzip: $(gzip --version | head -1)"
    echo "zstd: $(zstd --version)"
    echo "vfs crate: $(cargo tree -e dev --depth 1 2>/dev/null | grep -o 'vfs v[0-9.]*' | head -1)"
} >"$report/machine.txt"
cat "$report/machine.txt"

cargo bench --all-features --bench lookup --bench concurrent --bench peers --bench commands --bench registry 2>&1 |
    tee "$report/criterion.txt"
cargo bench --all-features --bench memory 2>/dev/null | tee "$report/memory.txt"
python3 benches/report.py "$target" | tee "$report/tables.md"
