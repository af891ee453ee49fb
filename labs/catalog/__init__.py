"""The lab catalog: one markdown file per lab in this folder, YAML front matter + instructions.

    ---
    slug: rank-sweep
    title: ...
    order: 3
    summary: one line for the catalog page
    goal: what the learner should see happen
    questions: [question-slug, ...]        # also linked: every question whose `lab:` is this slug
    preset: {lora_r: 16, epochs: 1, ...}   # TrainConfig fields the launch form starts from
    sweep: lora_r                          # multi-run labs: the field the runs vary (optional)
    runs:                                  # multi-run labs: one entry per run of the group
      - {key: r4, label: "r = 4", overrides: {lora_r: 4, lora_alpha: 8}}
      - {key: fewshot, label: "...", mode: fewshot, shots: 12}
      - {key: continued, label: "...", continue_from: r4}   # trains on top of that run's adapter
    quantize:                              # after training: export these GGUFs and score each (optional)
      - {quant: q4_0, rounding: gptq}      # mlcore.gguf_export's QUANTS and ROUNDINGS; f16 takes no rounding
    ---
    Markdown instructions...

Every preset and every run's configuration is checked with TrainConfig.validate() when the
catalog loads, so a typo in a lab file stops `load_labs` instead of failing a learner's run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.urls import reverse

from content.markdown import FrontMatterError, render_markdown, split_front_matter
from mlcore.config import ConfigError, TrainConfig
from mlcore.gguf_export import QUANTS, ROUNDINGS, ExportError, check_exportable
from mlcore.registry import DEFAULT_BASE_MODEL

CATALOG_DIR = Path(__file__).resolve().parent
# URL segments under /labs/ that are pages, not labs.
RESERVED_SLUGS = {"runs", "groups", "compare", "launch"}
VARIANT_KEYS = {"key", "label", "overrides", "mode", "shots", "continue_from"}
QUANTIZE_KEYS = {"quant", "rounding"}
MODES = ("finetune", "fewshot")


class CatalogError(ValueError):
    pass


@dataclass
class LabSpec:
    slug: str
    title: str
    goal: str
    body_md: str
    order: int = 100
    summary: str = ""
    questions: list[str] = field(default_factory=list)
    preset: dict = field(default_factory=dict)
    variants: list[dict] = field(default_factory=list)
    sweep: str = ""
    quantize: list[dict] = field(default_factory=list)  # [{"quant", "rounding"}]: labs.training checks each export

    @property
    def body_html(self) -> str:
        """Sanitized like every other markdown: a lab file is code review, not trust."""
        return str(render_markdown(self.body_md))


def parse_lab(text: str, source: str = "<string>") -> LabSpec:
    try:
        meta, body = split_front_matter(text)
    except FrontMatterError as exc:
        raise CatalogError(f"{source}: front matter: {exc}") from None
    missing = [key for key in ("slug", "title", "goal", "preset") if not meta.get(key)]
    if missing:
        raise CatalogError(f"{source}: missing {', '.join(missing)}")
    unknown = sorted(set(meta) - {"slug", "title", "order", "summary", "goal", "questions", "preset", "runs", "sweep",
                                  "quantize"})
    if unknown:
        raise CatalogError(f"{source}: unknown key(s) {', '.join(unknown)}")
    slug = str(meta["slug"])
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) or slug in RESERVED_SLUGS:
        raise CatalogError(f"{source}: slug {slug!r} must be lowercase-with-dashes and not one of {sorted(RESERVED_SLUGS)}")
    spec = LabSpec(
        slug=slug,
        title=str(meta["title"]),
        goal=str(meta["goal"]).strip(),
        body_md=body.strip(),
        order=int(meta.get("order", 100)),
        summary=str(meta.get("summary", "")).strip(),
        questions=[str(q) for q in meta.get("questions") or []],
        preset=dict(meta["preset"]),
        variants=[dict(v) for v in meta.get("runs") or []],
        sweep=str(meta.get("sweep") or ""),
        quantize=[dict(item) if isinstance(item, dict) else {"quant": item} for item in meta.get("quantize") or []],
    )
    _check(spec, source)
    return spec


def _check(spec: LabSpec, source: str) -> None:
    def check_config(values: dict, where: str) -> None:
        try:
            TrainConfig.from_dict(values).validate()
        except ConfigError as exc:
            raise CatalogError(f"{source}: {where}: {exc}") from None

    check_config(spec.preset, "preset")
    keys = []
    for i, variant in enumerate(spec.variants, start=1):
        where = f"run {i}"
        unknown = sorted(set(variant) - VARIANT_KEYS)
        if unknown or not variant.get("key") or not variant.get("label"):
            raise CatalogError(f"{source}: {where} needs a key and a label (unknown keys: {unknown})")
        if variant.get("mode", "finetune") not in MODES:
            raise CatalogError(f"{source}: {where}: mode must be one of {MODES}")
        if variant.get("mode") == "fewshot" and not 1 <= int(variant.get("shots", 0)) <= 64:
            raise CatalogError(f"{source}: {where}: a few-shot run needs shots from 1 to 64")
        parent = variant.get("continue_from")
        if parent is not None and parent not in keys:
            raise CatalogError(f"{source}: {where}: continue_from must name an earlier run's key")
        keys.append(variant["key"])
        check_config({**spec.preset, **(variant.get("overrides") or {})}, where)
    if len(set(keys)) != len(keys):
        raise CatalogError(f"{source}: run keys must be unique")
    if spec.sweep and not all(spec.sweep in (v.get("overrides") or {}) for v in spec.variants):
        raise CatalogError(f"{source}: sweep {spec.sweep!r} must be set by every run's overrides")
    _check_quantize(spec, source)


def _check_quantize(spec: LabSpec, source: str) -> None:
    """Each export is one the exporter makes, once, and the preset's base model exports at all."""
    seen = set()
    for i, item in enumerate(spec.quantize, start=1):
        where = f"quantize {i}"
        quant, rounding = item.get("quant"), item.get("rounding")
        if set(item) - QUANTIZE_KEYS or quant not in QUANTS:
            raise CatalogError(f"{source}: {where} needs a quant, one of {', '.join(QUANTS)}, and at most a rounding")
        if quant == "f16" and rounding is not None:
            raise CatalogError(f"{source}: {where}: f16 rounds nothing to compare; leave its rounding out")
        if quant != "f16" and rounding not in ROUNDINGS:
            raise CatalogError(f"{source}: {where}: rounding must be one of {', '.join(ROUNDINGS)}")
        if (quant, rounding) in seen:
            raise CatalogError(f"{source}: {where} repeats {quant} {rounding or ''}".rstrip())
        seen.add((quant, rounding))
    if spec.quantize:
        try:
            check_exportable(spec.preset.get("base_model", DEFAULT_BASE_MODEL))
        except ExportError as exc:
            raise CatalogError(f"{source}: quantize: {exc}") from None


def load_catalog(directory: Path = CATALOG_DIR) -> list[LabSpec]:
    specs = [parse_lab(path.read_text(encoding="utf-8"), path.name) for path in sorted(directory.glob("*.md"))]
    slugs = [spec.slug for spec in specs]
    duplicates = sorted({slug for slug in slugs if slugs.count(slug) > 1})
    if duplicates:
        raise CatalogError(f"duplicate lab slug(s): {', '.join(duplicates)}")
    return sorted(specs, key=lambda spec: (spec.order, spec.slug))


@lru_cache(maxsize=1)
def lab_slugs() -> tuple[str, ...]:
    """The catalog's lab slugs, in catalog order: THE list a question's `lab:` may name (a new
    lab file is all it takes to add one)."""
    return tuple(spec.slug for spec in load_catalog())


def lab_url(slug: str) -> str:
    """The page of the lab with this slug."""
    return reverse("labs:lab", args=[slug])
