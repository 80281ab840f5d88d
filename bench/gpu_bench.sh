#!/usr/bin/env bash
# The benchmarks at real sizes on a CUDA host, from the repository root (about 10 minutes on one H200):
#   OUT=bench_out bash bench/gpu_bench.sh
# Trains the default codec (python train.py, on the GPU), then bench/attack.py on the whole held-out
# photos with the paper's 1001 steps, bench/finetune.py, and a short single-GPU trainer=ddp run.
set -uo pipefail
source bench/gpu_env.sh || exit 1
OUT=${OUT:-/tmp/gpu_bench_out}
W=/tmp/gpu_bench
rm -rf "$W"; mkdir -p "$W" "$OUT"
quiet() { grep -v -i -E "warn|deprecat|litlogger|tip:" ; }

echo "=== default codec: python train.py trainer=gpu"
start=$(date +%s)
timeout 90 python3 train.py trainer=gpu trainer.enable_progress_bar=false hydra.run.dir=$W/default 2>&1 | quiet | tail -3
echo "train wall: $(( $(date +%s) - start )) s"
cp $W/default/train_metrics.json $OUT/default_train_metrics.json
CKPT=$W/default/checkpoints/last.ckpt

echo "=== bench/attack.py (whole images, 1001 chen2023 steps)"
timeout 170 python3 bench/attack.py --checkpoint $CKPT --crop 0 --device cuda --threads 8 --out $OUT/bench_attack.json 2>&1 | quiet | tee $OUT/bench_attack.log

echo "=== bench/finetune.py"
timeout 230 python3 bench/finetune.py --checkpoint $CKPT --steps 300 --paper-inner 50 --cheap-inner 2 --eval-steps 500 \
  --device cuda --threads 8 --work $W/ft --out $OUT/bench_finetune.json 2>&1 | quiet | grep -v "images:" | tail -25 | tee $OUT/bench_finetune.log

echo "=== trainer=ddp (1 GPU process)"
timeout 60 python3 train.py trainer=ddp trainer.max_steps=50 trainer.val_check_interval=25 trainer.enable_progress_bar=false \
  hydra.run.dir=$W/ddp 2>&1 | quiet | tail -4
ls $W/ddp/checkpoints
