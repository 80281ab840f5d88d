"""CPU threads when jobs share a machine (a benchmark, not a test).

    python bench/threads.py [--jobs 2 3] [--seconds 40]

Starts J identical training jobs at once (the default `model=tiny` codec, plain rate-distortion steps on
16 random 64x64 crops, as `python train.py` does), first with `threads=1` each, then with torch's
default (all cores) each, and prints each setting's total batches/s and the ratio. What `threads=` (or
OMP_NUM_THREADS=1 for a sweep) is worth when several jobs run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

JOB = r"""
import json, sys, time, torch
from robust_nic.codecs import build_codec
from robust_nic.losses import RateDistortionLoss
threads, seconds = int(sys.argv[1]), float(sys.argv[2])
if threads > 0:
    torch.set_num_threads(threads)
torch.manual_seed(0)
codec = build_codec("bmshj2018-hyperprior", 3, channels=[64, 96])
loss_fn = RateDistortionLoss("mse", 0.0067)
params = [p for n, p in codec.named_parameters() if not n.endswith(".quantiles")]
opt = torch.optim.Adam(params, 1e-4)
x = torch.rand(16, 3, 64, 64)
for _ in range(2):  # warm-up
    loss_fn(codec(x), x)["loss"].backward()
start, batches = time.perf_counter(), 0
while time.perf_counter() - start < seconds:
    opt.zero_grad()
    loss_fn(codec(x), x)["loss"].backward()
    opt.step()
    batches += 1
print(json.dumps({"batches": batches, "seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))
"""


def run_together(jobs: int, threads: int, seconds: float) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    procs = [
        subprocess.Popen([sys.executable, "-c", JOB, str(threads), str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(jobs)
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seconds", type=float, default=40)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; each job trains model=tiny on 16x64x64 crops for {args.seconds:g} s")
    print(f"{'jobs':>4s} {'threads/job':>12s} {'total batches/s':>16s} {'ratio 1-thread/default':>24s}")
    for jobs in args.jobs:
        rates = {}
        for label, threads in (("1", 1), ("default", 0)):
            time.sleep(2)
            results = run_together(jobs, threads, args.seconds)
            rates[label] = sum(r["batches"] / r["seconds"] for r in results)
            shown = f"{label} ({results[0]['threads']})"
            print(f"{jobs:4d} {shown:>12s} {rates[label]:16.2f}", flush=True)
        print(f"{jobs:4d} {'':>12s} {'':>16s} {rates['1'] / rates['default']:24.2f}", flush=True)


if __name__ == "__main__":
    main()
