import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from quiz.bank import BANK_DIR, code_blocks, read_bank
from quiz.models import Question, QuestionRevision, Quiz
from tests.quiz.conftest import NUMERIC_FILE, SINGLE_FILE, VALID_FILE, write_bank


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("load_bank", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def bad_bank_error(tmp_path, name: str, text: str) -> str:
    """Load a bank of one good file plus one bad one; return the error output. Nothing may be written."""
    directory = write_bank(tmp_path / "bank", {"lora-rank-r16-meaning.md": VALID_FILE.format(slug="lora-rank-r16-meaning"),
                                                name: text})
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("load_bank", "--path", str(directory), stdout=io.StringIO(), stderr=err)
    assert Question.objects.count() == 0
    return err.getvalue()


@pytest.mark.parametrize(("name", "text", "field", "reason"), [
    ("bad-yaml.md", VALID_FILE.format(slug="bad-yaml").replace("topics: [lora, peft, hyperparameters]", "topics: [lora, peft"),
     "front matter", "invalid YAML"),
    ("no-title.md", VALID_FILE.format(slug="no-title").replace("title: What does r=16 mean in a LoraConfig?\n", ""),
     "title", "missing required field"),
    ("odd-kind.md", VALID_FILE.format(slug="odd-kind").replace("kind: open", "kind: essay"), "kind", "unknown kind 'essay'"),
    ("odd-level.md", VALID_FILE.format(slug="odd-level").replace("difficulty: intermediate", "difficulty: expert"),
     "difficulty", "unknown difficulty 'expert'"),
    ("odd-topic.md", VALID_FILE.format(slug="odd-topic").replace("[lora, peft, hyperparameters]", "[lora, astrology]"),
     "topics", "unknown topic 'astrology'"),
    ("two-right.md", SINGLE_FILE.format(slug="two-right").replace('correct: false\n    explanation: "Frozen."',
                                                                   'correct: true\n    explanation: "Frozen."'),
     "choices", "exactly 1 correct choice, found 2"),
    ("no-number.md", NUMERIC_FILE.format(slug="no-number").replace("answer: 64\n", ""), "answer", "missing"),
    ("not-the-stem.md", VALID_FILE.format(slug="another-slug"), "slug", "must equal the file name stem"),
    ("no-answer-section.md", VALID_FILE.format(slug="no-answer-section").split("## Answer")[0], "## Answer", "missing section"),
    ("short-rubric.md", VALID_FILE.format(slug="short-rubric").replace('  - "alpha / r scales the update"\n', ""),
     "rubric", "3 to 6 items"),
    ("odd-lab.md", VALID_FILE.format(slug="odd-lab").replace("lab: rank-sweep", "lab: moon-landing"), "lab", "unknown lab"),
    ("odd-status.md", VALID_FILE.format(slug="odd-status").replace("status: published", "status: live"),
     "status", "unknown status"),
    ("choices-on-open.md", VALID_FILE.format(slug="choices-on-open").replace(
        "---\n## Question", "choices:\n  - text: a\n    correct: true\n    explanation: b\n---\n## Question"),
     "choices", "only single and multi"),
    ("Bad_Slug.md", VALID_FILE.format(slug="Bad_Slug"), "slug", "must match"),
    ("extra-field.md", VALID_FILE.format(slug="extra-field").replace("status: published", "status: published\nauthor: me"),
     "author", "unknown field"),
    ("unmarked-code.md", VALID_FILE.format(slug="unmarked-code").replace(
        "The rank of the low-rank update **BA**.", "Text.\n\n```{.text .sketch}\nh = W x\n```\n\n```python\nprint(1)\n```"),
     "## Answer", "code block 2 (line 7 of the section) has no marker"),
    ("unmarked-prompt-code.md", VALID_FILE.format(slug="unmarked-prompt-code").replace(
        "What does `r=16` mean?", "What does this do?\n\n~~~\nLoraConfig(r=16)\n~~~"),
     "## Question", "code block 1 (line 3 of the section) has no marker"),
    ("runnable-bash.md", VALID_FILE.format(slug="runnable-bash").replace(
        "The rank of the low-rank update **BA**.", "```{.bash .runnable}\nls\n```"),
     "## Answer", "marked runnable but is not python"),
    ("follow-up-not-a-list.md", VALID_FILE.format(slug="follow-up-not-a-list").replace(
        "status: published", "status: published\nfollow_ups: Why not r=8?"), "follow_ups", "non-empty list of strings"),
    ("follow-up-empty-item.md", VALID_FILE.format(slug="follow-up-empty-item").replace(
        "status: published", 'status: published\nfollow_ups: ["Why not r=8?", "  "]'),
     "follow_ups", "item 2 must be a non-empty"),
    ("follow-up-number.md", VALID_FILE.format(slug="follow-up-number").replace(
        "status: published", "status: published\nfollow_ups: [16]"), "follow_ups", "item 1 must be a non-empty string, got 16"),
    ("follow-up-on-numeric.md", NUMERIC_FILE.format(slug="follow-up-on-numeric").replace(
        "answer: 64\n", "answer: 64\nfollow_ups: [Explain it]\n"), "follow_ups", "only open questions have follow-ups"),
    ("follow-up-twice.md", VALID_FILE.format(slug="follow-up-twice").replace(
        "status: published", "status: published\nfollow_ups: [Explain it, Explain it]"), "follow_ups", "same follow-up twice"),
])
def test_a_bad_file_names_the_file_and_field_and_writes_nothing(tmp_path, db, name, text, field, reason):
    output = bad_bank_error(tmp_path, name, text)
    line = next(line for line in output.splitlines() if name in line)
    assert f"{name}: {field}: " in line
    assert reason in line


def test_code_blocks_carry_their_language_and_marker():
    text = "Intro\n\n```{.python .runnable}\nx = 1\n\n```\nmiddle\n````{.json .sketch}\n```\n{}\n````\n"
    blocks = code_blocks(text)
    assert [(b.number, b.line, b.lang, b.marker) for b in blocks] == [(1, 3, "python", "runnable"), (2, 8, "json", "sketch")]
    assert blocks[0].code == "x = 1\n" and blocks[1].code == "```\n{}"


def test_a_multi_question_with_one_correct_choice_is_rejected(tmp_path, db):
    text = SINGLE_FILE.format(slug="multi-one").replace("kind: single", "kind: multi")
    assert "at least 2 correct choices, found 1" in bad_bank_error(tmp_path, "multi-one.md", text)


def test_a_duplicate_slug_in_a_subfolder_is_reported_with_both_files(tmp_path, db):
    directory = write_bank(tmp_path / "bank", {"lora-rank-r16-meaning.md": VALID_FILE.format(slug="lora-rank-r16-meaning")})
    write_bank(directory / "more", {"lora-rank-r16-meaning.md": VALID_FILE.format(slug="lora-rank-r16-meaning")})
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_bank", "--path", str(directory), stdout=io.StringIO(), stderr=err)
    assert "more/lora-rank-r16-meaning.md: slug: duplicate slug 'lora-rank-r16-meaning'" in err.getvalue()
    assert Question.objects.count() == 0


def test_loading_creates_then_updates_then_reports_unchanged(good_bank, db):
    out, _ = run("--path", str(good_bank))
    assert "3 created, 0 updated, 0 unchanged" in out
    single = Question.objects.get(slug="lora-which-matrices")
    assert [c.correct for c in single.choices.all()] == [True, False, False]
    numeric = Question.objects.get(slug="effective-batch")
    assert (numeric.numeric_answer, numeric.tolerance, numeric.unit, numeric.status) == (64.0, 0.0, "examples", "draft")
    assert Question.objects.get(slug="lora-rank-r16-meaning").prompt == "What does `r=16` mean?"

    path = good_bank / "lora-rank-r16-meaning.md"
    path.write_text(path.read_text().replace("The rank of the update.", "Think of the rank."))
    out, _ = run("--path", str(good_bank))
    assert "0 created, 1 updated, 2 unchanged" in out
    revision = QuestionRevision.objects.get()
    assert revision.source == "load_bank" and revision.changes == {"hint": ["The rank of the update.", "Think of the rank."]}


def test_a_question_removed_from_the_files_is_kept_and_reported(good_bank, db):
    run("--path", str(good_bank))
    (good_bank / "effective-batch.md").unlink()
    out, _ = run("--path", str(good_bank))
    assert "1 question(s) in the database but not in the files" in out and "effective-batch" in out
    assert Question.objects.filter(slug="effective-batch").exists()


def test_check_validates_without_writing_and_prints_counts(good_bank, db):
    out, _ = run("--path", str(good_bank), "--check")
    assert "3 questions OK" in out
    assert "by kind: numeric 1, open 1, single 1" in out
    assert "by difficulty: beginner 2, intermediate 1" in out
    assert Question.objects.count() == 0


def test_check_passes_on_the_real_bank_and_prints_counts_by_kind_and_difficulty(db):
    out, err = run("--check")
    count = len(list(BANK_DIR.rglob("*.md")))
    assert f"{count} questions OK" in out, err
    kinds = re.search(r"by kind: (.*)", out).group(1)
    assert sum(int(n) for n in re.findall(r"\d+", kinds)) == count
    assert "by difficulty:" in out
    assert "curated quizzes OK: " in out
    assert Question.objects.count() == 0


def test_the_real_bank_and_curated_quizzes_load(db):
    out, _ = run()
    assert f"{len(list(BANK_DIR.rglob('*.md')))} created" in out
    assert Quiz.objects.count() >= 2
    assert all(quiz.items.count() >= 5 for quiz in Quiz.objects.all())


def test_round_trip_load_export_load_changes_nothing(good_bank, tmp_path, db):
    run("--path", str(good_bank))
    out_dir = tmp_path / "exported"
    call_command("export_bank", "--out", str(out_dir), stdout=io.StringIO())
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in good_bank.iterdir())
    out, _ = run("--path", str(out_dir))
    assert "0 created, 0 updated, 3 unchanged" in out
    # Exported files are themselves valid bank files with the same content.
    exported, errors = read_bank(out_dir)
    original, _ = read_bank(good_bank)
    assert not errors
    assert [q.canonical() for q in exported] == [q.canonical() for q in original]


