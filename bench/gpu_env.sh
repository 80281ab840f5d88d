# For the lent GPU machine only (device tool): `source bench/gpu_env.sh` at the start of every device
# command, with `.whl` in the call's carry. That machine has torch/lightning/etc. but no network and
# none of compressai, pytorch-msssim, hydra-core, omegaconf, antlr4-python3-runtime: those travel as
# cp312 wheels in the git-ignored .whl/ (see /work/.library/device/README.md) and go to /tmp/site.
# Not for CI or a normal checkout: there `pip install -e .` is the way.
if [ "${GPU_ENV_SKIP_INSTALL:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_env: wheel install failed (is .whl carried?)" >&2; return 1 2>/dev/null || exit 1; }
  export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
python3 - <<'PY'
import sys, torch, compressai
cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
print(f"python {sys.version.split()[0]}  torch {torch.__version__} (cuda {torch.version.cuda})  compressai {compressai.__version__}  gpu: {cuda}")
PY
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi: not found"
