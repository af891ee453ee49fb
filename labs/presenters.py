"""What the labs pages show, computed from the rows: kept out of the views so each view stays
parse -> authorize -> call -> render."""

from __future__ import annotations

import math
import statistics
import tempfile
import zipfile

from django.conf import settings
from django.template.loader import select_template

from labs import storage
from labs.models import Lab, Run
from mlcore.config import Setting, TrainConfig, config_fields
from mlcore.gguf_export import BITS_PER_WEIGHT, QUANTS
from mlcore.registry import how_to_provide, is_available, user_models

LOG_TAIL = 40
PREDICTIONS_PER_PAGE = 100
# Files of a run's artifact folder that make up the downloadable adapter.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "train_config.json", "labels.json", "prompt.json",
                 "metrics.json")
# Rows of the results tables: TrainConfig's shown settings (labels and wording from their
# declarations in mlcore.config), plus what run_config() adds for a few-shot run.
SETTINGS = {f.name: f.setting for f in config_fields() if f.setting.shown}
EXTRA_ROWS = {"mode": Setting(label="mode"), "shots": Setting(label="few-shot examples")}


def _row_setting(name: str) -> Setting | None:
    return SETTINGS.get(name) or EXTRA_ROWS.get(name)


def field_label(name: str) -> str:
    row = _row_setting(name)
    return row.label if row else name


# --- labs ------------------------------------------------------------------------------------


def missing_model_notes_for(user) -> list[str]:
    """Base models a learner cannot choose here. A learner is told the model is not installed on
    this server (nothing they can change); staff, who run the server, are told how to install it."""
    missing = [spec for spec in user_models() if not is_available(spec.name)]
    if getattr(user, "is_staff", False):
        return [how_to_provide(spec.name) for spec in missing]
    return [f"{spec.label} is not installed on this server." for spec in missing]


# Settings that decide how long a run takes: a run counts towards its lab's time only if it kept
# the lab's values for these (a 1-epoch clone is not the lab's run, and was averaged in).
DURATION_SETTINGS = ("base_model", "dataset", "epochs", "max_steps", "train_limit", "batch_size", "grad_accum",
                     "eval_every", "max_length", "lora_top_blocks")


def lab_durations(lab: Lab) -> dict:
    """How long this lab's runs took on this server (start to results), measured rather than
    promised: the median and range of the latest 20 finished with the lab's own settings, or
    n=0 when none has."""
    rows = (Run.objects.filter(lab=lab, status=Run.Status.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False)
            .order_by("-finished_at").values_list("config", "started_at", "finished_at")[:100])
    # A setting the preset leaves out is TrainConfig's default (train_limit: all examples), and a
    # clone that set it differently is not the lab's run either.
    defaults = TrainConfig().to_dict()
    presets = [{**defaults, **lab.preset, **(v.get("overrides") or {})} for v in [{}, *lab.variants]]

    def as_preset(config: dict) -> bool:
        config = {**defaults, **config}
        return any(all(config.get(k) == preset.get(k) for k in DURATION_SETTINGS) for preset in presets)

    latest = [(finished - started).total_seconds() for config, started, finished in rows if as_preset(config)][:20]
    seconds = sorted(latest)
    if not seconds:
        return {"n": 0}
    return {"n": len(seconds), "median": human_duration(statistics.median(seconds)),
            "fastest": human_duration(seconds[0]), "slowest": human_duration(seconds[-1])}


def human_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def format_value(name: str, value) -> str:
    return (_row_setting(name) or Setting(label=name)).display(value)


def config_rows(config: dict) -> list[tuple[str, str]]:
    return [(field_label(name), format_value(name, value)) for name, value in config.items() if _row_setting(name)]


def variant_rows(lab: Lab) -> list[dict]:
    keys = {v["key"]: v["label"] for v in lab.variants}
    rows = []
    for v in lab.variants:
        settings = [f"{field_label(k)} = {format_value(k, x)}" for k, x in (v.get("overrides") or {}).items()]
        if v.get("mode") == "fewshot":
            settings.append(f"{v['shots']} examples in the prompt")
        rows.append({
            "label": v["label"],
            "mode": "few-shot prompting" if v.get("mode") == "fewshot" else "fine-tune",
            "settings": ", ".join(settings),
            "after": keys.get(v.get("continue_from") or "", ""),
        })
    return rows


# --- one run ---------------------------------------------------------------------------------


def run_config(run: Run) -> dict:
    """The config as the pages show it, with the run's mode and lineage."""
    config = dict(run.config)
    if run.upload_id:
        config["dataset"] = f"upload: {run.upload.filename}"
    if run.mode == Run.Mode.FEWSHOT:
        config = {"mode": "few-shot prompting", "shots": run.shots, "base_model": config["base_model"],
                  "dataset": config["dataset"], "seed": config["seed"]}
    return config


