#!/usr/bin/env bash
# GPU smoke test for a CUDA host, from the repository root (a few minutes):
#   OUT=smoke_out bash bench/gpu_smoke.sh
# (a) trains the tiny default codec on the GPU (train.py, with a step timer attached from outside),
# (b) evaluates the checkpoint under a 20-step PGD attack on the GPU, (c) prints time per training
# step, measured, next to the progress bar's rate and the log's fit time.
# Checkpoints stay under $WORK (/tmp); only a few small files go to $OUT.
# Knobs for a CPU dry run of the logic: SMOKE_TRAINER=cpu SMOKE_DEVICE=cpu SMOKE_STEPS=6 SMOKE_VAL=3
# SMOKE_EVAL_EXTRA="max_images=1 attack.steps=2" GPU_ENV_SKIP_INSTALL=1 OUT=/tmp/out bash bench/gpu_smoke.sh
set -uo pipefail
source bench/gpu_env.sh || exit 1
OUT=${OUT:-/tmp/gpu_smoke_out}
WORK=${WORK:-/tmp/gpu_smoke}
TRAINER=${SMOKE_TRAINER:-gpu}
DEVICE=${SMOKE_DEVICE:-cuda}
STEPS=${SMOKE_STEPS:-200}
VAL=${SMOKE_VAL:-100}
WORKERS=${SMOKE_WORKERS:-4}
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT"
status=0

echo "=== (a) train: trainer=$TRAINER max_steps=$STEPS val_check_interval=$VAL"
t0=$(date +%s.%N)
# Runs train.py itself (runpy), after wrapping robust_nic.training.build_trainer to add a step timer.
STEP_TIMER_OUT=$OUT/train_timing.json timeout 150 python3 - trainer=$TRAINER trainer.max_steps=$STEPS \
  trainer.val_check_interval=$VAL data.num_workers=$WORKERS hydra.run.dir=$WORK/smoke_train \
  > >(tee "$OUT/train_stdout.log") 2>&1 <<'PY'
import json, logging, os, runpy, statistics, sys, time
# Lightning gives its logger its own handler (and no propagation) when imported before logging is set up;
# train.py imports it after Hydra set up logging. A root handler now keeps its log lines going to train.log.
logging.getLogger().addHandler(logging.NullHandler())
import lightning as L
import torch

def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()

class StepTimer(L.Callback):
    """Per-batch compute time (synchronised) and validation time; fit wall time."""
    def __init__(self):
        self.steps, self.val_s, self.fit_t0, self.device = [], 0.0, None, None
    def on_fit_start(self, trainer, pl_module):
        sync(); self.fit_t0 = time.perf_counter()
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.device = self.device or str(pl_module.device)  # by on_fit_end the model is back on the CPU
        sync(); self.t = time.perf_counter()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sync(); self.steps.append(time.perf_counter() - self.t)
    def on_validation_start(self, trainer, pl_module):
        sync(); self.v = time.perf_counter()
    def on_validation_end(self, trainer, pl_module):
        sync(); self.val_s += time.perf_counter() - self.v
    def on_fit_end(self, trainer, pl_module):
        sync(); fit_s = time.perf_counter() - self.fit_t0
        n, warm = len(self.steps), self.steps[10:] or self.steps
        out = {
            "device": self.device,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "batches": n, "fit_s": round(fit_s, 2), "val_s": round(self.val_s, 2),
            "steps_per_s_fit": round(n / fit_s, 2),
            "steps_per_s_excl_val": round(n / max(fit_s - self.val_s, 1e-9), 2),
            "step_ms_median_after10": round(1e3 * statistics.median(warm), 2),
            "step_ms_mean_after10": round(1e3 * statistics.fmean(warm), 2),
            "step_ms_first": round(1e3 * self.steps[0], 2) if n else None,
            "max_mem_alloc_MiB": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        }
        print("STEP_TIMER " + json.dumps(out), flush=True)
        with open(os.environ["STEP_TIMER_OUT"], "w") as f:
            json.dump(out, f, indent=1)

try:
    import robust_nic.training as T
    _build = T.build_trainer
    def build_trainer(*args, **kwargs):
        trainer = _build(*args, **kwargs)
        trainer.callbacks.append(StepTimer())
        return trainer
    T.build_trainer = build_trainer
except (ImportError, AttributeError) as err:
    print(f"STEP_TIMER unavailable ({err}); training without it", flush=True)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
PY
rc=$?; t1=$(date +%s.%N)
[ $rc -ne 0 ] && { echo "TRAIN FAILED rc=$rc"; status=1; }
echo "train command wall: $(python3 -c "print(round($t1-$t0,1))") s"
cp "$WORK/smoke_train/train_metrics.json" "$OUT/" 2>/dev/null; cp -r "$WORK/smoke_train/csv" "$OUT/" 2>/dev/null  # csv/attempt_<n>/metrics.csv

echo "=== (b) evaluate: attack=pgd attack.steps=20 device=$DEVICE"
ckpt=$WORK/smoke_train/checkpoints/last.ckpt
if [ -f "$ckpt" ]; then
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  timeout 100 python3 evaluate.py model.checkpoint="$ckpt" attack=pgd attack.steps=20 device=$DEVICE \
    save_images=false hydra.run.dir=$WORK/smoke_eval ${SMOKE_EVAL_EXTRA:-} 2>&1 | tee "$OUT/eval_stdout.log"
  rc=${PIPESTATUS[0]}; t1=$(date +%s.%N)
  [ $rc -ne 0 ] && { echo "EVAL FAILED rc=$rc"; status=1; }
  echo "evaluate command wall: $(python3 -c "print(round($t1-$t0,1))") s"
  if [ -f "$WORK/smoke_eval/metrics.json" ]; then
    cp "$WORK/smoke_eval/metrics.json" "$OUT/eval_metrics.json"
    echo "--- metrics.json"; cat "$WORK/smoke_eval/metrics.json"; echo
  else
    echo "no metrics.json; eval dir holds:"; ls -R "$WORK/smoke_eval" 2>/dev/null | head -30
  fi
else
  echo "no checkpoint at $ckpt: skipping evaluate"; status=1
fi

echo "=== (c) time per training step"
[ -f "$OUT/train_timing.json" ] && cat "$OUT/train_timing.json" && echo
# The Rich progress bar's last rate (it/s, smoothed) and the fit span between the log's first and last lines.
echo "progress bar's last rate: $(tr '\r' '\n' < "$OUT/train_stdout.log" | grep -a -o '[0-9.]*it/s' | tail -1)"
python3 - "$WORK/smoke_train/train.log" "$STEPS" <<'PY'
import datetime as dt, re, sys
try:
    stamps = [dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for m in map(re.compile(r"^\[([\d-]+ [\d:,]+)\]").match, open(sys.argv[1])) if m]
    span = (stamps[-1] - stamps[0]).total_seconds()
    print(f"train.log: first..last line {span:.1f} s for {sys.argv[2]} steps = {int(sys.argv[2]) / span:.2f} steps/s (incl. validation)")
except Exception as err:  # noqa: BLE001
    print(f"train.log timing unavailable: {err}")
PY
rm -rf "$WORK"  # checkpoints do not come back
ls -la "$OUT"
exit $status
