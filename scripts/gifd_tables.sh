#!/usr/bin/env bash
# Regenerates every table of docs/methods/gifd.md from the repo alone:
#   scripts/gifd_tables.sh [OUT_DIR]     (default outputs/gifd; several hours on 2 shared cores)
# 1. the GAN prior (seeded: the same checkpoint every time), 2. the l1-radius calibration,
# 3. the budget table (3 seeds x 8 images x budgets 50-400, one process per seed),
# 4. leakage at rounds 1, 5, 20, 5. the no-ball ablation, 6. our dlg/ig against breaching's on the
# same gradients.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/gifd}"
py="${PYTHON:-python}"
export OMP_NUM_THREADS=1
ckpt="$out/gan/mnist-holdout-steps2000-seed0.pt"
nice -n 5 "$py" -m attacks.train_gan --dataset mnist-holdout --steps 2000 --out-dir "$out"
nice -n 5 "$py" -m studies.calibrate_gifd_radii --checkpoint "$ckpt" | tee "$out/calibration.txt"
for s in 0 1 2; do
    nice -n 5 "$py" -m studies.gifd_benchmark --out-dir "$out/budget-seed$s" --gan-dir "$out" \
        --seeds "$s" --budgets 50,100,200,400 > "$out/budget-seed$s.log" 2>&1 &
done
wait
"$py" -m studies.gifd_benchmark --out-dir "$out/budget" \
    --merge "$out/budget-seed0,$out/budget-seed1,$out/budget-seed2"
mkdir -p "$out/rounds/gan" && cp "$ckpt" "$out/rounds/gan/"   # the sweep's runs find the prior there
nice -n 5 "$py" -m simulations.sweep simulations/configs/gifd_rounds.yaml --local --out-dir "$out/rounds"
"$py" -m simulations.report "$out/rounds"                      # rounds 1, 5, 20: attacks-summary.csv, report.md
"$py" -m studies.gifd_rounds "$out/rounds" | tee "$out/rounds.md"
# 5. the radius=inf ablation (no l1 ball), paired with the budget table's gifd at 200
nice -n 5 "$py" -m studies.gifd_benchmark --out-dir "$out/noball" --gan-dir "$out" --attacks gifd \
    --seeds 0,1,2 --budgets 100,200,400 --set gifd-radii=inf,inf,inf,inf
"$py" -m studies.gifd_benchmark --out-dir "$out/ablation" --merge "$out/budget,$out/noball:inf" \
    --paired "gifd (mnist-holdout),gifd inf (mnist-holdout)"
PYTHON="$py" nice -n 5 scripts/compare_breaching.sh --budgets 50,100,200 --out-dir "$out/breaching"
