"""Build the bundled split files from the raw review files. Deterministic: run it again, get the same files.

    python -m mlcore.data.build_splits

Reads mlcore/data/raw/part_*.jsonl (lines {"text", "label", "category", "style"}) and writes
mlcore/data/reviews/{train,validation,test}.jsonl (positive/negative/neutral) and
mlcore/data/reviews-mixed/... (the same lines plus the "mixed" ones). Both variants are split
from ONE assignment of texts to splits, so a test review of either variant is never a training
review of the other (the "add a 4th label" lab trains on one and tests on the other).

Each group of raw files in SPLIT_GROUPS is split on its own, so adding a file of new reviews
never moves an existing review to another split (a test review stays a test review).
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from mlcore.data import DATA_DIR, LABEL_ORDER, SPLITS, Dataset, Example, ordered_labels, stratified_split

SEED = 20240601
RAW_DIR = DATA_DIR / "raw"
# Raw files split together. part_a/part_b were the first release; part_c (short, telegraphic
# reviews and one-line film/book verdicts) and part_d (restaurants and cafés, one-line film/TV
# verdicts, telegraphic product lines, many with implied verdicts) and part_e (critics' film/book
# sentences, everyday product, restaurant and service lines, hard cases) and part_f (critic and audience
# sentences about films, TV, books, music, theatre and games; customer lines about products, restaurants,
# hotels, apps and services) came later, each split on its own.
SPLIT_GROUPS = (("part_a.jsonl", "part_b.jsonl"), ("part_c.jsonl",), ("part_d.jsonl",), ("part_e.jsonl",),
                ("part_f.jsonl",))


def read_raw() -> list[dict]:
    """Every raw line in SPLIT_GROUPS order, duplicates dropped; each row says its group."""
    listed = [name for group in SPLIT_GROUPS for name in group]
    unlisted = sorted({p.name for p in RAW_DIR.glob("part_*.jsonl")} - set(listed))
    if unlisted:
        sys.exit(f"{', '.join(unlisted)}: add to SPLIT_GROUPS in build_splits.py")
    rows, seen = [], {}
    for group, path in ((g, RAW_DIR / name) for g, names in enumerate(SPLIT_GROUPS) for name in names):
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
            rows.append({k: row.get(k) for k in ("text", "label", "category", "style")} | {"group": group})
    return rows


def build() -> dict[str, str]:
    """{"reviews/train.jsonl": file content, ...}: every split file, from the raw files."""
    rows = read_raw()
    # Per group, one stratified split over all its lines (stratified by label, mixed included)
    # fixes each text's split; the 3-label set is that assignment minus the mixed lines.
    parts = [[] for _ in SPLITS]
    for group in range(len(SPLIT_GROUPS)):
        members = [{k: v for k, v in row.items() if k != "group"} for row in rows if row["group"] == group]
        for part, split in zip(parts, stratified_split(members, SEED, label_of=lambda row: row["label"]), strict=True):
            part.extend(split)
    files = {}
    for split, part in zip(SPLITS, parts, strict=True):
        for name, kept in (("reviews-mixed", part), ("reviews", [r for r in part if r["label"] != "mixed"])):
            files[f"{name}/{split}.jsonl"] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    return files


def dataset_from_groups(groups, *, mixed: bool = False, drop_neutral_styles=()):
    """The bundled split restricted to some SPLIT_GROUPS (indices), for data ablations: each
    group is split on its own, so a subset keeps every text in the split it has in the full set.
    drop_neutral_styles: training neutrals of these styles left out (validation and test kept)."""
    groups = set(groups)
    rows = [row for row in read_raw() if row["group"] in groups and (mixed or row["label"] != "mixed")]
    splits = {split: [] for split in SPLITS}
    for group in sorted(groups):
        members = [row for row in rows if row["group"] == group]
        for split, part in zip(SPLITS, stratified_split(members, SEED, label_of=lambda row: row["label"]), strict=True):
            kept = [row for row in part if split != "train" or not (row["label"] == "neutral"
                                                                      and row["style"] in drop_neutral_styles)]
            splits[split] += [Example(row["text"], row["label"]) for row in kept]
    name = "reviews-mixed" if mixed else "reviews"
    return Dataset(f"{name}[groups {','.join(map(str, sorted(groups)))}]",
                   ordered_labels(e.label for e in splits["train"]), **splits)


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
