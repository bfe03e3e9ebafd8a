#!/usr/bin/env bash
# Rebuild the source models of the PneumoniaMNIST study (issue [3/6]) from ../shared/data-style data:
#   examples/build_sources.sh DATA_DIR OUT_DIR [BACKBONE ...]      (default backbones: resnet18 densenet121)
# Writes OUT_DIR/<source>-<backbone>/ (model.safetensors + source.yaml) for mednist-all (supervised, 6 classes),
# cxr-ssl and hand-ssl (SimCLR on MedNIST CXR / Hand), and appends "source backbone seconds" to
# OUT_DIR/build_times.tsv. A finished source is skipped; an interrupted one resumes from its checkpoint.
# Point medtransfer at the result with MEDTRANSFER_SOURCES=OUT_DIR (or `sources list --sources-dir OUT_DIR`).
# IMAGE_SIZE=28 builds them at PneumoniaMNIST's native resolution (default: the configs' 64 px).
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

for backbone in "${BACKBONES[@]}"; do
  for spec in mednist-all:mednist_all.yaml cxr-ssl:cxr_ssl.yaml hand-ssl:hand_ssl.yaml; do
    name=${spec%%:*}; config=$HERE/sources/${spec#*:}; dir=$OUT/$name-$backbone
    if [ -f "$dir/source.yaml" ]; then echo "== $name-$backbone: already built"; continue; fi
    resume=""; [ -f "$dir/checkpoint.pt" ] && resume="--resume"
    extra=(--set "data.path=$MEDNIST" --set "model.backbone=$backbone" --set "pretrain.name=$name-$backbone")
    [ -n "${IMAGE_SIZE:-}" ] && extra+=(--set "data.image_size=$IMAGE_SIZE")
    extra+=(--set "pretrain.probe_data=$PROBE")  # the card's linear-probe AUC on PneumoniaMNIST val
    echo "== building $name-$backbone"
    start=$(date +%s)
    # shellcheck disable=SC2046
    "$MT" pretrain "$config" --out "$dir" "${extra[@]}" $(budget "$backbone" "$name") $resume
    printf '%s\t%s\t%s\n' "$name" "$backbone" "$(( $(date +%s) - start ))" >> "$OUT/build_times.tsv"
  done
done
"$MT" sources list --sources-dir "$OUT"
