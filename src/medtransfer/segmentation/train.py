"""One 3-D segmentation run (``task: segmentation``) through the same loop as classification.

cases (MSD or NIfTI folder, optional case list and partial-label file) → case split with nested training subsets
→ network + source weights (body by key, head channels by class name) → strategy → ``training.loop.fit`` on
foreground-balanced random patches with the partial-label loss, best epoch by mean validation Dice (sliding
window) → test Dice / HD95 per case → ``metrics.json`` (``dice``, ``dice_ci``, ``per_label``), ``cases.csv``.

A run folder holds what a classification run holds (``config.yaml``, ``run_info.json``, ``split.csv``,
``model.safetensors`` with the class names in its metadata, ``history.csv``, ``metrics.json``, ``status.json``,
``checkpoint.pt``); such a folder is itself a source: ``model.source: RUN``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from medtransfer.config import Config, load_config, replace
from medtransfer.data.cases import case_split, load_cases
from medtransfer.data.volumes import Volume, foreground_patches, read_case, sliding_window_predict
from medtransfer.errors import DataError, UserError
from medtransfer.evaluation.metrics import to_jsonable
from medtransfer.io import atomic_write, atomic_write_text
from medtransfer.segmentation.losses import annotated_mask, partial_label_loss
from medtransfer.segmentation.metrics import dice_per_class, hd95_per_class, summarize_segmentation
from medtransfer.segmentation.networks import build_seg_network, transfer_head
from medtransfer.training.checkpoint import load_weights_file, save_weights
from medtransfer.training.fitting import fit_best
from medtransfer.training.run import pick_device, run_in_folder

log = logging.getLogger(__name__)

CASES_FILE = "cases.csv"


# --------------------------------------------------------------------------- batches and task
class SegTask:
    """The loss of :func:`medtransfer.training.loop.fit` for segmentation: ``y = (labels, annotated mask)``."""

    kind = "segmentation"

    def loss(self, logits: torch.Tensor, y: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        target, annotated = y
        return partial_label_loss(logits.float(), target, annotated)


class PatchBatches:
    """Random foreground-balanced patches of the training volumes, new ones every epoch, seeded by (seed, epoch).

    No further augmentation: random patch positions are the augmentation (flips would swap left and right
    structures, which some tasks label separately).
    """

    def __init__(self, volumes: list[Volume], cfg: Config, n_classes: int, device: torch.device) -> None:
        self.volumes, self.s, self.n_classes, self.device = volumes, cfg.seg, n_classes, device
        self.batch_size = cfg.train.batch_size
        self.total = len(volumes) * self.s.patches_per_volume

    max_batches: int | None = None  # set by training.fitting.cap_epochs: an epoch stops after this many batches

    def __len__(self) -> int:
        full = max(1, math.ceil(self.total / self.batch_size))
        return full if self.max_batches is None else min(full, self.max_batches)

    def epoch(self, seed: int, epoch: int):
        rng = np.random.default_rng([seed, epoch, 41])
        items = []
        for v in self.volumes:
            for image, label in foreground_patches(
                v, self.s.patch_size, self.s.patches_per_volume, self.s.fg_fraction, rng
            ):
                items.append((image, label, v.annotated))
        order = rng.permutation(len(items))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            chunk = [items[i] for i in order[start : start + self.batch_size]]
            x = torch.from_numpy(np.stack([c[0] for c in chunk])).to(self.device, non_blocking=True)
            t = torch.from_numpy(np.stack([c[1] for c in chunk])).to(self.device, non_blocking=True)
            m = annotated_mask([c[2] for c in chunk], self.n_classes).to(self.device)
            yield x, (t, m)


# --------------------------------------------------------------------------- weights
def load_seg_source(model: torch.nn.Module, source: str, class_names: list[str]) -> str:
    """Load a source's body by key (shapes checked; a missing body key refuses) and its head channels by class
    name (``segmentation.networks.transfer_head``); returns a one-line report."""
    if source == "scratch":
        return "random initialisation: nothing loaded"
    path = Path(source).expanduser()
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"segmentation source {source}: no model.safetensors (a segmentation run folder or file)")
    with safe_open(str(file), "pt") as f:
        meta = f.metadata() or {}
    if "class_names" not in meta:
        raise UserError(f"{file} has no class names in its metadata; it was not written by a segmentation run")
    state = load_file(str(file))
    head_keys = {k for k in model.state_dict() if k.startswith("final_conv.")}
    own = model.state_dict()
    body = {k: v for k, v in state.items() if k not in head_keys}
    missing = sorted(k for k in own if k not in head_keys and k not in body)
    if missing:
        raise UserError(f"{file} lacks {len(missing)} body weights of this network, e.g. {missing[:3]}")
    wrong = [k for k, v in body.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise UserError(f"{file}: {len(wrong)} weights have other shapes (another network width?), e.g. {wrong[:2]}")
    model.load_state_dict({**own, **{k: v for k, v in body.items() if k in own}})
    mapped = transfer_head(state, json.loads(meta["class_names"]), model, class_names)
    return f"loaded {len(body)} body tensors from {file}; head channels by class name: {mapped or 'none'}"


# --------------------------------------------------------------------------- evaluation
def predict_labels(model, volume: Volume, cfg: Config) -> np.ndarray:
    probs = sliding_window_predict(model, torch.from_numpy(volume.image), cfg.seg.patch_size, cfg.seg.overlap)
    return probs.argmax(0).cpu().numpy()


def score_cases(model, volumes: list[Volume], cfg: Config, n_classes: int, hd95: bool) -> pd.DataFrame:
    """Per case: Dice (and HD95 in mm) of each foreground class; NaN where a class is in neither.

    A class the case does not annotate is NaN too: its voxels were read as 0, so a network that (rightly)
    segments it would otherwise score Dice 0 there, and a sparsely annotated validation set would report
    about half its true Dice.
    """
    rows = []
    for v in volumes:
        pred = predict_labels(model, v, cfg)
        row = {"case": v.id}
        dice = dice_per_class(pred, v.label, n_classes)
        for k, d in enumerate(dice, start=1):
            row[f"dice:{k}"] = d if k in v.annotated else float("nan")
        if hd95:
            for k, h in enumerate(hd95_per_class(pred, v.label, n_classes, v.spacing), start=1):
                row[f"hd95:{k}"] = h if k in v.annotated else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the run
def train_segmentation(cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train and evaluate one segmentation configuration; returns what ``metrics.json`` holds.

    Example:
        >>> cfg = load_config("examples/hippocampus_train.yaml", ["data.path=.../msd_hippocampus"])  # doctest: +SKIP
        >>> train_segmentation(cfg, "runs/hippo")["dice"]                                           # doctest: +SKIP
    """
    return run_in_folder(cfg, out_dir, resume, lambda out, _: _train_seg(cfg, out, progress))


