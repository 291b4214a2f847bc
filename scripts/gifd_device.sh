#!/usr/bin/env bash
# GIFD's ResNet-18 grid on one machine with a GPU, against a wall-clock deadline.
#   DEVICE=cuda scripts/gifd_device.sh OUT_DIR [ARCHIVE_DIR]
# The grid (the results page's): batches 1, 4, 8 x rounds 1 and 10 (10: after 9 FedAvg rounds),
# fashion-mnist-5k clients, FedSGD, 8 images per seed and seeds 0,1,2 (n = 24 per cell); idlg, ig,
# ggl, gifd with the Fashion-MNIST prior, ggl and gifd with the digits prior (the mismatched
# ablation), gifd without the l1 ball (the ball ablation). Every attack at an equal budget.
# Budgets run in increasing order (BUDGETS) and every job keeps each budget it finished: at the
# deadline (MINUTES after the start) the unfinished ones stop, and a cell's tables show every
# budget with its n (24 where all its jobs got there).
# 1. the two priors (GAN_STEPS steps each, in parallel),
# 2. per cell, the l1 radii chosen by gradient distance on run seed 100 at the first budget,
# 3. one job per (cell, seed, main|ablation), all at once (JOBS at most), one torch thread each,
# 4. per cell the merged summary with GIFD minus each baseline, paired per image,
# 5. the result files (csv, md, png, txt; never checkpoints) packed into tar.gz archives of at
#    most 15 MiB each in ARCHIVE_DIR (default OUT_DIR/archives).
# Environment: DEVICE (cpu; cuda: the attacks, the GAN training and the clients' FedAvg rounds),
# MINUTES (8), BUDGETS (50,100,200,500,1000,2000,5000), BATCHES ("1 4 8"), ROUNDS ("1 10"),
# SEEDS (0,1,2), GAN_STEPS (4000), RADII (r1,r2,r3,r4: skips step 2), ABLATIONS (1; 0: the four
# attacks only), JOBS (default 3 x the CPU cores this process may use), DATA_ROOT (the data-root
# key), PYTHON (python).
# A check at a tiny size on the CPU:
#   DEVICE=cpu BUDGETS=2 SEEDS=0 BATCHES=4 ROUNDS=1 GAN_STEPS=2 JOBS=1 MINUTES=30 scripts/gifd_device.sh outputs/gifd_device_check
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/gifd_device.sh OUT_DIR [ARCHIVE_DIR]}"
archives="${2:-$out/archives}"
py="${PYTHON:-python}"
device="${DEVICE:-cpu}"
budgets="${BUDGETS:-50,100,200,500,1000,2000,5000}"
batches="${BATCHES:-1 4 8}"
rounds="${ROUNDS:-1 10}"
seeds="${SEEDS:-0,1,2}"
steps="${GAN_STEPS:-4000}"
export OMP_NUM_THREADS=1
cores=$("$py" -c 'import os; print(len(os.sched_getaffinity(0)))')
max_jobs="${JOBS:-$((3 * cores))}"
start=$(date +%s)
reserve=90  # seconds kept after the deadline for the summaries and the archives
deadline=$((start + ${MINUTES:-8} * 60 - reserve))
mkdir -p "$out" "$archives"
log="$out/run.md"
data=()
[[ -n "${DATA_ROOT:-}" ]] && data=(data-root="$DATA_ROOT")
set_common=(model=resnet18 dataset=fashion-mnist-5k attack-num-images=8 ggl-population=0 gan-train-steps=$steps
            attack-device="$device" device="$device" "${data[@]}")
{
    echo "# gifd_device.sh run"
    echo
    echo "- started $(date -u +%FT%TZ), deadline $(date -u -d @"$deadline" +%FT%TZ) (+$reserve s for the summaries)"
    echo "- device: $device ($("$py" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU")'))"
    echo "- CPU cores: $cores, jobs at once: at most $max_jobs"
    echo "- budgets: $budgets; batches: $batches; rounds: $rounds; seeds: $seeds; GAN steps: $steps"
} > "$log"

