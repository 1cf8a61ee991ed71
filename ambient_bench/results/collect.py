"""Gather finished stage summaries of a suite into one long-form table (CSV).

One row per (cell, quantity). Quantities are the metrics of the evaluate stages plus the
annotation summaries ``sigma_min_mean`` and ``sigma_max_mean`` (the paper's mean-sigma columns), plus
``<score>_win_rate`` for metrics that keep per-sample scores (paper Table 5). Every row carries its
cell's whole configuration (one dotted column per key) and the protocol behind the number; a metric
with samples of its own (``evaluate.per_metric_sample``) carries the sample settings they were drawn with.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ambient_bench import fileio
from ambient_bench.config.schema import PER_METRIC_SAMPLE_KEYS, as_list, spec_label
from ambient_bench.config.suite import Suite, flatten
from ambient_bench.engine.cells import metric_samples
from ambient_bench.engine.runner import Graph
from ambient_bench.engine.stages import PER_SAMPLE
from ambient_bench.engine.store import RunStore
from ambient_bench.errors import UserError
from ambient_bench.registry import DATASETS, METHODS, METRICS

PROTOCOL = ("dataset", "dataset_hash", "clean_fraction", "num_samples", "sampler", "checkpoint",
            "feature_extractor", "implementation", "profile", "standin_data", "classifier", "low_quality_dropped",
            "folder_counts")
# what computed the row's number (engine/provenance.py, from the producing stage's status.json)
PROVENANCE = ("stage_keys", "code_version", "git_commit", "git_dirty", "torch", "cuda", "device", "host",
              "computed_at", "wall_seconds")
UNKNOWN = "unknown (stage finished before provenance was recorded)"


def _flat_row(config: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(config).items()}


def unfinished_cells(suite: Suite, graph: Graph, store: RunStore) -> list[str]:
    """One entry per cell that ``collect`` leaves out: its label and its first stage that is not done (with the
    stage's state), so a run never drops a cell from results.csv without naming it."""
    missing = []
    for cell, stages in zip(suite.cells, graph.cells):
        states = [(s, store.state(s.kind, s.key)) for s in stages.values()]
        undone = [(s, state) for s, state in states if state != "done"]
        if undone:
            stage, state = undone[0]
            missing.append(f"{cell.label} (stage {stage.kind} {stage.key[:16]} is {state})")
    return missing


def cells_without_rows(suite: Suite, frame: pd.DataFrame) -> list[str]:
    """The suite's cells that have no row in a results.csv (an edited or stale file; tables show them as –)."""
    present = set(frame.loc[frame["suite"].astype(str) == suite.name, "cell"].astype(str))
    return [cell.label for cell in suite.cells if cell.label not in present]


def done_cells(suite: Suite, graph: Graph, store: RunStore) -> set[str]:
    """Labels of the cells whose stages are all done in ``store`` (their rows belong in results.csv)."""
    return {cell.label for cell, stages in zip(suite.cells, graph.cells)
            if all(store.state(s.kind, s.key) == "done" for s in stages.values())}


def collect(suite: Suite, graph: Graph, store: RunStore) -> pd.DataFrame:
    """Rows for every cell whose stages are done (unfinished cells are left out: ``unfinished_cells``)."""
    flat = [_flat_row({k: v for k, v in cell.config.items() if k != "evaluate"}) for cell in suite.cells]
    config_columns = list(dict.fromkeys(k for f in flat for k in f))
    rows, scored = [], []
    for cell, stages, config in zip(suite.cells, graph.cells, flat):
        needed = [s for s in stages.values()]
        if any(store.state(s.kind, s.key) != "done" for s in needed):
            continue
        cfg = cell.config
        base = {"suite": suite.name, "cell": cell.label, **{c: config.get(c) for c in config_columns}}
        train, sample = cfg["train"], cfg["sample"]
        protocol = {
            "dataset": spec_label(cfg["dataset"]),
            "dataset_hash": store.summary("mix", stages["mix"].key)["dataset_hash"][:16],
            "clean_fraction": cfg["mix"]["clean_fraction"],
            "num_samples": sample["num"],
            **_sampling(sample, train),
            "profile": suite.profile,
            "standin_data": bool(DATASETS.build(cfg["dataset"]).fingerprint().get("standin")),
        }
        counts = getattr(DATASETS.build(cfg["dataset"]), "folder_counts", None)
        if counts is not None:  # the user's folders: how many good and bad images, not a clean fraction of 1
            protocol["folder_counts"] = counts()
        annotate = store.summary("annotate", stages["annotate"].key)
        protocol.update(_classifier_protocol(cfg, stages, store, annotate))
        for quantity in ("sigma_min_mean", "sigma_max_mean"):
            rows.append({**base, "quantity": quantity, "value": annotate.get(quantity),
                         "stage_key": stages["annotate"].key[:16], **protocol,
                         "feature_extractor": None, "implementation": None})
        noise = stages.get("classifier:noise")
        if noise is not None:  # the noise classifier's held-out ROC-AUC at the lowest noise levels
            quality = store.summary("classifier", noise.key).get("quality") or {}
            rows.append({**base, "quantity": "classifier_auc_low", "value": quality.get("auc_low"),
                         "stage_key": noise.key[:16], **protocol, "feature_extractor": None,
                         "implementation": f"{'in-sample' if quality.get('in_sample') else 'held-out'} ROC-AUC, "
                                           f"mean of the lowest noise levels "
                                           f"(σ ≤ {quality.get('low_sigma_max', float('nan')):.2g})"})
        suffix, protocol["checkpoint"] = _selected_snapshot(cfg, stages, store, protocol["checkpoint"])
        rows += _model_rows(base, protocol, stages, store)
        own = metric_samples(cfg)
        for metric in cfg["evaluate"]["metrics"]:
            metric_base, metric_protocol = base, protocol
            if metric["name"] in own:  # its own samples: the row says which settings they were drawn with
                sample_m = own[metric["name"]]
                metric_base = {**base, **{f"sample.{k}": sample_m[k] for k in PER_METRIC_SAMPLE_KEYS}}
                metric_protocol = {**protocol, **{k: v for k, v in _sampling(sample_m, train).items()
                                                  if k == "sampler" or not suffix}}
            for prefix, ending in (("evaluate", ""), ("heldout", "_heldout")):
                stage = stages.get(f"{prefix}:{metric['name']}{suffix}")
                if stage is None:
                    continue
                summary = store.summary("evaluate", stage.key)
                for quantity, value in summary["values"].items():
                    rows.append({**metric_base, "quantity": quantity + ending, "value": value,
                                 "stage_key": stage.key[:16], **metric_protocol,
                                 "feature_extractor": summary["protocol"].get("feature_extractor"),
                                 "implementation": summary["protocol"].get("implementation")})
                if prefix == "evaluate" and summary.get("per_sample"):  # win-rates on the training reference
                    scored.append((metric_base, metric_protocol, metric, stage, summary))
    rows += _win_rate_rows(scored, store)
    _add_provenance(rows, graph, suite, store)
    columns = ["suite", "cell", *config_columns, "quantity", "value", "stage_key", *PROTOCOL, *PROVENANCE]
    return pd.DataFrame(rows, columns=columns)


def _sampling(sample: dict[str, Any], train: dict[str, Any]) -> dict[str, str]:
    """The protocol columns ``sampler`` and ``checkpoint`` of samples drawn with ``sample``."""
    return {"sampler": f"EDM Heun, {sample['steps']} steps ({2 * sample['steps'] - 1} NFE)"
                       + (f", guidance {sample['guidance']:g}" if sample.get("guidance", 1) != 1 else ""),
            "checkpoint": (f"power-function EMA σ_rel {sample['ema_sigma_rel'] or train['ema_sigma_rels'][0]:g}"
                           f"{' (post-hoc)' if sample['ema_sigma_rel'] else ''} after {train['duration_kimg']:g} kimg"
                           if train.get("ema_sigma_rels") else
                           f"final EMA weights (half-life {train['ema_halflife_kimg']:g} kimg) "
                           f"after {train['duration_kimg']:g} kimg")}


def _add_provenance(rows: list[dict[str, Any]], graph: Graph, suite: Suite, store: RunStore) -> None:
    """Each row: the keys of its cell's stages, and who computed its number with what, when, how long."""
    by_prefix: dict[str, tuple[str, str]] = {}
    cell_keys: dict[str, str] = {}
    for cell, stages in zip(suite.cells, graph.cells):
        cell_keys[cell.label] = json.dumps({name: stage.key[:16] for name, stage in stages.items()
                                            if name in ("mix", "latents", "annotate", "train", "sample")})
        for stage in stages.values():
            by_prefix[stage.key[:16]] = (stage.kind, stage.key)
    cache: dict[str, dict[str, Any]] = {}
    for row in rows:
        prefix = row.get("stage_key")
        if prefix not in cache:
            cache[prefix] = _stage_provenance(store, *by_prefix[prefix]) if prefix in by_prefix else {}
        row.update({"stage_keys": cell_keys.get(row["cell"]), **cache[prefix]})


def _stage_provenance(store: RunStore, kind: str, key: str) -> dict[str, Any]:
    status = store.status(kind, key)
    recorded = status.get("provenance") or {}
    wall = status.get("wall_seconds")
    if wall is None and status.get("started") and status.get("updated"):  # older stages: from their times
        from datetime import datetime

        fmt = "%Y-%m-%dT%H:%M:%S%z"
        wall = (datetime.strptime(status["updated"], fmt) - datetime.strptime(status["started"], fmt)).total_seconds()
    return {"code_version": recorded.get("code_version", UNKNOWN), "git_commit": recorded.get("git_commit", UNKNOWN),
            "git_dirty": recorded.get("git_dirty", UNKNOWN), "torch": recorded.get("torch", UNKNOWN),
            "cuda": recorded.get("cuda", UNKNOWN), "device": recorded.get("device", UNKNOWN),
            "host": status.get("host"), "computed_at": status.get("updated"), "wall_seconds": wall}


def _model_rows(base: dict[str, Any], protocol: dict[str, Any], stages: dict[str, Any],
                store: RunStore) -> list[dict[str, Any]]:
    """``parameters_m`` (the trained network's size, millions) and ``nfe`` (network evaluations per sample),
    the last columns of the paper's Table 1."""
    train = store.summary("train", stages["train"].key).get("num_parameters")
    sample = store.summary("sample", stages["sample"].key).get("nfe")
    extra = {**protocol, "feature_extractor": None}
    out = []
    if train is not None:
        out.append({**base, "quantity": "parameters_m", "value": train / 1e6, "stage_key": stages["train"].key[:16],
                    **extra, "implementation": "trainable parameters of the denoiser"})
    if sample is not None:
        out.append({**base, "quantity": "nfe", "value": sample, "stage_key": stages["sample"].key[:16], **extra,
                    "implementation": "Heun: 2·steps − 1 network evaluations per sample (a guide doubles them)"})
    return out


def _classifier_protocol(cfg: dict[str, Any], stages: dict[str, Any], store: RunStore,
                         annotate: dict[str, Any]) -> dict[str, Any]:
    """What the noise classifier learnt from and how good it is; how many low-quality images the
    annotation dropped (for footnotes: a method that silently drops them all is the clean-only model)."""
    out: dict[str, Any] = {"classifier": None, "low_quality_dropped": None}
    noise = stages.get("classifier:noise")
    if noise is not None:
        summary = store.summary("classifier", noise.key)
        quality = summary.get("quality") or {}
        auc = quality.get("auc_low")
        out["classifier"] = (f"noise classifier on {noise.describe.split(' on ', 1)[-1]}: {summary['num_images']:,} "
                             f"training images, {summary.get('prior', float('nan')):.0%} low quality; "
                             f"{'in-sample' if quality.get('in_sample') else 'held-out'} ROC-AUC "
                             + ("n/a" if auc is None else f"{auc:.2f}")
                             + f" at σ ≤ {quality.get('low_sigma_max', float('nan')):.2g}")
    dropped = annotate.get("num_dropped_low_quality", 0)
    total = dropped + annotate.get("num_corrupted", 0)
    if METHODS.get(cfg["method"]["name"]).uses_bad_data and total:
        out["low_quality_dropped"] = f"{dropped:,} of {total:,}"
    return out


def win_rate(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> float:
    """Fraction of indices where ``a`` scores better than ``b`` (ties count ½); NaN pairs are left out."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"win_rate needs paired scores of equal length, got {a.shape} and {b.shape}")
    valid = ~(np.isnan(a) | np.isnan(b))
    if not valid.any():
        return math.nan
    a, b = (a[valid], b[valid]) if higher_is_better else (b[valid], a[valid])
    return float(np.mean((a > b) + 0.5 * (a == b)))


WIN_RATE_RULE = ("fraction of sample seeds where this method's sample scores better than the same seed's sample "
                 "of another method with otherwise the same configuration (ties ½), averaged over those methods; "
                 "with two methods each is compared with the other, as in the paper's Table 5")


def _win_rate_rows(scored: list[tuple], store: RunStore) -> list[dict[str, Any]]:
    """``<name>_win_rate`` rows for evaluate stages that kept per-sample scores (see WIN_RATE_RULE).

    Sample i of every model comes from seed i, so scores pair by index. Cells are grouped by
    their whole configuration except ``method`` (seed, data, sampler and metric all equal); a
    cell alone in its group gets no win-rate.
    """
    groups: dict[str, list[tuple]] = {}
    for entry in scored:
        base, _, metric, _, _ = entry
        identity = {k: v for k, v in base.items() if k not in ("cell", "method") and not k.startswith("method.")}
        groups.setdefault(json.dumps([identity, metric], sort_keys=True, default=str), []).append(entry)
    rows = []
    for members in groups.values():
        if len(members) < 2:
            continue
        scores = []
        for _, _, _, stage, _ in members:
            with np.load(store.dir("evaluate", stage.key) / PER_SAMPLE) as stored:
                scores.append(dict(stored))
        for i, (base, protocol, metric, stage, summary) in enumerate(members):
            higher = METRICS.get(metric["name"]).higher_is_better
            for name in summary["per_sample"]:
                rates = [win_rate(scores[i][name], scores[j][name], higher)
                         for j in range(len(members)) if j != i and name in scores[j]]
                rows.append({**base, "quantity": f"{name}_win_rate",
                             "value": float(np.mean(rates)) if rates else math.nan,
                             "stage_key": stage.key[:16], **protocol,
                             "feature_extractor": f"{summary['protocol'].get('feature_extractor')}; "
                                                  f"win-rate: {WIN_RATE_RULE}",
                             "implementation": summary["protocol"].get("implementation")})
    return rows


def _selected_snapshot(cfg: dict[str, Any], stages: dict[str, Any], store: RunStore,
                       final: str) -> tuple[str, str]:
    """(stage-name suffix, checkpoint description) of the snapshot the cell reports.

    ``evaluate.select: best`` picks the snapshot with the best first metric, as the paper
    reports the best FID over its snapshots; the description says so, for the footnote.
    """
    suffixes = [""] + [name.split("@", 1)[1] for name in stages if name.startswith("sample@")]
    if len(suffixes) == 1 or cfg["evaluate"]["select"] == "last":
        return "", final + (f" (last of {len(suffixes)} snapshots)" if len(suffixes) > 1 else "")
    first = cfg["evaluate"]["metrics"][0]
    higher = METRICS.get(first["name"]).higher_is_better

    def score(suffix: str) -> float:
        values = store.summary("evaluate", stages[f"evaluate:{first['name']}{'@' + suffix if suffix else ''}"].key)
        value = next(iter(values["values"].values()))
        return -value if higher else value

    best = min(suffixes, key=score)
    where = "the final network" if not best else f"the EMA snapshot at {best} kimg"
    return ("@" + best if best else ""), (f"{where}: best {first['name']} of {len(suffixes)} snapshots "
                                          f"(at {', '.join(suffixes[1:])} kimg and the final one)")


def write_results(df: pd.DataFrame, results_dir: Path) -> Path:
    """results.csv, and results.parquet beside it when pyarrow is installed (the same rows, typed)."""
    path = Path(results_dir) / "results.csv"
    fileio.write_text(path, df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return path
    table = df.astype({c: "string" for c in df.columns if df[c].dtype == object})  # mixed-type columns
    fileio.atomic_write(Path(results_dir) / "results.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    return path


def _shape_problem(frame: pd.DataFrame, names: pd.DataFrame | None = None) -> str | None:
    """What a parsed results.csv lacks of the shape ``write_results`` gives it, or None. ``names``: the
    suite/cell/quantity columns read as plain text (pandas reads a suite called "nan" or "NA" as missing)."""
    missing = [c for c in ("suite", "cell", "quantity", "value") if c not in frame.columns]
    if missing:
        return f"no column {', '.join(missing)}"
    if not len(frame):
        return "no rows"
    if not isinstance(frame.index, pd.RangeIndex):  # pandas' reading of rows longer than the header
        return "a row has more fields than the header"
    for column in ("suite", "cell", "quantity"):  # a stray quote shifts a row's fields: its names go missing
        text = names[column] if names is not None else frame[column].fillna("")
        empty = np.flatnonzero((text.astype(str) == "").to_numpy())
        if len(empty):
            return f"no {column} in line {empty[0] + 2}"
    identity = ["suite", "cell", "quantity", *(c for c in frame.columns if c.endswith(".seed"))]
    repeated = np.flatnonzero(frame.duplicated(subset=identity).to_numpy())
    if len(repeated):
        row = frame.iloc[repeated[0]]
        return f"line {repeated[0] + 2} repeats {row['quantity']} of cell {row['cell']}"
    numbers = pd.to_numeric(frame["value"], errors="coerce")
    bad = np.flatnonzero(numbers.isna() & frame["value"].notna())
    return f"value {frame['value'].iloc[bad[0]]!r} in line {bad[0] + 2} is not a number" if len(bad) else None


def read_results(results_dir: Path, suite_file: str | Path | None = None) -> pd.DataFrame:
    """A results.csv that ``write_results`` wrote; one that is empty or garbled is a UserError naming it and
    how to write it again (``suite_file``: the suite to name in that command)."""
    path = Path(results_dir) / "results.csv"
    try:
        frame = pd.read_csv(path)
        names = pd.read_csv(path, usecols=lambda c: c in ("suite", "cell", "quantity"), dtype=str,
                            keep_default_na=False)
        problem = _shape_problem(frame, names)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if problem is None:
        return frame
    raise UserError(f"{path} is empty or garbled ({problem}); write it again with `python -m ambient_bench run "
                    f"{suite_file or 'SUITE.yaml'}` (stages already done are reused: it only rewrites the results "
                    f"from the run store), or restore it from version control")


def export_figures(suite: Suite, graph: Graph, store: RunStore, results_dir: Path) -> Path | None:
    """Copy each finished annotate stage's figures into ``results_dir/figures/`` and index them.

    ``figures.md`` lists, per annotation, the cells that use it and its figures (paper Figs.
    2, 6, 15 and the sigma_min histogram), so the figures travel with the committed results.
    """
    import shutil

    sections, seen = [], set()
    for cell, stages in zip(suite.cells, graph.cells):
        stage = stages["annotate"]
        if stage.key in seen or store.state("annotate", stage.key) != "done":
            continue
        seen.add(stage.key)
        pngs = sorted(store.dir("annotate", stage.key).glob("*.png"))
        if not pngs:
            continue
        users = [c.label for c, s in zip(suite.cells, graph.cells) if s["annotate"].key == stage.key]
        folder = Path(results_dir) / "figures" / f"annotate-{stage.key[:16]}"
        lines = [f"## {stage.describe}", "", "Cells: " + "; ".join(f"`{u}`" for u in users), ""]
        for png in pngs:
            target = folder / png.name
            if not target.exists() or target.read_bytes() != png.read_bytes():
                fileio.atomic_write(target, lambda tmp, png=png: shutil.copyfile(png, tmp))
            lines.append(f"![{png.stem}](figures/{folder.name}/{png.name})")
        sections.append("\n".join(lines))
    # folders of annotations the suite no longer has (a changed config or code version) would
    # otherwise sit in the committed results beside the current ones
    current = {f"annotate-{stages['annotate'].key[:16]}" for stages in graph.cells}
    for stale in (Path(results_dir) / "figures").glob("annotate-*"):
        if stale.is_dir() and stale.name not in current:
            shutil.rmtree(stale)
    combined = _sigma_min_across_cells(suite, graph, store, Path(results_dir) / "figures" / "sigma_min_by_level.png")
    if combined is not None:
        sections.insert(0, "## sigma_min per corruption level, all annotations of the suite\n\n"
                           f"![sigma_min by level](figures/{combined.name})")
    if not sections:
        return None
    path = Path(results_dir) / "figures.md"
    fileio.write_text(path, f"# Annotation figures of suite {suite.name}\n\n" + "\n\n".join(sections) + "\n")
    return path


def _sigma_min_across_cells(suite: Suite, graph: Graph, store: RunStore, path: Path) -> Path | None:
    """One histogram of per-sample sigma_min for every (corruption, annotation) of the suite.

    Only annotations that vary per sample (classifier or quality) are drawn: a fixed
    sigma_min is a single bar that says nothing a table does not.
    """
    from ambient_bench.annotation.figures import plot_sigma_min_histogram

    groups, dropped, seen = {}, {}, set()
    for cell, stages in zip(suite.cells, graph.cells):
        stage = stages["annotate"]
        if stage.key in seen or store.state("annotate", stage.key) != "done":
            continue
        seen.add(stage.key)
        table = pd.read_csv(store.dir("annotate", stage.key) / "annotations.csv")
        low = table[(table["corrupted"] == 1) & (table["ood"] == 0)]
        if low.empty or low["sigma_min"].nunique() < 2:
            continue
        method = cell.config["method"]
        corruption = " | ".join(spec_label(c) for c in as_list(cell.config["mix"]["corruption"])) or "own labels"
        label = f"{corruption}, {method['name']} ({method.get('annotate', '')})"
        groups[label] = low.loc[low["kept"] == 1, "sigma_min"].to_numpy(dtype=float)
        dropped[label] = int((low["kept"] == 0).sum())
    if not groups:
        return None
    return plot_sigma_min_histogram(path, dict(sorted(groups.items())), dropped)
