#!/usr/bin/env bash
# One benchmark on a baseline revision and on this checkout, alternating, round after round,
# so both see the same machine (machines here are shared and noisy: compare ratios).
#
#   bench/side_by_side.sh BASE_REV ROUNDS OUT_DIR BENCH_SCRIPT [ARGS...]
#   bench/side_by_side.sh 93bd116 3 /tmp/sbs bench/bench_distributed.py \
#       --limit 10 --partitions-per-run 50 --storage postgres
#
# The baseline runs from a git worktree of BASE_REV with this checkout's virtualenv (its own
# PYTHONPATH: the bench scripts put their repository first). Each run's output goes to
# OUT_DIR/{base,new}_N.out and its rows to OUT_DIR/{base,new}_N.json (--json is added unless
# ARGS give one); the table rows of every run are printed at the end.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,12p "$0"; exit 2; }
base_rev=$1 rounds=$2 out=$3 script=$4
shift 4
here=$(cd "$(dirname "$0")/.." && pwd)
python="$here/.venv/bin/python"
worktree=$(mktemp -d -t falassets-base-XXXXXX)
git -C "$here" worktree add --detach --force "$worktree" "$base_rev" >/dev/null
trap 'git -C "$here" worktree remove --force "$worktree"' EXIT
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  for which in base new; do
    repo=$here
    [ "$which" = base ] && repo=$worktree
    args=("$@")
    [[ " $* " == *" --json "* ]] || args+=(--json "$out/${which}_$round.json")
    echo "$(date +%T) $which $round: $script ${args[*]}" >&2
    (cd "$repo" && "$python" "$script" "${args[@]}") >"$out/${which}_$round.out" 2>&1
  done
done
for file in "$out"/base_*.out "$out"/new_*.out; do
  grep '^| [a-z]' "$file" | grep -v '^| case' | sed "s#^#$(basename "$file" .out) #"
done
