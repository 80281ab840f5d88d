# `source bench/gpu_env.sh` at the start of the GPU scripts: prints python, torch, CUDA, CompressAI and the GPUs.
# On a host where `pip install -e .` was run, that is all it does. On an offline host without the
# dependencies, put their wheels in the git-ignored .whl/ folder: they are installed into /tmp/site and
# src/ goes on PYTHONPATH (GPU_ENV_SKIP_INSTALL=1 skips this).
if [ "${GPU_ENV_SKIP_INSTALL:-0}" != 1 ] && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_env: installing the wheels of .whl/ failed" >&2; return 1 2>/dev/null || exit 1; }
  export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
python3 - <<'PY'
import sys, torch, compressai
cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
print(f"python {sys.version.split()[0]}  torch {torch.__version__} (cuda {torch.version.cuda})  compressai {compressai.__version__}  gpu: {cuda}")
PY
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi: not found"