def test_follow_ups_load_in_order_and_survive_export(tmp_path, db):
    text = VALID_FILE.format(slug="lora-rank-r16-meaning").replace(
        "status: published", 'status: published\nfollow_ups:\n  - "Why not r=8?"\n  - "  What does alpha do then?  "')
    bank = write_bank(tmp_path / "bank", {"lora-rank-r16-meaning.md": text})
    run("--path", str(bank))
    assert Question.objects.get().follow_ups == ["Why not r=8?", "What does alpha do then?"]
    call_command("export_bank", "--out", str(tmp_path / "out"), stdout=io.StringIO())
    exported = (tmp_path / "out" / "lora-rank-r16-meaning.md").read_text()
    assert 'follow_ups:\n  - "Why not r=8?"\n  - "What does alpha do then?"\n' in exported
    out, _ = run("--path", str(tmp_path / "out"))
    assert "0 created, 0 updated, 1 unchanged" in out


def test_a_question_without_follow_ups_gets_an_empty_list(good_bank, db):
    run("--path", str(good_bank))
    assert [q.follow_ups for q in Question.objects.order_by("slug")] == [[], [], []]


def test_round_trip_on_the_real_bank_is_a_no_op(tmp_path, db):
    run("--path", str(BANK_DIR))
    call_command("export_bank", "--out", str(tmp_path / "out"), stdout=io.StringIO())
    out, _ = run("--path", str(tmp_path / "out"))
    count = len(list(BANK_DIR.rglob("*.md")))
    assert f"0 created, 0 updated, {count} unchanged" in out


