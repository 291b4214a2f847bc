#!/usr/bin/env bash
# GIFD on a batch-norm ResNet-18 (Fashion-MNIST, FedSGD, round 1): the results page's ResNet tables.
#   scripts/gifd_resnet.sh [OUT_DIR] [BATCHES] [ROUNDS] [BUDGET] [SEEDS]
# defaults: outputs/gifd_resnet, batches "1 4 8", rounds "1 10" (10: after 9 FedAvg rounds), budget
# 1000 (the issue's floor), seeds 0,1,2; 8 images per seed (n = 24 per cell), fashion-mnist-5k clients.
# What the 2-core machine ran: BATCHES=4 ROUNDS=1 BUDGET=100 (every step), BATCHES=8 ROUNDS=1 BUDGET=100
# with RADII=0.11,0.071,0.061,0.032 ABLATIONS=0.
# Environment: RADII=r1,r2,r3,r4 skips step 2 and uses these radii (e.g. another cell's calibrated ones);
# ABLATIONS=0 skips the digits prior and the ball on/off rows (step 3 runs the four attacks only);
# DEVICE=cpu (default), cuda or cuda:N: where the attacks, the GAN training and the clients' rounds run.
# 1. the priors (Fashion-MNIST's test split; digits = MNIST's test split, the mismatched ablation),
# 2. the l1 radii chosen by gradient distance on calibration updates (run seed 100),
# 3. per batch size: every attack at an equal budget, the digits prior, the ball on/off ablation
#    (at round > 1 the model trained by rounds 1..R-1 is kept per seed in OUT_DIR/trained and shared
#    by every batch size, ablation and the calibration: simulations/attack_round.py),
# 4. the summary with GIFD minus each baseline, paired per image.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-outputs/gifd_resnet}"
batches="${2:-1 4 8}"
rounds="${3:-1 10}"
budget="${4:-1000}"
seeds="${5:-0,1,2}"
py="${PYTHON:-python}"
device="${DEVICE:-cpu}"
export OMP_NUM_THREADS=1
steps=4000
set_common=(model=resnet18 dataset=fashion-mnist-5k attack-num-images=8 ggl-population=0 gan-train-steps=$steps
            attack-device="$device" device="$device")
nice -n 5 "$py" -m attacks.train_gan --dataset fashion-mnist-holdout --steps $steps --out-dir "$out" --device "$device"
for b in $batches; do for r in $rounds; do
    dir="$out/batch$b-round$r"
    mkdir -p "$dir"
    if [[ -n "${RADII:-}" ]]; then
        echo "gifd-radii = \"$RADII\" (given, not calibrated for this cell)" > "$dir/calibration.md"
        radii="$RADII"
    else
        # after round 1 the calibration model is trained by the benchmark's federation (8 clients; kept in
        # $out/trained); round 1 keeps the published calibration's one-client draw
        fed=(); [[ "$r" -gt 1 ]] && fed=(--clients 8 --trained-dir "$out/trained")
        nice -n 5 "$py" -m studies.calibrate_gifd_radii --checkpoint "$out/gan/fashion-mnist-holdout-steps$steps-seed0.pt" \
            --updates 1 "${fed[@]}" --round "$r" --budget "$budget" --scales 1,4,inf --set "${set_common[@]}" attack-batch-size="$b" \
            | tee "$dir/calibration.md"
        radii=$(sed -n 's/^gifd-radii = "\(.*\)"$/\1/p' "$dir/calibration.md")
    fi
    run=(--gan-dir "$out" --round "$r" --seeds "$seeds" --budgets "$budget" --set "${set_common[@]}" attack-batch-size="$b")
    nice -n 5 "$py" -m studies.gifd_benchmark --out-dir "$dir/main" --attacks idlg,ig,ggl,gifd \
        --priors fashion-mnist-holdout "${run[@]}" gifd-radii="$radii"
    g="gifd (fashion-mnist-holdout)"
    if [[ "${ABLATIONS:-1}" == 0 ]]; then
        "$py" -m studies.gifd_benchmark --out-dir "$dir/all" --merge "$dir/main" \
            --paired "$g,idlg;$g,ig;$g,ggl (fashion-mnist-holdout)"
        continue
    fi
    nice -n 5 "$py" -m attacks.train_gan --dataset mnist-holdout --steps $steps --out-dir "$out" --device "$device"  # cached
    nice -n 5 "$py" -m studies.gifd_benchmark --out-dir "$dir/digits" --attacks ggl,gifd --priors mnist-holdout \
        "${run[@]}" gifd-radii="$radii"
    # the ball ablation: the chosen radii against the other side (no ball, or the base radii if none was chosen)
    if [[ "$radii" == *inf* ]]; then alt=0.11,0.071,0.061,0.032 tag=ball; else alt=inf,inf,inf,inf tag=inf; fi
    nice -n 5 "$py" -m studies.gifd_benchmark --out-dir "$dir/ablation-$tag" --attacks gifd \
        --priors fashion-mnist-holdout "${run[@]}" gifd-radii="$alt"
    "$py" -m studies.gifd_benchmark --out-dir "$dir/all" --merge "$dir/main,$dir/digits,$dir/ablation-$tag:$tag" \
        --paired "$g,idlg;$g,ig;$g,ggl (fashion-mnist-holdout);$g,gifd (mnist-holdout);$g,gifd $tag (fashion-mnist-holdout);\
gifd (mnist-holdout),idlg;gifd (mnist-holdout),ig;ggl (fashion-mnist-holdout),ggl (mnist-holdout)"
done done
