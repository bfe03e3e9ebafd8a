"""The 3-D volume pipeline: ``task: segmentation`` on MSD or NIfTI folders of cases with label masks.

Cases and their splits come from :mod:`medtransfer.data.cases`, the networks, sources and the run from
:mod:`medtransfer.segmentation`. A study of volumes has no baselines and no external test set yet (refused by
:meth:`Volumes.check_study` before the study folder exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medtransfer.config import Config
from medtransfer.data.cases import case_split, load_cases, reseed_cases
from medtransfer.data.splits import Split
from medtransfer.data.volumes import SegDataset
from medtransfer.errors import UserError
from medtransfer.pipelines.base import PIPELINES, Pipeline
from medtransfer.segmentation.networks import build_seg_network
from medtransfer.segmentation.train import evaluate_segmentation, load_seg_source, train_segmentation


class Volumes(Pipeline):
    name = "volumes"
    unit = "cases"

    def check_study(self, cfg: Any) -> None:
        if cfg.study.baselines:
            raise UserError(
                f"study.baselines {cfg.study.baselines} are classification baselines; remove them for task: {cfg.task}"
            )
        if cfg.study.test is not None and cfg.study.test.path:
            raise UserError(
                f"study.test is not supported for {cfg.task} yet; evaluate runs with `medtransfer evaluate`"
            )

    def load(self, cfg: Config) -> SegDataset:
        return load_cases(cfg)

    def split(self, cfg: Config, ds: SegDataset, progress: bool = True) -> Split:
        return case_split(ds, cfg)

    def reseed(self, base: Split, ds: SegDataset, seed: int) -> Split:
        return reseed_cases(base, seed)

    def preflight_sources(self, cfg: Config, sources: dict[str, str], ds: SegDataset) -> None:
        extra = {"features": tuple(cfg.seg.features)} if cfg.seg.features else {}
        for name, source in sources.items():
            network = build_seg_network(cfg.model.backbone, ds.in_channels, ds.n_classes, **extra)
            try:
                load_seg_source(network, source, list(ds.class_names))
            except UserError as e:
                raise UserError(f"study source '{name}': {e}") from None

    def train(self, cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, prepared=None) -> dict:
        return train_segmentation(cfg, out, resume=resume, progress=progress)

    def evaluate(self, run: str | Path, data: str, out: str | Path, **options: Any) -> dict:
        """Dice and HD95 of a segmentation run; of the options only ``format``, ``split`` and ``split_file`` apply
        (labels, patient ids, TTA and the device are 2-D image options)."""
        keep = {k: options.get(k) for k in ("format", "split", "split_file")}
        return evaluate_segmentation(run, data, out, **keep)

    def summary(self, metrics: dict, command: str, out: Path) -> list[str]:
        m = metrics
        lo, hi = m["dice_ci"]
        score = f"Dice {m['dice']:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']} volumes)"
        if command == "evaluate":
            return [*([m["split_note"]] if m.get("split_note") else []), f"{score} → {out}"]
        return [f"{m['split']} {score}"]


PIPELINES.register("volumes", Volumes())
