#!/usr/bin/env bash
# Times the word count of CORPUS by mapreduce-rs (examples/wordcount, 2 workers, 2 reducers),
# renoir-wordcount and timely-wordcount, each as a whole process, best of $RUNS (3), and
# prints one markdown table row per contender. Then checks that the three outputs agree.
#
# usage: benches/external/compare.sh CORPUS
# env:   RUNS (3); MAIN_BIN (mapreduce-rs's wordcount example, default
#        ${CARGO_TARGET_DIR:-<repo>/target}/release/examples/wordcount); EXTERNAL_BIN_DIR
#        (default ${CARGO_TARGET_DIR:-benches/external/target}/release); SCRATCH (outputs, default /tmp)
set -euo pipefail

corpus=${1:?usage: compare.sh CORPUS}
[[ -f $corpus ]] || { echo "compare.sh: no file $corpus" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=${RUNS:-3}
main_bin=${MAIN_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/examples/wordcount}
ext_dir=${EXTERNAL_BIN_DIR:-${CARGO_TARGET_DIR:-$here/target}/release}
for bin in "$main_bin" "$ext_dir/renoir-wordcount" "$ext_dir/timely-wordcount"; do
    [[ -x $bin ]] || { echo "compare.sh: $bin is not built (see benches/external/README.md)" >&2; exit 1; }
done
work=$(mktemp -d "${SCRATCH:-/tmp}/compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
bytes=$(stat -c %s "$corpus")

# time NAME COMMAND...: runs COMMAND $runs times (output and log in $work), prints a table row.
time_runs() {
    local name=$1 best="" all=() start end t
    shift
    for _ in $(seq "$runs"); do
        rm -rf "$work/out"
        start=$(date +%s.%N)
        "$@" > "$work/log" 2>&1 || { echo "compare.sh: $name failed:" >&2; tail -20 "$work/log" >&2; exit 1; }
        end=$(date +%s.%N)
        t=$(echo "$end - $start" | bc)
        all+=("$(printf %.2f "$t")")
        if [[ -z $best ]] || (( $(echo "$t < $best" | bc) )); then best=$t; fi
    done
    printf '| %s | %.2f s | %.0f MB/s | %s |\n' "$name" "$best" "$(echo "$bytes / $best / 1000000" | bc -l)" "${all[*]}"
}

echo "corpus: $corpus ($bytes bytes), best of $runs, $(nproc) cores, $(date -u +%F)"
echo
echo "| contender | best | throughput | all runs (s) |"
echo "| --- | --- | --- | --- |"
time_runs "mapreduce-rs (wordcount run --workers 2 --reducers 2)" \
    "$main_bin" run --workers 2 --reducers 2 --input "$corpus" --output "$work/out"
LC_ALL=C sort -m "$work"/out/part-* > "$work/mapreduce.tsv"
time_runs "renoir 0.6 (RuntimeConfig::local(2))" "$ext_dir/renoir-wordcount" "$corpus" "$work/out"
mv "$work/out" "$work/renoir.tsv"
time_runs "timely 0.32 (Config::process(2))" "$ext_dir/timely-wordcount" "$corpus" "$work/out"
mv "$work/out" "$work/timely.tsv"

echo
if cmp -s "$work/mapreduce.tsv" "$work/renoir.tsv" && cmp -s "$work/mapreduce.tsv" "$work/timely.tsv"; then
    echo "outputs agree: $(wc -l < "$work/mapreduce.tsv") distinct words"
else
    echo "compare.sh: the outputs DIFFER; lines: $(cd "$work" && wc -l mapreduce.tsv renoir.tsv timely.tsv | head -3 | tr -s ' \n' ' ')" >&2
    exit 1
fi
