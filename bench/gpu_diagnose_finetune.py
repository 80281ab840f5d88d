"""Diagnose finetuning on the GPU: finetune a carried checkpoint with the cheap recipe, then evaluate the
result clean and with noise on cuda AND on cpu, and the codec's forward PSNR, to separate the GPU coding
path from the weights. For any CUDA host (`source bench/gpu_env.sh` first)."""

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
from robust_nic.codecs import load_codec_checkpoint  # noqa: E402
from robust_nic.coding import code, forward_padded  # noqa: E402
from robust_nic.config import compose_config  # noqa: E402
from robust_nic.data import sample_photos  # noqa: E402
from robust_nic.evaluation.runner import evaluate  # noqa: E402
from robust_nic.images import read_image  # noqa: E402
from robust_nic.metrics import psnr  # noqa: E402
from robust_nic.settings import SAMPLE_HELDOUT  # noqa: E402
from robust_nic.training import train  # noqa: E402

base, work, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 300
report = {}
cfg = compose_config("train", [
    f"model.checkpoint={base}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
    "trainer.enable_progress_bar=false", "trainer.accelerator=gpu", "trainer.limit_val_batches=1", "train.val_attack.steps=20",
    "optim.lr=1e-4", "optim.scheduler=none", "optim.entropy_lr_mult=1.0",
    "attack=pgd", "attack.steps=2", "attack.random_start=true", "attack.eps=0.01", f"attack.warmup_steps={max(1, steps // 6)}",
])
report["train"] = train(cfg, work / "cheap")
ckpt = work / "cheap" / "checkpoints" / "last.ckpt"
for device in ("cuda", "cpu"):
    for attack in ("noise", "chen2023"):
        extra = ["attack.steps=300"] if attack == "chen2023" else []
        m = evaluate(compose_config("evaluate", [f"model.checkpoint={ckpt}", f"device={device}", "max_images=3",
                                                 "save_images=false", f"attack={attack}", "attack.eps=0.01", *extra]),
                     work / f"eval_{attack}_{device}")
        report[f"{attack}_{device}"] = {k: v for k, v in m.items() if "psnr" in k or "bpp" in k}
        (out / f"per_image_{attack}_{device}.csv").write_text((work / f"eval_{attack}_{device}" / "per_image.csv").read_text())
codec = load_codec_checkpoint("bmshj2018-hyperprior", ckpt).eval()
x = read_image(sample_photos(SAMPLE_HELDOUT)[1])[None]
with torch.no_grad():
    report["forward_psnr_cpu"] = psnr(x, forward_padded(codec, x)["x_hat"]).item()
    report["code_psnr_cpu"] = psnr(x, code(codec, x).x_hat).item()
    codec = codec.cuda()
    report["forward_psnr_cuda"] = psnr(x, forward_padded(codec, x.cuda())["x_hat"].cpu()).item()
    coded = code(codec, x.cuda())
    report["code_psnr_cuda"] = psnr(x, coded.x_hat.cpu()).item()
    report["code_bpp_cuda"] = coded.bpp.item()
print(json.dumps(report, indent=1, default=float))
(out / "diagnose.json").write_text(json.dumps(report, indent=1, default=float))
