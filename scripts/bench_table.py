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


# Training steps (benches/train.rs): the named networks and the K×L grid with
# the fitted exponents of step time in K and L (least squares on log–log).
import math

named_dir = os.path.join(root, "train_named")
if os.path.isdir(named_dir):
    print("\n| network | threads | ms/step | steps/s | GFLOP/s (6·B·ΣK²) |")
    print("|---|---:|---:|---:|---:|")
    for th in sorted(os.listdir(named_dir)):
        for name in sorted(os.listdir(os.path.join(named_dir, th))):
            p = os.path.join(named_dir, th, name)
            if not os.path.exists(os.path.join(p, "new", "estimates.json")):
                continue
            ns = median_ns(p)
            print(f"| {name} | {th} | {ns / 1e6:.3f} | {1e9 / ns:.0f} | {throughput(p) / ns:.1f} |")

grid_dir = os.path.join(root, "train_grid")
if os.path.isdir(grid_dir):
    for th in sorted(os.listdir(grid_dir)):
        pts = []
        for name in os.listdir(os.path.join(grid_dir, th)):
            p = os.path.join(grid_dir, th, name)
            if not os.path.exists(os.path.join(p, "new", "estimates.json")):
                continue
            k, l = name[1:].split("_L")
            pts.append((int(k), int(l), median_ns(p) / 1e6, throughput(p) / median_ns(p)))
        if not pts:
            continue
        ks = sorted({p[0] for p in pts})
        ls = sorted({p[1] for p in pts})
        print(f"\nTraining step, batch 256, {th}: ms per step (GFLOP/s)\n")
        print("| K \\ L | " + " | ".join(str(l) for l in ls) + " |")
        print("|---|" + "---:|" * len(ls))
        for k in ks:
            row = []
            for l in ls:
                m = [p for p in pts if p[0] == k and p[1] == l]
                row.append(f"{m[0][2]:.2f} ({m[0][3]:.0f})" if m else "–")
            print(f"| {k} | " + " | ".join(row) + " |")
        # log t = a + b·log K + c·log L, fitted on K ≥ 256 (smaller steps are
        # dominated by fixed per-call costs, not by the O(K²L) work).
        fit = [p for p in pts if p[0] >= 256]
        rows = [(1.0, math.log(k), math.log(l), math.log(t)) for k, l, t, _ in fit]
        # Normal equations for 3 unknowns.
        ata = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
        atb = [sum(r[i] * r[3] for r in rows) for i in range(3)]
        def solve(a, b):
            n = len(b)
            m = [a[i][:] + [b[i]] for i in range(n)]
            for c in range(n):
                piv = max(range(c, n), key=lambda r: abs(m[r][c]))
                m[c], m[piv] = m[piv], m[c]
                for r in range(n):
                    if r != c:
                        f = m[r][c] / m[c][c]
                        m[r] = [x - f * y for x, y in zip(m[r], m[c])]
            return [m[i][n] / m[i][i] for i in range(n)]
        a, b, c = solve(ata, atb)
        print(f"\nFitted: step time ∝ K^{b:.2f} · L^{c:.2f} (K ≥ 256; O(K²L) predicts 2 and 1)")