left() { echo $((deadline - $(date +%s))); }
# launch STDOUT STDERR CMD...: CMD in the background under the deadline, at most $max_jobs at once
launch() {
    local stdout=$1 stderr=$2
    shift 2
    while (($(jobs -rp | wc -l) >= max_jobs)); do wait -n || true; done
    if (($(left) <= 0)); then echo "- not started (deadline): $*" >> "$log"; return; fi
    if [[ "$stdout" == "$stderr" ]]; then
        timeout -s TERM "$(left)" "$@" > "$stdout" 2>&1 &
    else
        timeout -s TERM "$(left)" "$@" > "$stdout" 2> "$stderr" &
    fi
}
finish() { wait || true; }

# 1. the priors: Fashion-MNIST's test split (matched) and MNIST's (digits, mismatched)
gan="$out/gan"
priors=(fashion-mnist-holdout)
[[ "${ABLATIONS:-1}" == 0 ]] || priors+=(mnist-holdout)
for p in "${priors[@]}"; do
    gan_data=()
    [[ -n "${DATA_ROOT:-}" ]] && gan_data=(--data-root "$DATA_ROOT")
    launch "$out/gan-$p.txt" "$out/gan-$p.txt" "$py" -m attacks.train_gan --dataset "$p" --steps "$steps" --out-dir "$out" \
        --device "$device" "${gan_data[@]}"
done
finish
echo "- priors ready after $(($(date +%s) - start)) s" >> "$log"

# 2. the radii per cell (calibration updates of run seed 100, the first budget, one update)
first="${budgets%%,*}"
for b in $batches; do for r in $rounds; do
    dir="$out/batch$b-round$r"
    mkdir -p "$dir"
    if [[ -n "${RADII:-}" ]]; then
        echo "gifd-radii = \"$RADII\" (given, not calibrated for this cell)" > "$dir/calibration.md"
    else
        fed=(); [[ "$r" -gt 1 ]] && fed=(--clients 8 --trained-dir "$out/trained")  # the benchmark's federation
        launch "$dir/calibration.md" "$dir/calibration-log.txt" "$py" -m studies.calibrate_gifd_radii \
            --checkpoint "$gan/fashion-mnist-holdout-steps$steps-seed0.pt" --updates 1 "${fed[@]}" --round "$r" \
            --budget "$first" --scales 1,4,inf --set "${set_common[@]}" attack-batch-size="$b"
    fi
done done
finish
echo "- radii ready after $(($(date +%s) - start)) s" >> "$log"

