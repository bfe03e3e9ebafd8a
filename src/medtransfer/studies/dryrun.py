"""``medtransfer study CONFIG --dry-run``: the plan of a study, resolved and timed, with nothing written.

It checks what :func:`~medtransfer.studies.runner.plan` checks before a study folder is made (the ``--out`` rules,
the grid, the sources and their cards, the strategies with their ``study.strategy_settings``, the baselines, an
external test set), prints the trials per N with each strategy's resolved settings, and estimates the time from a
few optimizer steps timed on this machine (:mod:`medtransfer.training.plan`). The split is made in memory; no
split file, ledger, image cache or folder is written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from medtransfer.baselines.base import get_baseline
from medtransfer.config import Config, from_dict, to_dict
from medtransfer.errors import ConfigError
from medtransfer.io import check_output_folder
from medtransfer.models.catalogue import lookup
from medtransfer.models.weights import resolve_weights
from medtransfer.pipelines.base import pipeline_for
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.grid import expand, reference_arm
from medtransfer.studies.ledger import LEDGER_FILE, STUDY_MARKER
from medtransfer.studies.trial import StudyContext
from medtransfer.training.plan import duration
from medtransfer.transfer.strategies import arm_transfer, build_strategy


def dry_run_study(cfg: StudyConfig, out: str | Path | None, resume: bool = False, workers: int | None = None) -> str:
    """The study's plan as text (see the module docstring); raises what the study itself would raise."""
    pipe = pipeline_for(cfg.task)
    pipe.check_study(cfg)
    if out is not None:
        o = Path(out)
        check_output_folder(o, resume, (o / STUDY_MARKER).is_file() or (o / LEDGER_FILE).exists(), "study")
    run = pipe.plan_run(_first_arm(cfg), None, timed=True)  # data, detected task and format, split, one timed batch
    counts = run.split.counts()
    trials = expand(cfg.study, counts["train"])
    reference = reference_arm(cfg.study, trials)
    sources = {s: lookup(s, cfg.study.sources_dir) for s in cfg.study.sources}
    pipe.preflight_sources(cfg, sources, run.ds)
    for name in cfg.study.baselines:
        get_baseline(name).check(run.task)
    if cfg.study.test and cfg.study.test.path:
        pipe.preflight_test(cfg, run.ds)
    ctx = StudyContext(cfg, str(out or "."), sources)
    settings: dict[str, dict] = {}
    for trial in trials:
        if trial.kind == "net" and trial.strategy not in settings:
            tc = ctx.train_config(trial)
            try:
                settings[trial.strategy] = build_strategy(tc.transfer, tc.train).settings()
            except ConfigError as e:
                raise ConfigError(f"study strategy '{trial.strategy}': {e}") from None

    skip = ("strategy", "training", "estimate", "output")  # per trial below, not the base config's
    lines = [line for line in run.text().splitlines() if not line.startswith(skip)]
    lines.append("sources")
    for name, value in sources.items():
        spec = resolve_weights(value, cfg.model.backbone)
        card = ", ".join(
            f"{k} {v}" for k, v in (("method", spec.method), ("modality", spec.modality), ("site", spec.site)) if v
        )
        lines.append(f"  {name}: {spec.description or spec.kind}" + (f" ({card})" if card else ""))
    lines.append("strategies (resolved, with study.strategy_settings)")
    for name, s in settings.items():
        lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "strategy"))
    if cfg.study.baselines:
        lines.append(f"baselines  {', '.join(cfg.study.baselines)} (not timed)")
    lines.append(f"reference  {reference}")

    per_n = Counter((t.n_label, t.n) for t in trials)
    seconds = 0.0
    arms = len({t.arm for t in trials})
    lines.append(f"trials     {len(trials)} ({arms} arms × {len(per_n)} sizes × {len(cfg.study.seeds)} seeds)")
    for (label, n), count in sorted(per_n.items(), key=lambda kv: kv[0][1]):
        nets = sum(1 for t in trials if t.n_label == label and t.kind == "net")
        each = run.estimate_s(n) or 0.0
        seconds += nets * each
        lines.append(f"  N = {label:>5} ({n} images): {count} trials, {duration(each)} per network trial")
    k = max(1, workers or cfg.study.workers)
    decode = f" + {duration(run.decode_s())} to decode the images once" if run.decode_s() >= 1 else ""
    lines.append(
        f"estimate   {duration(seconds / k)} for the network trials with {k} worker(s){decode} "
        f"(from {run.timing.step_s * 1000:.0f} ms per step measured here; trials sharing cores run slower)"
    )
    lines.append(f"output     {out if out else '(no --out given)'}: nothing was written (dry run)")
    return "\n".join(lines)


def _first_arm(cfg: StudyConfig) -> Config:
    """The plain run config of the study's first strategy (the ``study`` section removed): what is planned and timed
    for every network trial."""
    data = {k: v for k, v in to_dict(cfg).items() if k != "study"}
    data["transfer"] = arm_transfer(data["transfer"], (cfg.study.strategies or ["scratch"])[0])
    return from_dict(Config, data)