def run_context(run: Run) -> dict:
    events = list(run.events.order_by("-seq")[:LOG_TAIL * 3])
    latest_step = next((e.payload for e in events if e.type == "step"), None)
    # Scoring follows the last step, so a scoring event newer than every step is the current phase.
    latest = next((e for e in events if e.type in ("step", "scoring")), None)
    scoring = latest.payload if latest is not None and latest.type == "scoring" else None
    log_tail = [e for e in reversed(events) if e.type in ("status", "log", "eval")][-LOG_TAIL:]
    if scoring:
        progress_pct = round(100 * scoring["done_all"] / scoring["total_all"])
    else:
        progress_pct = round(100 * latest_step["step"] / latest_step["total_steps"]) if latest_step else 0
    return {
        "run": run,
        "config_rows": config_rows(run_config(run)),
        "latest_step": latest_step,
        "scoring": scoring,
        "progress_pct": 100 if run.status == Run.Status.SUCCEEDED else progress_pct,
        "took": human_duration((run.finished_at - run.started_at).total_seconds())
        if run.finished_at and run.started_at else "",
        "log_tail": log_tail,
        "can_cancel": run.is_active,
    }


def curves(run: Run) -> dict:
    """Loss curves from the run's events: {"train": [[step, loss]], "validation": [[step, loss, acc]]}.

    New runs record at most RUN_MAX_STEP_EVENTS steps; older, longer ones are thinned here, so
    a page embeds at most that many points per curve."""
    rows = run.events.filter(type__in=("step", "eval")).order_by("seq").values_list("type", "payload")
    train = [[p["step"], p["loss"]] for kind, p in rows if kind == "step"]
    validation = [[p["step"], p["loss"], p.get("accuracy")] for kind, p in rows if kind == "eval"]
    return {"train": thin(train, settings.RUN_MAX_STEP_EVENTS), "validation": thin(validation, settings.RUN_MAX_STEP_EVENTS)}