# 3. the attacks: per cell and seed, the main job (both priors) and the ball ablation
base_radii=0.11,0.071,0.061,0.032
for b in $batches; do for r in $rounds; do
    dir="$out/batch$b-round$r"
    radii=$(sed -n 's/^gifd-radii = "\([^"]*\)".*$/\1/p' "$dir/calibration.md")
    if [[ -z "$radii" ]]; then
        radii=$base_radii
        echo "- batch $b round $r: no calibration finished, base radii $radii" >> "$log"
    fi
    if [[ "$radii" == *inf* ]]; then alt=$base_radii tag=ball; else alt=inf,inf,inf,inf tag=inf; fi
    echo "$tag" > "$dir/ablation-tag.txt"
    for s in ${seeds//,/ }; do
        run=(--gan-dir "$out" --round "$r" --seeds "$s" --budgets "$budgets" --set "${set_common[@]}"
             attack-batch-size="$b")
        mkdir -p "$dir/seed$s/main" "$dir/seed$s/ablation-$tag"
        prior_list=$(IFS=,; echo "${priors[*]}")
        launch "$dir/seed$s/main/log.txt" "$dir/seed$s/main/log.txt" "$py" -m studies.gifd_benchmark --out-dir "$dir/seed$s/main" \
            --attacks idlg,ig,ggl,gifd --priors "$prior_list" "${run[@]}" gifd-radii="$radii"
        [[ "${ABLATIONS:-1}" == 0 ]] && continue
        launch "$dir/seed$s/ablation-$tag/log.txt" "$dir/seed$s/ablation-$tag/log.txt" "$py" -m studies.gifd_benchmark \
            --out-dir "$dir/seed$s/ablation-$tag" --attacks gifd --priors fashion-mnist-holdout "${run[@]}" \
            gifd-radii="$alt"
    done
done done
finish
echo "- attacks stopped after $(($(date +%s) - start)) s" >> "$log"

# 4. per cell: every finished budget of every job, GIFD minus each baseline paired per image
g="gifd (fashion-mnist-holdout)"
for b in $batches; do for r in $rounds; do
    dir="$out/batch$b-round$r"
    tag=$(cat "$dir/ablation-tag.txt")
    parts=()
    for f in "$dir"/seed*/main/benchmark.csv; do [[ -f "$f" ]] && parts+=("$(dirname "$f")"); done
    main=${#parts[@]}
    for f in "$dir"/seed*/ablation-"$tag"/benchmark.csv; do [[ -f "$f" ]] && parts+=("$(dirname "$f"):$tag"); done
    if ((${#parts[@]} == 0)); then echo "- batch $b round $r: no budget finished" >> "$log"; continue; fi
    pairs="$g,idlg;$g,ig;$g,ggl (fashion-mnist-holdout)"
    if [[ "${ABLATIONS:-1}" != 0 ]]; then
        pairs+=";$g,gifd (mnist-holdout);gifd (mnist-holdout),idlg"
        pairs+=";gifd (mnist-holdout),ig;ggl (fashion-mnist-holdout),ggl (mnist-holdout)"
        ((${#parts[@]} > main)) && pairs+=";$g,gifd $tag (fashion-mnist-holdout)"  # an ablation job finished a budget
    fi
    mkdir -p "$dir/all"
    merge=(-m studies.gifd_benchmark --out-dir "$dir/all" --merge "$(IFS=,; echo "${parts[*]}")")
    "$py" "${merge[@]}" --paired "$pairs" > "$dir/all/merge.txt" 2>&1 \
        || "$py" "${merge[@]}" > "$dir/all/merge.txt" 2>&1 \
        || echo "- batch $b round $r: the merge failed (see all/merge.txt)" >> "$log"
    cp "$dir/seed${seeds%%,*}/main/grid.png" "$dir/all/grid.png" 2>/dev/null || true
    files=()
    for p in "${parts[@]}"; do files+=("${p%%:*}/benchmark.csv"); done
    echo "- batch $b round $r: the largest budget each job finished: $("$py" -c 'import sys, pandas as pd
print(", ".join("%s %d" % ("/".join(f.split("/")[-3:-1]), pd.read_csv(f)["budget"].max()) for f in sys.argv[1:]))' \
        "${files[@]}")" >> "$log"
done done
echo "- finished $(date -u +%FT%TZ), $(($(date +%s) - start)) s in all" >> "$log"

# 5. the archives: result files only, at most 15 MiB of files per archive
"$py" - "$out" "$archives" <<'EOF'
import sys, tarfile
from pathlib import Path

out, dest = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
keep = {".csv", ".md", ".png", ".txt"}
limit = 15 * 2**20
files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in keep and dest not in p.resolve().parents)
groups, size = [[]], 0
for p in files:
    if p.stat().st_size > limit:
        print(f"left out (over 15 MiB): {p}")
        continue
    if size + p.stat().st_size > limit and groups[-1]:
        groups.append([])
        size = 0
    groups[-1].append(p)
    size += p.stat().st_size
for i, group in enumerate(g for g in groups if g):
    name = dest / f"gifd-device-{i + 1}.tar.gz"
    with tarfile.open(name, "w:gz") as tar:
        for p in group:
            tar.add(p, arcname=str(p.relative_to(out.parent)))
    print(f"{name}: {len(group)} files, {name.stat().st_size / 2**20:.2f} MiB")
EOF
