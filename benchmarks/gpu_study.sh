#!/usr/bin/env bash
# The README's own-data evidence under the honest protocol (#21: best epoch and thresholds chosen
# on held-out training images, test evaluated once), run on one GPU with many runs at once:
#   small:  small_data_study.py --image-size 128 (1,000 digits mosaics, 128 px, 12 epochs): one
#           change at a time to the derived recipe, and the paper's ablations (Tables IV-VI);
#   large:  the 3,000-image set of the own-data table (160 px for 3 epochs, the images-seen rule):
#           the earlier rules, and the stop rule where time does not bind.
# Every run is one (set, variant, seed) process; the summaries read their logs (--from-logs).
# Runs in fp32 (train.amp=off), as on a CPU. Usage:
#   bash benchmarks/gpu_study.sh OUT_DIR            # SEEDS=0,1,2 PARALLEL=12 LIMIT_S=470 by default
#   SEEDS=0 ONLY="base" EXTRA="--set train.max_steps_per_epoch=1" bash benchmarks/gpu_study.sh /tmp/smoke
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
out=${1:-study_out}
seeds=${SEEDS:-0,1,2}
mkdir -p "$out/logs"
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

for set in large small; do   # the data sets, once, before the runs read them
  python3 benchmarks/small_data_study.py $(set_args $set) --variants base --from-logs /dev/null >/dev/null || exit 1
done

one_run() {   # "set<TAB>variant<TAB>seed": one training, its log under $OUT_DIR/logs
  IFS=$'\t' read -r set variant seed <<<"$1"
  log="$OUT_DIR/logs/$set-$(echo "$variant" | tr -c 'A-Za-z0-9\n' '-')-$seed.log"
  python3 benchmarks/small_data_study.py $(set_args "$set") --set train.amp=off $EXTRA \
    --variants "$variant" --seeds "$seed" >"$log" 2>&1 || echo "FAILED: $set / $variant / $seed (see $log)"
}
export -f one_run

IFS=',' read -ra seed_list <<<"$seeds"
{
  IFS='|' read -ra variants <<<"$LARGE"
  for variant in "${variants[@]}"; do for seed in "${seed_list[@]}"; do printf 'large\t%s\t%s\n' "$variant" "$seed"; done; done
  IFS='|' read -ra variants <<<"$SMALL"
  for variant in "${variants[@]}"; do for seed in "${seed_list[@]}"; do printf 'small\t%s\t%s\n' "$variant" "$seed"; done; done
} | { if [ -n "${ONLY:-}" ]; then grep -P "\t(${ONLY})\t"; else cat; fi; } >"$out/jobs.tsv"
echo "$(wc -l <"$out/jobs.tsv") runs, ${PARALLEL:-12} at a time"
started=$(date +%s)
timeout "${LIMIT_S:-470}" xargs -d '\n' -P "${PARALLEL:-12}" -I{} bash -c 'one_run "$1"' _ {} <"$out/jobs.tsv"
rc=$?
echo "runs: $(( $(date +%s) - started )) s (exit $rc; 124: stopped at LIMIT_S, the summaries have what finished)"

for set in small large; do
  logs=("$out"/logs/"$set"-*.log)
  python3 benchmarks/small_data_study.py $(set_args $set) --from-logs "${logs[@]}" \
    --json "$out/$set.json" --plot "$out/$set.png" 2>&1 | tail -30
done
tar -czf "$out/logs.tgz" -C "$out" logs jobs.tsv
