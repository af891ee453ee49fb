"""Build the bundled split files from the raw review files. Deterministic: run it again, get the same files.

    python -m mlcore.data.build_splits

Reads mlcore/data/raw/part_*.jsonl (lines {"text", "label", "category", "style"}) and writes
mlcore/data/reviews/{train,validation,test}.jsonl (positive/negative/neutral) and
mlcore/data/reviews-mixed/... (the same lines plus the "mixed" ones). Both variants are split
from ONE assignment of texts to splits, so a test review of either variant is never a training
review of the other (the "add a 4th label" lab trains on one and tests on the other).
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from mlcore.data import DATA_DIR, LABEL_ORDER, SPLITS, stratified_split

SEED = 20240601
RAW_DIR = DATA_DIR / "raw"


def read_raw() -> list[dict]:
    rows, seen = [], {}
    for path in sorted(RAW_DIR.glob("part_*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            row["text"] = row["text"].strip()
            where = f"{path.name}:{number}"
            if row["label"] not in LABEL_ORDER:
                sys.exit(f"{where}: unknown label {row['label']!r}")
            key = " ".join(row["text"].lower().split())
            if key in seen:  # a duplicate could land in train and test at once
                print(f"skipping {where}: duplicate of {seen[key]}", file=sys.stderr)
                continue
            seen[key] = where
            rows.append({k: row.get(k) for k in ("text", "label", "category", "style")})
    return rows


def build() -> dict[str, str]:
    """{"reviews/train.jsonl": file content, ...}: every split file, from the raw files."""
    rows = read_raw()
    # One stratified split over all lines (stratified by label, mixed included) fixes each
    # text's split; the 3-label set is that assignment minus the mixed lines.
    parts = stratified_split(rows, SEED, label_of=lambda row: row["label"])
    files = {}
    for split, part in zip(SPLITS, parts, strict=True):
        for name, kept in (("reviews-mixed", part), ("reviews", [r for r in part if r["label"] != "mixed"])):
            files[f"{name}/{split}.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    return files


def main() -> None:
    for relative, content in build().items():
        out = DATA_DIR / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(content, encoding="utf-8")
    for split in SPLITS:
        counts = Counter(json.loads(line)["label"] for line in (DATA_DIR / "reviews-mixed" / f"{split}.jsonl").open())
        print(f"{split:<10} {sum(counts.values()):>5}  " + "  ".join(f"{k}={counts[k]}" for k in LABEL_ORDER))


if __name__ == "__main__":
    main()
