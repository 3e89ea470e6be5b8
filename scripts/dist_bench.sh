#!/usr/bin/env bash
# Data-parallel MNIST benchmark: one process × 2 threads against 2 MPI ranks
# × 1 thread (exchanging through shared segments, the default on one node;
# in messages over shared memory with and without the background gradient
# exchange; in messages over TCP), in alternating rounds: the host is shared
# and noisy, so
# only ratios taken in one run mean anything. Prints each round and the
# medians.
#
#   scripts/dist_bench.sh [ROUNDS] [extra train flags...]
#
# Needs Open MPI and a build with `--features mpi` (the script builds it).
# The MNIST files are read from ../shared/data/mnist (override with MNIST=DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
shift || true
mnist=${MNIST:-../shared/data/mnist}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo build -q --release --features mpi --example train
train=target/release/examples/train
common=(--data "mnist:$mnist" --layers 784,512,512,10 --opt adam --lr 1e-3 --batch 128
    --epochs 1 --json "$@")
ranks=(--threads 1 --shards 2)
names=("1 process × 2 threads" "2 ranks, shared segments" "2 ranks, messages over shared memory"
    "2 ranks, messages over shared memory, --no-overlap" "2 ranks, messages over TCP")
run() {
    case $1 in
    0) "$train" "${common[@]}" --threads 2 ;;
    1) mpirun --oversubscribe --mca btl vader,self -np 2 "$train" "${common[@]}" "${ranks[@]}" ;;
    2) mpirun --oversubscribe --mca btl vader,self -np 2 "$train" "${common[@]}" "${ranks[@]}" \
        --no-shared-memory ;;
    3) mpirun --oversubscribe --mca btl vader,self -np 2 "$train" "${common[@]}" "${ranks[@]}" \
        --no-shared-memory --no-overlap ;;
    4) mpirun --oversubscribe --mca btl tcp,self -np 2 "$train" "${common[@]}" "${ranks[@]}" \
        --no-shared-memory ;;
    esac 2>/dev/null | tail -n 1
}
field() { grep -o "\"$1\":[0-9.e+-]*" | head -n 1 | cut -d: -f2; }
out=$(mktemp)
for r in $(seq 1 "$rounds"); do
    line="round $r:"
    for c in 0 1 2 3 4; do
        j=$(run $c)
        s=$(field seconds <<<"$j")
        w=$(field comm_seconds <<<"$j" || true)
        b=$(field comm_background_seconds <<<"$j" || true)
        echo "$r $c $s ${w:-0} ${b:-0}" >>"$out"
        line+=$(printf ' %.3f' "$s")
        [ "$c" = 0 ] || line+=$(printf ' (blocked %.3f, background %.3f)' "${w:-0}" "${b:-0}")
        line+=" |"
    done
    echo "$line"
done
python3 - "$out" "${names[@]}" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
names = sys.argv[2:]
by = {}
for r, c, s, w, b in rows:
    by.setdefault(int(c), {})[int(r)] = (float(s), float(w), float(b))
base = by[0]
for c, name in enumerate(names):
    runs = by[c]
    m = st.median
    sec = m(v[0] for v in runs.values())
    ratio = m(runs[r][0] / base[r][0] for r in runs)
    extra = "" if c == 0 else (f", blocked on communication {m(v[1] for v in runs.values()):.3f} s"
                               f", background exchange {m(v[2] for v in runs.values()):.3f} s")
    print(f"{name}: median epoch {sec:.3f} s, {ratio:.2f}× the first row (median of per-round ratios){extra}")
PY
rm -f "$out"
