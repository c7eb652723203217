#!/usr/bin/env python3
"""Turns one run's criterion results into the tables of BENCHMARKS.md.

Reads target/criterion/<group>/<id>/new/estimates.json (medians) and the
memory bench's output, prints Markdown tables with ratios, and, when
matplotlib is installed, draws the lookup depth curve into
docs/bench-lookup-depth.png. Usage: benches/report.py [TARGET_DIR]
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
CRITERION = os.path.join(TARGET, "criterion")
PLOT = os.path.join(HERE, "..", "docs", "bench-lookup-depth.png")


def median(*parts):
    """The median time of one benchmark in ns, or None if it did not run."""
    path = os.path.join(CRITERION, *parts, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except OSError:
        return None


def human(ns):
    if ns is None:
        return "not run"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def ratio(a, b):
    """How many times a is faster than b (b / a)."""
    if a is None or b is None:
        return "–"
    r = b / a
    if r >= 10_000:
        return f"{r:,.0f}×"
    return f"{r:.0f}×" if r >= 100 else f"{r:.2f}×"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def lookup_paths():
    try:
        with open(os.path.join(CRITERION, "lookup", "mem", "1", "new",
                               "benchmark.json")) as f:
            return json.load(f)["throughput"]["Elements"]
    except (OSError, KeyError, TypeError):
        return None


def lookups():
    n = lookup_paths()
    impls = ["mem", "disk", "vfs", "kernel"]
    rows, curve = [], {i: [] for i in impls}
    for depth in (1, 8, 64):
        per = {i: median("lookup", i, str(depth)) for i in impls}
        per = {i: (v / n if v is not None and n else None) for i, v in per.items()}
        for i in impls:
            curve[i].append((depth, per[i]))
        rows.append([str(depth)] + [human(per[i]) for i in impls] + [
            ratio(per["mem"], per["vfs"]),
            ratio(per["disk"], per["kernel"]),
        ])
    mem1 = median("lookup", "mem", "1")
    mem64 = median("lookup", "mem", "64")
    flat = f"{mem64 / mem1:.2f}×" if mem1 and mem64 else "–"
    print(f"### Lookups ({n} paths per pass; time per path)\n")
    print(table(["layers", "mem", "disk", "vfs", "kernel", "mem vs vfs",
                 "disk vs kernel"], rows))
    print(f"\nmem at 64 layers costs {flat} of mem at 1 layer.\n")
    rows = []
    for depth in (1, 8, 64, 512):
        rows.append([str(depth), human(median("lookup_synthetic", "existing", str(depth))),
                     human(median("lookup_synthetic", "missing", str(depth)))])
    print("One path in the bottom layer of a synthetic stack (`benches/lookup.rs`):\n")
    print(table(["layers", "existing", "missing"], rows))
    print()
    plot(curve)


def plot(curve):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)\n")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    labels = {"mem": "layerstack, memory", "disk": "layerstack, disk",
              "vfs": "vfs crate OverlayFS", "kernel": "kernel overlayfs (lstat)"}
    for impl, points in curve.items():
        pts = [(d, v) for d, v in points if v is not None]
        if pts:
            ax.plot([d for d, _ in pts], [v for _, v in pts], marker="o",
                    label=labels[impl])
    synthetic = [(d, median("lookup_synthetic", "existing", str(d)))
                 for d in (1, 8, 64, 512)]
    synthetic = [(d, v) for d, v in synthetic if v is not None]
    if synthetic:
        ax.plot([d for d, _ in synthetic], [v for _, v in synthetic],
                marker="s", linestyle="--",
                label="layerstack, memory (one path, to 512 layers)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([1, 8, 64, 512], ["1", "8", "64", "512"])
    ax.set_xlabel("layers")
    ax.set_ylabel("ns per lookup (median)")
    ax.set_title("stat of a path in a warm view (Debian rootfs; synthetic to 512)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(PLOT), exist_ok=True)
    fig.savefig(PLOT)
    print(f"(plot written to docs/{os.path.basename(PLOT)})\n")


def first_write():
    impls = ["mem", "disk", "vfs", "kernel"]
    rows = []
    for size in ("4KiB", "1GiB"):
        t = {i: median("first_write", i, size) for i in impls}
        rows.append([size] + [human(t[i]) for i in impls] + [
            ratio(t["mem"], t["vfs"]), ratio(t["mem"], t["kernel"]),
            ratio(t["disk"], t["kernel"])])
    print("### First 1-byte write to a lower file\n")
    print(table(["file", "mem", "disk", "vfs", "kernel", "mem vs vfs",
                 "mem vs kernel", "disk vs kernel"], rows))
    print()


def listing():
    # criterion names a function id "a/b" a/b's directory "a_b".
    t = {k: median("listing_90k", k.replace("/", "_")) for k in (
        "mem/cold", "mem/warm", "mem_lent/cold", "mem_lent/warm",
        "disk/cold", "disk/warm", "vfs", "kernel/cold", "kernel/warm")}
    rows = [
        [when, human(t[f"mem/{when}"]), human(t[f"mem_lent/{when}"]),
         human(t[f"disk/{when}"]), human(t["vfs"]), human(t[f"kernel/{when}"]),
         ratio(t[f"mem/{when}"], t["vfs"]),
         ratio(t[f"mem_lent/{when}"], t["vfs"]),
         ratio(t[f"disk/{when}"], t[f"kernel/{when}"])]
        for when in ("cold", "warm")
    ]
    print("### Merged listing of 90,000 names over 10 layers\n")
    print(table(["", "mem (`read_dir`)", "mem (`list_dir`)", "disk",
                 "vfs (no cache)", "kernel", "`read_dir` vs vfs",
                 "`list_dir` vs vfs", "disk vs kernel"], rows))
    print()
    m = {k: median("listing_90k_mixed", k.replace("/", "_")) for k in (
        "mem/cold", "mem_lent/cold", "vfs")}
    print("The same, names of neighbouring layers interleaved (first listing):\n")
    print(table(["mem (`read_dir`)", "mem (`list_dir`)", "vfs",
                 "`read_dir` vs vfs", "`list_dir` vs vfs"],
                [[human(m["mem/cold"]), human(m["mem_lent/cold"]),
                  human(m["vfs"]), ratio(m["mem/cold"], m["vfs"]),
                  ratio(m["mem_lent/cold"], m["vfs"])]]))
    print()


def flatten():
    ids = [("layerstack_unpack", "`layerstack unpack`"),
           ("layerstack_unpack_first",
            "`layerstack unpack`, the first (no layer records)"),
           ("umoci_unpack", "`umoci unpack`"),
           ("tar_xzf_in_order", "`tar -xzf` of each layer, in order"),
           ("kernel_mount_cp_a", "kernel mount + `cp -a`"),
           ("inflate_layers_in_parallel",
            "only inflating the layers, in parallel (the floor)")]
    ours = median("flatten", "layerstack_unpack")
    rows = [[name, human(median("flatten", i)),
             ratio(ours, median("flatten", i))] for i, name in ids]
    print("### Flatten the image into a directory\n")
    print(table(["command", "median", "layerstack is faster by"], rows))
    print()


def export():
    rows = []
    for comp in ("gzip", "zstd"):
        ours = median("export_digest", f"{comp}_layerstack")
        pipe = median("export_digest", f"{comp}_pipeline")
        both = median("export_digest", f"{comp}_pipeline_with_diffid")
        rows.append([comp, human(ours), human(pipe), human(both),
                     ratio(ours, pipe), ratio(ours, both)])
    print("### Export + digest of the root filesystem as one layer\n")
    # A `|` inside a table cell must be escaped, even in code.
    print(table(["compression", "layerstack (digest + DiffID)",
                 "`tar -c \\| C \\| sha256sum`",
                 "the same with `tee` to a 2nd `sha256sum`",
                 "layerstack vs pipeline", "vs pipeline with DiffID"], rows))
    print()


def concurrent():
    """Throughput of readers on 1, 2 and 4 threads, and 2 threads over 1."""
    rows = []
    for case in ("mem_metadata", "mem_read", "disk_metadata", "disk_read"):
        try:
            with open(os.path.join(CRITERION, "concurrent_reads", case, "1", "new",
                                   "benchmark.json")) as f:
                ops = json.load(f)["throughput"]["Elements"]
        except OSError:
            continue
        per_s = [None if t is None else ops * 1e9 / t
                 for t in (median("concurrent_reads", case, str(n)) for n in (1, 2, 4))]
        cells = [f"{r:,.0f}/s" if r else "not run" for r in per_s]
        two = f"{per_s[1] / per_s[0]:.2f}×" if per_s[0] and per_s[1] else "–"
        rows.append([case] + cells + [two])
    if not rows:
        return
    print("### Concurrent readers (throughput; 2 : 1 is two threads over one)\n")
    print(table(["case", "1 thread", "2 threads", "4 threads", "2 : 1"], rows))
    print()


def memory():
    path = os.path.join(TARGET, "bench-report", "memory.txt")
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return
    print("### Memory\n")
    print("```\n" + text + "\n```\n")


if __name__ == "__main__":
    lookups()
    concurrent()
    first_write()
    listing()
    flatten()
    export()
    memory()
