#!/usr/bin/env bash
# The README's own-data evidence under the honest protocol (#21: best epoch and thresholds chosen
# on held-out training images, test evaluated once), run on one GPU with many runs at once:
#   small:  small_data_study.py --image-size 128 (1,000 digits mosaics, 128 px, 12 epochs): one
#           change at a time to the derived recipe, and the paper's ablations (Tables IV-VI);
#   large:  the 3,000-image set of the own-data table (160 px for 3 epochs, the images-seen rule):
#           the earlier rules, and the stop rule where time does not bind.
# Every run is one (set, variant, seed) process writing its result file (runs/); the summaries
# (small.json, large.json) gather those files' runs (--from-results).
# Runs in fp32 (train.amp=off), as on a CPU. Usage:
#   bash benchmarks/gpu_study.sh OUT_DIR            # SEEDS=0,1,2 PARALLEL=12 LIMIT_S=470 by default
#   SEEDS=0 ONLY="base" EXTRA="--set train.max_steps_per_epoch=1" bash benchmarks/gpu_study.sh /tmp/smoke
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
out=${1:-study_out}
seeds=${SEEDS:-0,1,2}
mkdir -p "$out/logs" "$out/runs"
export OUT_DIR=$out EXTRA=${EXTRA:-}

set_args() {   # the data set (and base) of each study
  case $1 in
    small) echo "--image-size 128" ;;
    large) echo "--train-images 3000 --test-images 1000 --canvas 128 --data-seed 0" ;;
  esac
}
export -f set_args
LARGE="stop rule without a time limit|base|input 128 px for 4 epochs|input 128 px for 4 epochs without augmentation|no augmentation"
SMALL="base|encoder standard|encoder none|decoder self-attn all|loss asl|loss bce|input 160 px for 8 epochs|input 160 px|input 224 px for 4 epochs|input 96 px|backbone lr x0.1|label smoothing 0.1|no augmentation|RandAugment m9 + Cutout|no EMA|iRPE ratio 3 (exact offsets)|no threshold holdout"

variants_of() { if [[ $1 == large ]]; then echo "$LARGE"; else echo "$SMALL"; fi; }
for set in large small; do   # the data sets, once, before the runs read them; the names checked
  IFS='|' read -ra variants <<<"$(variants_of $set)"
  flags=(); for variant in "${variants[@]}"; do flags+=(--variant "$variant"); done
  python3 benchmarks/small_data_study.py $(set_args $set) --data-only "${flags[@]}" >/dev/null || exit 1
done

one_run() {   # "set<TAB>variant<TAB>seed": one training, its log and result file under $OUT_DIR
  IFS=$'\t' read -r set variant seed <<<"$1"
  name="$set-$(echo "$variant" | tr -c 'A-Za-z0-9\n' '-')-$seed"
  printf '%s\n' "$1" >>"$OUT_DIR/launched.tsv"
  python3 benchmarks/small_data_study.py $(set_args "$set") --set train.amp=off $EXTRA \
    --variant "$variant" --seeds "$seed" --json "$OUT_DIR/runs/$name.json" >"$OUT_DIR/logs/$name.log" 2>&1 \
    || echo "FAILED: $set / $variant / $seed (see $OUT_DIR/logs/$name.log)"
}
export -f one_run

IFS=',' read -ra seed_list <<<"$seeds"
for set in large small; do
  IFS='|' read -ra variants <<<"$(variants_of $set)"
  for variant in "${variants[@]}"; do for seed in "${seed_list[@]}"; do printf '%s\t%s\t%s\n' "$set" "$variant" "$seed"; done; done
done | { if [ -n "${ONLY:-}" ]; then grep -P "\t(${ONLY})\t"; else cat; fi; } >"$out/jobs.tsv"
if [[ -n $(sort "$out/jobs.tsv" | uniq -d) ]]; then
  echo "error: a (set, variant, seed) is listed twice in $out/jobs.tsv (SEEDS=$seeds)" >&2; exit 2
fi
: >"$out/launched.tsv"
echo "$(wc -l <"$out/jobs.tsv") runs listed (jobs.tsv), ${PARALLEL:-12} at a time"
started=$(date +%s)
timeout "${LIMIT_S:-470}" xargs -d '\n' -P "${PARALLEL:-12}" -I{} bash -c 'one_run "$1"' _ {} <"$out/jobs.tsv"
rc=$?
finished=$(find "$out/runs" -name '*.json' | wc -l)
echo "runs: $(wc -l <"$out/launched.tsv") launched (launched.tsv), $finished finished, $(( $(date +%s) - started )) s" \
  "(exit $rc; 124: stopped at LIMIT_S, the summaries have what finished)"

shopt -s nullglob
for set in small large; do
  results=("$out"/runs/"$set"-*.json)
  [[ ${#results[@]} -gt 0 ]] || { echo "$set: no run finished"; continue; }
  python3 benchmarks/small_data_study.py $(set_args $set) --from-results "${results[@]}" \
    --json "$out/$set.json" --plot "$out/$set.png" 2>&1 | tail -30
done
tar -czf "$out/logs.tgz" -C "$out" logs runs jobs.tsv launched.tsv