def _train_seg(cfg: Config, out: Path, progress: bool) -> dict:
    ds = load_cases(cfg)
    split = case_split(ds, cfg)
    split.save(out / "split.csv")
    ids = split.table["image_id"].to_numpy()
    train_ids = ids[split.train_subset(cfg.train.n_train)]
    val_ids, test_ids = ids[split.indices("val")], ids[split.indices("test")]
    if len(val_ids) == 0:
        raise DataError("segmentation needs validation cases for the best epoch; raise data.split_fractions[1]")
    spacing = cfg.seg.spacing
    window = tuple(cfg.seg.ct_window)

    def read(case_ids):
        return [read_case(ds, c, spacing, ct_window=window) for c in case_ids]

    train_vols, val_vols = read(train_ids), read(val_ids)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.train.device)
    extra = {"features": tuple(cfg.seg.features)} if cfg.seg.features else {}
    model = build_seg_network(cfg.model.backbone, ds.in_channels, ds.n_classes, **extra)
    log.info("weights: %s", load_seg_source(model, cfg.model.source, list(ds.class_names)))
    model.to(device)
    train = PatchBatches(train_vols, cfg, ds.n_classes, device)

    def val_dice(m) -> float:
        table = score_cases(m, val_vols, cfg, ds.n_classes, hd95=False)
        values = table.filter(like="dice:").to_numpy(dtype=float)
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    state, _ = fit_best(cfg, out, model, SegTask(), train, None, device, progress, score=val_dice)
    save_weights(
        out / "model.safetensors",
        model,
        metadata={
            "task": cfg.task,
            "backbone": cfg.model.backbone,
            "class_names": json.dumps(list(ds.class_names)),
            "in_chans": str(ds.in_channels),
            "features": json.dumps(list(model.features)),
            "patch_size": json.dumps(list(cfg.seg.patch_size)),
            "modality": ds.modality,
        },
    )
    eval_ids, where = (test_ids, "test") if len(test_ids) else (val_ids, "val")
    eval_vols = val_vols if where == "val" else read(eval_ids)
    table = score_cases(model, eval_vols, cfg, ds.n_classes, hd95=cfg.seg.hd95)
    names = list(ds.class_names)
    table = table.rename(
        columns={f"{m}:{k}": f"{m}:{names[k]}" for m in ("dice", "hd95") for k in range(1, len(names))}
    )
    atomic_write(out / CASES_FILE, lambda tmp: table.to_csv(tmp, index=False))
    dices = table[[f"dice:{n}" for n in names[1:]]].to_numpy(dtype=float)
    metrics = summarize_segmentation(dices, names, seed=cfg.seed)
    if cfg.seg.hd95:
        hd = hd95_summary(table, names)
        for n, v in hd.pop("per_label").items():
            metrics["per_label"][n].update(v)
        metrics.update(hd)
    metrics.update(
        {
            "split": where,
            "task": cfg.task,
            "n_train": int(len(train_ids)),
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "val_dice": state.best_score,
            "class_names": names,
        }
    )
    return metrics


