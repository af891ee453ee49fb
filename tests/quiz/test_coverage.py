"""The seed question lists are covered by the bank: quiz/coverage/seed_NNN.yaml maps every seed
question to a bank slug. The lists are the source of truth; this test checks they hold together."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COVERAGE = ROOT / "quiz" / "coverage"
BANK = ROOT / "quiz" / "bank"
SEEDS = ROOT.parent / "shared" / "seeds"  # beside the repository, locally and in CI


# The five source documents the bank was written from; ../shared/seeds, where present, may add more.
KNOWN_SEEDS = ["000", "001", "002", "003", "004"]


def seed_numbers() -> list[str]:
    if not SEEDS.is_dir():
        return KNOWN_SEEDS
    return sorted({m.group(1) for p in SEEDS.iterdir() if (m := re.match(r"^(\d{3})_", p.name))})


def coverage_entries(path: Path) -> list[dict]:
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(entries, list) and entries, f"{path.name}: must be a non-empty list"
    for entry in entries:
        assert isinstance(entry, dict) and isinstance(entry.get("slug"), str) and entry.get("source"), \
            f"{path.name}: every entry needs a source and a slug, got {entry!r}"
    return entries


def test_every_seed_file_has_a_coverage_list():
    numbers = seed_numbers()
    assert set(KNOWN_SEEDS) <= set(numbers), numbers
    missing = [f"seed_{n}.yaml" for n in numbers if not (COVERAGE / f"seed_{n}.yaml").exists()]
    assert not missing, f"no coverage list for: {', '.join(missing)}"


def test_every_listed_slug_has_a_bank_file():
    missing = [f"{path.name}: {entry['slug']}" for path in sorted(COVERAGE.glob("*.yaml"))
               for entry in coverage_entries(path) if not (BANK / f"{entry['slug']}.md").exists()]
    assert not missing, "listed slugs without quiz/bank/<slug>.md:\n" + "\n".join(missing)