def thin(points: list, limit: int) -> list:
    """Every k-th point (and the last) so that at most about `limit` remain."""
    if len(points) <= limit:
        return points
    stride = -(-len(points) // limit)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def predictions_page(request, predictions: list) -> dict:
    """One page of the test predictions (an upload's test split can hold ~1,000 long reviews)."""
    pages = max(1, -(-len(predictions) // PREDICTIONS_PER_PAGE))
    try:
        page = min(max(1, int(request.GET.get("page", 1))), pages)
    except ValueError:
        page = 1
    start = (page - 1) * PREDICTIONS_PER_PAGE
    return {"predictions": predictions[start:start + PREDICTIONS_PER_PAGE], "page": page, "pages": pages,
            "first_shown": start + 1 if predictions else 0, "last_shown": min(start + PREDICTIONS_PER_PAGE, len(predictions))}


def results_context(request, run: Run) -> dict:
    metrics = run.metrics or {}
    test, zero = metrics.get("test") or {}, metrics.get("zero_shot") or {}
    labels = test.get("labels") or []
    errors_only = request.GET.get("errors") == "1"
    predictions = [p for p in run.predictions if not (errors_only and p.get("correct"))]
    return {
        "run": run,
        "metrics": metrics,
        "test": test,
        "zero_shot": zero,
        "per_class": [
            {"label": label, **test["per_class"][label], "zero_shot_f1": (zero.get("per_class") or {}).get(label, {}).get("f1")}
            for label in labels
        ],
        "confusion": confusion_rows(test),
        "probe": probe_panel(metrics),
        "quantization": quantization_panel(metrics, run.predictions),
        "calibration": calibration_panel(metrics),
        "zero_shot_confusion": confusion_rows(zero),
        **predictions_page(request, predictions),
        "n_shown": len(predictions),
        "errors_only": errors_only,
        "n_errors": sum(1 for p in run.predictions if not p.get("correct")),
        "curves": curves(run),
        "token_view": token_view_rows(run.token_view),
        "can_download": run.has_adapter,
        "inference_section": select_template(["inference/_run_results_section.html", "labs/_no_inference_section.html"]),
    }


PROBE_MISTAKES_SHOWN = 8
FLATTERED_BY = 0.10  # probe accuracy this far under the test split's: say the test split flatters the model


def probe_panel(metrics: dict) -> dict | None:
    """The "does it generalise?" panel: how the run did on the probe sentences (plain everyday
    sentences written for tunelab, in no split; mlcore.train.score_probe) beside its test split.
    Per label what it answered, the over-confident mistakes first, and a plain reading."""
    probe, test = metrics.get("probe"), metrics.get("test") or {}
    if not probe:
        return None
    scores = probe["metrics"]
    polar = [p for p in probe["predictions"] if p["label"] in ("positive", "negative")]
    labels = scores["labels"]
    per_label = [
        {"label": label, "n": sum(row), "right": row[i],
         "answers": ", ".join(f"{n} {other}" for other, n in zip(labels, row, strict=True) if n)}
        for i, (label, row) in enumerate(zip(labels, scores["confusion_matrix"], strict=True)) if sum(row)
    ]
    mistakes = [p | {"confidence": p["probs"][p["predicted"]]} for p in probe["predictions"] if not p["correct"]]
    gap = (test.get("accuracy") or 0) - scores["accuracy"]
    return {
        "accuracy": scores["accuracy"], "n": scores["n"], "right": round(scores["accuracy"] * scores["n"]),
        "per_label": per_label, "mistakes": mistakes[:PROBE_MISTAKES_SHOWN],
        "more_mistakes": max(len(mistakes) - PROBE_MISTAKES_SHOWN, 0),
        "polar": len(polar), "polar_neutral": sum(p["predicted"] == "neutral" for p in polar),
        "flattered": bool(test) and gap > FLATTERED_BY, "gap": gap,
    }


def confusion_rows(metrics: dict) -> list[dict]:
    """Rows of the confusion matrix, each cell with its share of the row (for shading)."""
    labels, matrix = metrics.get("labels") or [], metrics.get("confusion_matrix") or []
    return [
        {
            "label": label,
            "cells": [{"count": n, "shade": round(n / (sum(counts) or 1), 2), "correct": other == label}
                      for other, n in zip(labels, counts, strict=True)],
        }
        for label, counts in zip(labels, matrix, strict=True)
    ]


def token_view_rows(rows: list[dict], head: int = 160, tail: int = 96) -> list[dict]:
    """The example token by token; a long one (max_length allows 8,192) keeps its start and its
    end, where the answer is, with one marker for the tokens left out."""
    shown = [dict(row, shown=_visible_token(row["token"])) for row in rows]
    if len(shown) <= head + tail + 1:
        return shown
    gap = {"id": "", "supervised": False, "shown": f" … {len(shown) - head - tail:,} more tokens … "}
    return shown[:head] + [gap] + shown[-tail:]


def _visible_token(token: str) -> str:
    """Whitespace made visible in the token view ("·" for spaces, "↵" for newlines)."""
    return token.replace(" ", "·").replace("\n", "↵")


def adapter_zip(run: Run):
    """A temporary zip of the adapter files (deleted when closed), or None if they are gone."""
    folder = storage.adapter_dir(run) if run.has_adapter else None
    if folder is None:
        return None
    present = [name for name in ADAPTER_FILES if (folder / name).exists()]
    if "adapter_config.json" not in present:
        return None
    archive = tempfile.TemporaryFile(suffix=".zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in present:
            zf.write(folder / name, arcname=f"run-{run.pk}/{name}")
    archive.seek(0)
    return archive


# --- GGUF exports ----------------------------------------------------------------------------

# How many of our classifier's labels a GGUF export keeps, measured once and stated here only:
# the download panel reads it, and a test holds README.md and bench/README.md to it. The default
# lab's adapter of 3 December (top 20 blocks, no dropout), the bundled test split (587 reviews),
# changed tensors rounded by GPTQ (bench/gguf_bench.py); (transformers' GGUF loader, llama.cpp),
# None where not measured.
GGUF_AGREEMENT = {"f16": (1.0, None), "q8_0": (1.0, 0.990), "q4_0": (0.973, 0.974)}


def gguf_agreement_rows() -> list[dict]:
    """The measured agreement per quant, as the panel shows it ("100.0%", "99.0%")."""
    return [{"quant": quant, "transformers": f"{hf:.1%}", "llama_cpp": f"{cpp:.1%}" if cpp is not None else ""}
            for quant, (hf, cpp) in GGUF_AGREEMENT.items()]


def calibration_panel(metrics: dict) -> dict | None:
    """How far the run's confidence is from its accuracy on the test split (mlcore.metrics.calibration),
    and how many training labels label_noise flipped. None for runs recorded before either existed."""
    found, noise = metrics.get("test_calibration"), ((metrics.get("train") or {}).get("label_noise") or {})
    if not found:
        return None
    gap = found["gap"]
    leaning = "over-confident" if gap > 0.02 else "under-confident" if gap < -0.02 else "about as confident as it is right"
    return {**found, "leaning": leaning, "noise": noise if noise.get("flipped") else None,
            "train_examples": (metrics.get("train") or {}).get("train_examples")}


CHANGED_SHOWN = 6  # reviews listed per export whose label the rounding changed


def rounding_label(rounding: str | None) -> str:
    """How the changed tensors were rounded, as the 4-bit table says it."""
    from mlcore.gguf_quant import CALIBRATION_REVIEWS  # imports torch: only for a page that shows the table

    return {None: "none: 16-bit floats", "nearest": "nearest level (llama-quantize's rule)",
            "gptq": f"GPTQ, calibrated on {CALIBRATION_REVIEWS} training reviews"}.get(rounding, str(rounding))


def quantization_panel(metrics: dict, predictions: list[dict]) -> dict | None:
    """The 4-bit table (labs.training.check_exports): the classifier as trained, then each GGUF
    export with its file size, how many test labels it kept, its macro-F1, and the reviews whose
    label it changed. None for a run of a lab that exports nothing."""
    checked, test = metrics.get("quantization"), metrics.get("test") or {}
    if not checked:
        return None
    reference_f1 = test.get("macro_f1")
    rows = []
    for row in checked["rows"]:
        changed = [predictions[c["i"]] | {"now": c["predicted"], "confidence": c["confidence"]}
                   for c in row["changed"][:CHANGED_SHOWN] if c["i"] < len(predictions)]
        rows.append({
            "quant": row["quant"], "bits": BITS_PER_WEIGHT[QUANTS[row["quant"]][0]], "rounding": row["rounding"],
            "method": rounding_label(row["rounding"]), "size_mb": row["size"] / 1e6, "agreement": row["agreement"],
            "agreement_pct": 100 * row["agreement"],
            "n_changed": len(row["changed"]), "macro_f1": row["macro_f1"], "accuracy": row["accuracy"],
            "f1_change": row["macro_f1"] - reference_f1 if reference_f1 is not None else None,
            "changed": changed, "more_changed": max(len(row["changed"]) - CHANGED_SHOWN, 0),
        })
    return {"rows": rows, "n": checked["n"], "error": checked.get("error", ""), "reference_macro_f1": reference_f1,
            "reference_accuracy": test.get("accuracy")}


# --- several runs ----------------------------------------------------------------------------


def compare_context(runs: list[Run], *, sweep: str = "") -> dict:
    configs = [run_config(run) for run in runs]
    names = [n for n in dict.fromkeys(k for c in configs for k in c) if _row_setting(n)]
    differing = [n for n in names if len({repr(c.get(n)) for c in configs}) > 1]
    return {
        "runs": runs,
        "any_active": any(run.is_active for run in runs),
        "config_diff": [
            {"field": field_label(n), "values": [format_value(n, c.get(n)) for c in configs]} for n in differing
        ],
        "metric_rows": [_metric_row(run) for run in runs],
        "compare_curves": [{"id": run.pk, "name": _run_name(run), "train": curves(run)["train"]} for run in runs],
        "sweep": sweep,
        "sweep_label": field_label(sweep),
        "sweep_points": sweep_points(runs, sweep) if sweep else [],
        "compare_ids": ",".join(str(run.pk) for run in runs),
    }


def _run_name(run: Run) -> str:
    return f"#{run.pk} {run.label}" if run.label else f"#{run.pk}"


def _metric_row(run: Run) -> dict:
    test, zero, train = run.test_metrics or {}, run.zero_shot_metrics or {}, (run.metrics or {}).get("train") or {}
    return {
        "run": run, "name": _run_name(run), "accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"),
        "zero_shot_accuracy": zero.get("accuracy"), "zero_shot_macro_f1": zero.get("macro_f1"),
        "steps": train.get("steps"), "train_examples": train.get("train_examples"), "elapsed_s": train.get("elapsed_s"),
        "ece": ((run.metrics or {}).get("test_calibration") or {}).get("ece"),
        "flipped": (train.get("label_noise") or {}).get("flipped"),
    }


def sweep_points(runs: list[Run], sweep: str) -> list[dict]:
    """(swept value, accuracy, macro-F1) per finished run, numeric sweeps only, sorted by value.

    A sweep value of None ("all examples") is plotted at the number of examples actually used.
    """
    points = []
    for run in runs:
        test = run.test_metrics
        if not test:
            continue
        value = run.config.get(sweep)
        if value is None and sweep == "train_limit":
            value = ((run.metrics or {}).get("train") or {}).get("train_examples")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        found = (run.metrics or {}).get("test_calibration") or {}
        points.append({"x": value, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "name": _run_name(run),
                       "ece": found.get("ece"), "mean_confidence": found.get("mean_confidence")})
    return sorted(points, key=lambda p: p["x"])
