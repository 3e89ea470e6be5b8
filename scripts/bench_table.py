#!/usr/bin/env python3
"""Prints the GEMM criterion results as a Markdown table (medians, GFLOP/s).

Run after `cargo bench --bench gemm`. Reads target/criterion/<group>/<function>/<shape>/new/
{estimates,benchmark}.json; GFLOP/s = 2·m·n·k / median time.
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"


def median_ns(path):
    with open(os.path.join(path, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]


def throughput(path):
    with open(os.path.join(path, "new", "benchmark.json")) as f:
        t = json.load(f).get("throughput") or {}
    return t.get("Elements") or t.get("elements")


peak = None
peak_dir = os.path.join(root, "fma_peak")
if os.path.isdir(peak_dir):
    for isa in os.listdir(peak_dir):
        p = os.path.join(peak_dir, isa)
        if os.path.exists(os.path.join(p, "new", "estimates.json")):
            peak = throughput(p) / median_ns(p)
            print(f"FMA peak ({isa}, one core): {peak:.1f} GFLOP/s\n")

print("| group | m×k×n | ours 1t | ours 2t | matrixmultiply | ours/mm (1t) | 2t/1t | % of peak (1t) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for group in ["gemm_square", "gemm_mlp", "gemm_wgrad", "gemm_abt"]:
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        continue
    shapes = sorted(os.listdir(os.path.join(gdir, "ours_1t")),
                    key=lambda s: [int(x) for x in s.split("x")])
    for shape in shapes:
        g = {}
        for fn in ["ours_1t", "ours_2t", "matrixmultiply"]:
            p = os.path.join(gdir, fn, shape)
            if os.path.exists(os.path.join(p, "new", "estimates.json")):
                g[fn] = throughput(p) / median_ns(p)
        if len(g) < 3:
            continue
        pct = f"{100 * g['ours_1t'] / peak:.0f} %" if peak else "–"
        print(f"| {group} | {shape.replace('x', '×')} | {g['ours_1t']:.1f} | {g['ours_2t']:.1f} | "
              f"{g['matrixmultiply']:.1f} | {g['ours_1t'] / g['matrixmultiply']:.2f} | "
              f"{g['ours_2t'] / g['ours_1t']:.2f} | {pct} |")


# Fused kernels (benches/fused.rs): fused vs unfused vs the bare GEMM.
fused_rows = []
for group in ["fused_forward", "fused_delta"]:
    gdir = os.path.join(root, group)
    if not os.path.isdir(os.path.join(gdir, "fused")):
        continue
    for shape in sorted(os.listdir(os.path.join(gdir, "fused")),
                        key=lambda s: [int(x) for x in s.split("x")]):
        t = {}
        for fn in ["fused", "unfused", "bare"]:
            p = os.path.join(gdir, fn, shape)
            if os.path.exists(os.path.join(p, "new", "estimates.json")):
                t[fn] = median_ns(p)
        if len(t) == 3:
            fused_rows.append((group, shape, t))
if fused_rows:
    print("\n| kernel | m×k×n | fused µs | unfused µs | bare GEMM µs | unfused/fused | epilogue overhead |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for group, shape, t in fused_rows:
        print(f"| {group} | {shape.replace('x', '×')} | {t['fused'] / 1e3:.1f} | {t['unfused'] / 1e3:.1f} | "
              f"{t['bare'] / 1e3:.1f} | {t['unfused'] / t['fused']:.2f} | "
              f"{100 * (t['fused'] / t['bare'] - 1):+.1f} % |")
