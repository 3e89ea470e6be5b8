#!/usr/bin/env bash
# Times this checkout against an older revision on the same machine in one run.
#
#   scripts/compare_rev.sh REV [ROUNDS] [FILTER]
#
# Builds the timing driver in scripts/compare/ twice, against the working tree
# and against REV (checked out in a temporary worktree), then runs the two
# binaries alternately ROUNDS times (default 3) so that machine noise hits both
# alike, and prints each case's median over the rounds, the ratio of the
# medians new/old, and the median of the rounds' own new/old ratios with its
# quartiles (on a noisy host, many short rounds and the last columns are the
# better measure). BACKPROP_ISA and BACKPROP_NUM_THREADS pass through to both;
# COMPARE_QUICK=1 gives each case 0.3 s instead of 1.5 s per round. Run nothing
# else on the machine meanwhile.
set -euo pipefail
rev=${1:?usage: scripts/compare_rev.sh REV [ROUNDS] [FILTER]}
rounds=${2:-3}
filter=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/old" "$rev" >/dev/null 2>&1

build() { # $1 = crate checkout, $2 = name; prints the binary's path
    local dir="$work/driver-$2"
    mkdir -p "$dir"
    cp -r "$root/scripts/compare/src" "$dir/"
    sed "s|path = \"../..\"|path = \"$1\"|" "$root/scripts/compare/Cargo.toml" > "$dir/Cargo.toml"
    CARGO_TARGET_DIR="$root/target/compare-$2" cargo build -q --release --manifest-path "$dir/Cargo.toml" >&2
    echo "$root/target/compare-$2/release/backprop-compare"
}
old_bin=$(build "$work/old" old)
new_bin=$(build "$root" new)

for r in $(seq "$rounds"); do
    echo "round $r/$rounds" >&2
    "$old_bin" ${COMPARE_QUICK:+--quick} ${filter:+"$filter"} | sed 's/^/old\t/' >> "$work/times"
    "$new_bin" ${COMPARE_QUICK:+--quick} ${filter:+"$filter"} | sed 's/^/new\t/' >> "$work/times"
done
python3 - "$work/times" "$rev" <<'PY'
import sys, statistics, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, name, secs = line.rstrip("\n").split("\t")
    t[(side, name)].append(float(secs))
names = list(dict.fromkeys(n for (_, n) in t))
print(f"| case | {sys.argv[2][:10]} (µs) | this tree (µs) | new/old | per round: median (q1–q3) |")
print("|---|---:|---:|---:|---|")
for n in names:
    old, new = t[("old", n)], t[("new", n)]
    o, w = statistics.median(old), statistics.median(new)
    r = sorted(b / a for a, b in zip(old, new))
    q = lambda f: r[min(len(r) - 1, int(f * len(r)))]
    print(f"| {n} | {o*1e6:.1f} | {w*1e6:.1f} | {w/o:.2f} | {q(0.5):.3f} ({q(0.25):.3f}–{q(0.75):.3f}) |")
PY
