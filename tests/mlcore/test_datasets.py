"""Bundled splits, upload parsing (every refusal names its line), and splitting."""

import json

import pytest

from mlcore.data import DatasetError, Example, load_bundled, parse_upload, split_examples

LABELS = ["positive", "negative", "neutral"]


def jsonl(rows) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def good_rows(n=12):
    return [{"text": f"Review number {i} of this kettle.", "label": LABELS[i % 3]} for i in range(n)]


def test_bundled_sets_have_their_labels_and_disjoint_splits(reviews, reviews_mixed):
    assert reviews.labels == LABELS
    assert reviews_mixed.labels == LABELS + ["mixed"]
    for dataset in (reviews, reviews_mixed):
        train, val, test = ({e.text for e in split} for split in (dataset.train, dataset.validation, dataset.test))
        assert not train & test and not train & val and not val & test


def test_a_test_review_of_one_variant_is_never_a_training_review_of_the_other(reviews, reviews_mixed):
    test_texts = {e.text for e in reviews.test + reviews_mixed.test}
    train_texts = {e.text for e in reviews.train + reviews_mixed.train}
    assert not test_texts & train_texts
    # the 3-label splits are the 4-label splits without the mixed reviews
    for split in ("train", "validation", "test"):
        assert getattr(reviews, split) == [e for e in getattr(reviews_mixed, split) if e.label != "mixed"]


def test_bundled_splits_are_roughly_65_12_23_per_label(reviews_mixed):
    counts = reviews_mixed.counts()
    for label in reviews_mixed.labels:
        total = sum(counts[split][label] for split in counts)
        assert counts["train"][label] / total == pytest.approx(0.65, abs=0.03)
        assert counts["test"][label] / total == pytest.approx(0.23, abs=0.03)


def test_the_committed_splits_are_what_build_splits_makes_from_the_raw_files():
    # An edit to mlcore/data/raw without a rebuild (or to a split by hand) would make the
    # data card and the splits disagree with their source.
    from mlcore.data import DATA_DIR
    from mlcore.data.build_splits import build

    built = build()
    assert len(built) == 6
    for relative, content in built.items():
        assert (DATA_DIR / relative).read_text(encoding="utf-8") == content, f"{relative}: run python -m mlcore.data.build_splits"


def test_an_unknown_bundled_dataset_is_refused():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_bundled("imdb")


def test_a_valid_jsonl_upload_parses():
    rows = good_rows()
    rows[0]["category"] = "kitchen"  # extra keys are fine
    rows[1]["label"] = " Negative "  # labels are matched case-insensitively
    examples = parse_upload(jsonl(rows) + b"\n\n", "data.jsonl")
    assert len(examples) == 12
    assert examples[1] == Example("Review number 1 of this kettle.", "negative")


def test_a_valid_csv_upload_parses_quoted_multiline_text():
    body = 'label,text\npositive,"Good, really\ngood"\n' + "".join(
        f"{LABELS[i % 3]},Review {i}\n" for i in range(11)
    )
    examples = parse_upload(body.encode("utf-8-sig"), "data.csv")  # with a BOM, as Excel writes it
    assert examples[0] == Example("Good, really\ngood", "positive")
    assert len(examples) == 12


def refusal(raw: bytes, filename="data.jsonl", **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        parse_upload(raw, filename, **kwargs)
    return info.value


def test_non_utf8_upload_is_refused_with_its_line():
    error = refusal(jsonl(good_rows()[:3]) + '\n{"text": "caf\xe9", "label": "positive"}'.encode("latin-1"))
    assert "not UTF-8" in str(error) and error.line == 4


def test_an_upload_over_the_size_limit_is_refused():
    assert "limit is 100 bytes" in str(refusal(jsonl(good_rows()), max_bytes=100))


def test_an_upload_over_the_row_limit_is_refused():
    error = refusal(jsonl(good_rows(12)), max_rows=10)
    assert "too many rows" in str(error) and error.line == 11


def test_invalid_json_is_refused_with_its_line():
    raw = jsonl(good_rows()[:2]) + b'\n{"text": "oops", "label": }\n'
    error = refusal(raw)
    assert "invalid JSON" in str(error) and error.line == 3


def test_a_json_line_that_is_not_an_object_is_refused():
    assert refusal(jsonl(good_rows()[:2]) + b'\n["a", "b"]').line == 3


def test_a_missing_key_is_refused_with_its_line():
    rows = good_rows()
    del rows[4]["label"]
    error = refusal(jsonl(rows))
    assert "missing key 'label'" in str(error) and error.line == 5


def test_csv_without_the_needed_columns_is_refused():
    error = refusal(b"review,label\nnice,positive\n", "data.csv")
    assert "missing text" in str(error) and error.line == 1


def test_empty_text_is_refused_with_its_line():
    rows = good_rows()
    rows[2]["text"] = "   "
    error = refusal(jsonl(rows))
    assert "empty text" in str(error) and error.line == 3


def test_a_duplicate_text_names_both_lines():
    rows = good_rows()
    rows[7]["text"] = rows[2]["text"]
    error = refusal(jsonl(rows))
    assert error.line == 8 and "line 3" in str(error) and "duplicate" in str(error)


def test_an_unknown_label_is_refused_with_the_allowed_ones():
    rows = good_rows()
    rows[5]["label"] = "angry"
    error = refusal(jsonl(rows))
    assert error.line == 6 and "'angry'" in str(error) and "positive, negative, neutral, mixed" in str(error)


def test_a_single_label_dataset_is_refused():
    rows = [{"text": f"Review {i}", "label": "positive"} for i in range(12)]
    assert "at least two labels" in str(refusal(jsonl(rows)))


def test_too_few_rows_are_refused():
    assert "at least 10" in str(refusal(jsonl(good_rows(6))))


def test_an_unsupported_file_type_is_refused():
    assert "upload .jsonl or .csv" in str(refusal(jsonl(good_rows()), "data.xlsx"))


def test_an_upload_splits_deterministically_with_every_label_in_every_split():
    examples = [Example(f"Review {i}", LABELS[i % 3]) for i in range(30)]
    first, again = split_examples(examples, seed=3), split_examples(examples, seed=3)
    assert first == again
    assert first.labels == LABELS
    assert len(first.train) + len(first.validation) + len(first.test) == 30
    for split in ("train", "validation", "test"):
        assert {e.label for e in getattr(first, split)} == set(LABELS)
    assert split_examples(examples, seed=4).train != first.train