def hd95_summary(table: pd.DataFrame, names: list[str]) -> dict:
    """Median HD95 (mm) over cases per class and their mean; a structure missed on one side has HD95 = inf, which
    a median keeps as 'large' (a mean would drop or explode on it), and ``hd95_inf`` counts those cases."""
    out: dict = {"per_label": {}}
    medians, missed = [], 0
    for n in names[1:]:
        col = table[f"hd95:{n}"].to_numpy(dtype=float)
        col = col[~np.isnan(col)]  # NaN: the class is in neither volume
        med = float(np.median(col)) if col.size else float("nan")
        out["per_label"][n] = {"hd95": med, "hd95_inf": int(np.isinf(col).sum())}
        missed += int(np.isinf(col).sum())
        medians.append(med)
    finite = [m for m in medians if not np.isnan(m)]
    out["hd95"] = float(np.mean(finite)) if finite else float("nan")
    out["hd95_inf"] = missed
    return out


def evaluate_segmentation(
    run_dir: str | Path,
    data: str,
    out: str | Path,
    format: str | None = None,
    split: str | None = None,
    split_file: str | Path | None = None,
) -> dict:
    """Dice (mean, bootstrap CI, per label) and HD95 of a segmentation run on any folder with the same classes.

    ``split`` picks the cases of that split from the run's ``split.csv``, or from ``split_file`` (a CSV with
    ``image_id`` and ``split``, e.g. a study's ``splits/base.csv``: a source model scored on a study's test cases).
    Without ``split``, the run's own data is scored on its test cases (said so in ``split_note``), other data whole;
    ``all`` scores every case, with a warning when some trained the model.
    """
    run = Path(run_dir)
    cfg = load_config(run / "config.yaml")
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        meta = f.metadata() or {}
    names = json.loads(meta["class_names"])
    model = build_seg_network(
        meta.get("backbone", cfg.model.backbone),
        int(meta["in_chans"]),
        len(names),
        features=tuple(json.loads(meta["features"])),
    )
    load_weights_file(run / "model.safetensors", model)
    target = replace(
        cfg,
        **{
            "data.path": str(data),
            "data.format": format,
            "seg.cases_file": None,
            "seg.annotated_file": None,
            "data.split_file": None,
        },
    )
    ds = load_cases(target)
    if [n.casefold() for n in ds.class_names] != [n.casefold() for n in names]:
        raise DataError(f"{data} has classes {ds.class_names} but the model segments {names}")
    ids = [c.id for c in ds.cases]
    own = bool(cfg.data.path) and Path(str(data)).expanduser().resolve() == Path(cfg.data.path).expanduser().resolve()
    note = None
    if own and (run / "split.csv").is_file() and split in (None, "all"):
        if split is None:
            split = "test"
            note = f"{data} is the run's own data: scoring its test cases (--split all scores every case)"
        else:
            note = "warning: --split all scores the cases the run was trained on too: the score is optimistic"
            log.warning(note)
    if split == "all":
        split = None
    if split is not None:
        where = Path(split_file) if split_file is not None else run / "split.csv"
        if not where.is_file():
            raise UserError(f"split file {where} does not exist")
        table = pd.read_csv(where, dtype={"image_id": str})
        if not {"image_id", "split"} <= set(table.columns):
            raise UserError(f"{where} has no image_id and split columns (columns: {list(table.columns)})")
        chosen = set(table.loc[table["split"] == split, "image_id"])
        ids = [i for i in ids if i in chosen]
        if not ids:
            raise UserError(f"no case of {data} is in the '{split}' split of {where}")
    vols = [read_case(ds, c, cfg.seg.spacing, ct_window=tuple(cfg.seg.ct_window)) for c in ids]
    table = score_cases(model, vols, cfg, len(names), hd95=cfg.seg.hd95)
    dices = table[[f"dice:{k}" for k in range(1, len(names))]].to_numpy(dtype=float)
    metrics = summarize_segmentation(dices, names, seed=cfg.seed)
    metrics.update({"data": str(data), "split": split or "all", "run": str(run)})
    if note:
        metrics["split_note"] = note
    if split_file is not None:
        metrics["split_file"] = str(split_file)
    atomic_write_text(out, json.dumps(to_jsonable(metrics), indent=2))
    return metrics
