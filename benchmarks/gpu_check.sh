#!/usr/bin/env bash
# The GPU check, run in ONE call of the device tool on a lent GPU machine (under 8 minutes there):
#   bash benchmarks/gpu_check.sh            # writes JSON and logs into $OUT (or ./gpu_check_out when OUT is unset)
# 1. installs medtransfer over the machine's own torch (`pip install --no-deps -e .`); packages the machine lacks
#    (monai, pydicom, nibabel: see the device README's KINDS.md) are installed from wheels in .whl/ when that folder
#    was carried (download them here with `pip download --no-deps --only-binary=:all: --python-version 3.12
#    --platform manylinux2014_x86_64 -d .whl monai pydicom nibabel`);
# 2. benchmarks/throughput.py for densenet121 and resnet50 at 224 px (reference loop vs medtransfer vs compute-only);
# 3. one short training run (`medtransfer train`, resnet50, 224 px, synthetic chest phantoms, 2 epochs) with its
#    wall time and metrics.
# Commit the figures with the GPU's name in docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MEDTRANSFER_CACHE=/tmp/mt-cache
PY=${PYTHON:-python3}
{
  echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site
  fi
  $PY -m pip install -q --no-deps --no-build-isolation -e . || echo "pip install -e . failed"
  $PY -c "import torch, medtransfer; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
} 2>&1 | tee "$OUT/setup.log"

# 2. throughput: ~4 minutes for two models at 224 px, batch 64, 10 warm-up + 50 timed steps each way
timeout 330 $PY benchmarks/throughput.py --device cuda --models densenet121 resnet50 --size 224 --batch 64 \
  --warmup 10 --steps 50 --workers 8 --json "$OUT/throughput-gpu.json" 2>&1 | tee "$OUT/throughput.log"

# 3. a short training run end to end
cat > /tmp/gpu_train.yaml <<'EOF'
task: binary
seed: 0
data: {path: "synthetic:chest,n=3000,visibility=0.5,seed=3", image_size: 224}
model: {backbone: resnet50, source: scratch}
train: {epochs: 2, batch_size: 64, lr: 0.001, device: cuda}
EOF
start=$(date +%s.%N)
timeout 150 $PY -m medtransfer train /tmp/gpu_train.yaml --out /tmp/gpu_run 2>&1 | tail -n 20 | tee "$OUT/train.log"
end=$(date +%s.%N)
$PY - "$start" "$end" "$OUT" <<'EOF'
import json, sys
from pathlib import Path
start, end, out = float(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
m = Path("/tmp/gpu_run/metrics.json")
result = {"wall_s": end - start, "metrics": json.loads(m.read_text()) if m.is_file() else None}
(out / "train-gpu.json").write_text(json.dumps(result, indent=2, default=str))
print("train wall", round(end - start, 1), "s", "ok" if result["metrics"] else "FAILED")
EOF
ls -la "$OUT"
