#!/usr/bin/env bash
# Rebuild the source models of the PneumoniaMNIST study (issue [3/6]) from ../shared/data-style data:
#   examples/build_sources.sh DATA_DIR OUT_DIR [BACKBONE ...]      (default backbones: resnet18 densenet121)
# Writes OUT_DIR/<source>-<backbone>/ (model.safetensors + source.yaml) for mednist-all (supervised, 6 classes),
# cxr-ssl and hand-ssl (SimCLR on MedNIST CXR / Hand), each with one `medtransfer sources build` (its recipe holds
# the settings of examples/sources/*.yaml), and appends "source backbone seconds" to OUT_DIR/build_times.tsv.
# A finished source is skipped; an interrupted one resumes from its checkpoint (--resume does both).
# Point medtransfer at the result with MEDTRANSFER_SOURCES=OUT_DIR (or `sources list --sources-dir OUT_DIR`).
# IMAGE_SIZE=28 builds them at PneumoniaMNIST's native resolution (default: the recipes' 64 px).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 DATA_DIR OUT_DIR [BACKBONE ...]" >&2; exit 2; fi
DATA=$(cd "$1" && pwd); OUT=$2; shift 2
BACKBONES=("${@:-resnet18 densenet121}"); BACKBONES=(${BACKBONES[@]})
HERE=$(cd "$(dirname "$0")" && pwd)
MT=${MEDTRANSFER:-medtransfer}
command -v "$MT" >/dev/null || MT="$HERE/../.venv/bin/medtransfer"
MEDNIST=$DATA/mednist/mednist_64.npz
PROBE=$DATA/pneumoniamnist/pneumoniamnist_trainval.npz
for f in "$MEDNIST" "$PROBE"; do [ -f "$f" ] || { echo "error: $f not found" >&2; exit 2; }; done
mkdir -p "$OUT"

# The CPU budget: DenseNet-121 trains ~5x slower than ResNet-18 at 64 px on 2 cores, so it sees fewer images.
budget() {  # backbone source -> extra --set arguments
  case "$1/$2" in
    densenet121/mednist-all) echo "--set train.n_train=1500 --set train.epochs=1 --set train.batch_size=64" ;;
    densenet121/*) echo "--set train.n_train=1000 --set train.epochs=3 --set train.batch_size=64" ;;
    *) echo "" ;;
  esac
}

build() {  # source backbone -> one `sources build` (arguments after the two: what the source is)
  local name=$1 backbone=$2; shift 2
  if [ -f "$OUT/$name-$backbone/source.yaml" ]; then echo "== $name-$backbone: already built"; return; fi
  local common=(--data "$MEDNIST" --format mednist --name "$name-$backbone" --sources-dir "$OUT"
    --backbone "$backbone" --resume --set "pretrain.probe_data=$PROBE")  # probe: PneumoniaMNIST val AUC on the card
  [ -n "${IMAGE_SIZE:-}" ] && common+=(--image-size "$IMAGE_SIZE")
  echo "== building $name-$backbone"
  local start; start=$(date +%s)
  # shellcheck disable=SC2046
  "$MT" sources build "${common[@]}" "$@" $(budget "$backbone" "$name")
  printf '%s\t%s\t%s\n' "$name" "$backbone" "$(( $(date +%s) - start ))" >> "$OUT/build_times.tsv"
}

for backbone in "${BACKBONES[@]}"; do
  # MedNIST's 6 classes are separable within one epoch: 2 epochs (the recipe's 8 are for a general archive), and
  # val/test only score the source's own card, so they stay small on CPU (examples/sources/mednist_all.yaml)
  build mednist-all "$backbone" --supervised --set task=multiclass \
    --set train.epochs=2 --set "data.split_fractions=[0.94,0.02,0.04]" \
    --modality x-ray+ct+mri --site mixed \
    --description "MedNIST, all 6 classes (CT, MRI and X-ray of 5 sites), supervised multi-class"
  build cxr-ssl "$backbone" --set "data.classes=[CXR]" --modality x-ray --site chest \
    --description "MedNIST CXR (adult chest radiographs from NIH ChestX-ray14), self-supervised SimCLR"
  build hand-ssl "$backbone" --set "data.classes=[Hand]" --modality x-ray --site hand \
    --description "MedNIST Hand (hand radiographs), self-supervised SimCLR"
done
"$MT" sources list --sources-dir "$OUT"