def test_export_writes_a_file_an_admin_edit_can_be_committed_from(good_bank, tmp_path, db):
    run("--path", str(good_bank))
    Question.objects.filter(slug="lora-which-matrices").update(title="Which matrices does LoRA update?")
    call_command("export_bank", "--out", str(good_bank), stdout=io.StringIO())
    text = (good_bank / "lora-which-matrices.md").read_text()
    assert "title: Which matrices does LoRA update?" in text
    assert "topics: [lora]" in text
    assert text.index("## Question") < text.index("## Answer")
    assert Path(good_bank / "lora-which-matrices.md").exists()


def test_export_round_trips_awkward_text(make_question, tmp_path, db):
    make_question("single", slug="awkward-text", title='Colons: "quotes", # hashes and ünïcode?',
                  hint="Line one\nline two with a back\\slash and  two spaces", rubric=["- dash", "'single'", "yes"],
                  prompt="Prompt with ---\n\n## Not a section header", answer="Answer with `code`")
    make_question("numeric", slug="tiny-number", numeric_answer=2.5e-4, tolerance=1e-5, unit="")
    call_command("export_bank", "--out", str(tmp_path / "out"), stdout=io.StringIO())
    out, _ = run("--path", str(tmp_path / "out"))
    assert "0 created, 0 updated, 2 unchanged" in out


def test_a_curated_quiz_with_an_unknown_question_writes_nothing(good_bank, tmp_path, db):
    curated = tmp_path / "curated.yaml"
    curated.write_text("- slug: starter\n  title: Starter\n  questions: [lora-which-matrices, no-such-question]\n")
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("load_bank", "--path", str(good_bank), "--curated", str(curated), stdout=io.StringIO(), stderr=err)
    assert "curated.yaml: starter.questions: unknown question slug 'no-such-question'" in err.getvalue()
    assert not Question.objects.exists() and not Quiz.objects.exists()


def test_curated_quizzes_round_trip_through_export(good_bank, tmp_path, db):
    curated = tmp_path / "curated.yaml"
    curated.write_text("- slug: starter\n  title: Starter\n  description: Two to begin.\n  time_limit_minutes: 5\n"
                       "  questions: [lora-which-matrices, effective-batch]\n")
    out, _ = run("--path", str(good_bank), "--curated", str(curated))
    assert "curated quizzes: 1 created" in out
    assert [i.question.slug for i in Quiz.objects.get().items.all()] == ["lora-which-matrices", "effective-batch"]
    exported = tmp_path / "exported.yaml"
    call_command("export_bank", "--out", str(tmp_path / "out"), "--curated-out", str(exported), stdout=io.StringIO())
    out, _ = run("--path", str(tmp_path / "out"), "--curated", str(exported))
    assert "curated quizzes: 0 created, 0 updated, 1 unchanged" in out


def test_at_least_forty_open_questions_carry_follow_ups_for_the_mock_interview():
    questions, errors = read_bank(BANK_DIR)
    assert not errors, errors
    with_follow_ups = [q for q in questions if q.follow_ups]
    assert all(q.kind == "open" for q in with_follow_ups)
    assert len(with_follow_ups) >= 40, len(with_follow_ups)
    # A follow-up is a question of its own, not a restatement of the prompt.
    assert all(item.endswith("?") or item.endswith(".") for q in with_follow_ups for item in q.follow_ups)
