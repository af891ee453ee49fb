"""Prompt tokens are metered: the k examples of a few-shot run or baseline are cut like the
classified review (one uploaded text of megabytes went whole into every prompt), and a few-shot
run's prompts count against the per-run budget (its launch was never checked)."""

import json

from django.core.files.uploadedfile import SimpleUploadedFile

from labs.models import DatasetUpload, Run
from labs.scheduling import run_cost
from labs.services import build_config
from labs.training import dataset_of
from mlcore.data import Example
from mlcore.prompt import DEFAULT_MAX_TEXT_TOKENS, prompt_token_count
from tests.labs.conftest import TINY
from tests.labs.test_launch import form_data

LABELS = ("positive", "negative", "neutral")
LONG = "it was quite something to behold, " * 60  # ~480 tokens: past the 256 a review is cut to
ROWS = [{"text": f"review {i} {LONG}", "label": LABELS[i % 3]} for i in range(60)]
FEWSHOT_LAB = "/labs/fewshot-vs-finetune/launch/"


def long_upload() -> SimpleUploadedFile:
    return SimpleUploadedFile("long.jsonl", "\n".join(json.dumps(row) for row in ROWS).encode())


def test_few_shot_examples_are_cut_like_the_review(one_torch_thread):
    from mlcore.classify import Classifier
    from mlcore.registry import load_base

    model, tokenizer = load_base("tiny-test")
    shots = [Example("x " * 5000, "positive"), Example("Fine.", "neutral")]
    classifier = Classifier(model, tokenizer, list(LABELS), shots=shots)
    cut = [len(tokenizer(s.text, add_special_tokens=False)["input_ids"]) for s in classifier.shots]
    assert cut[0] <= DEFAULT_MAX_TEXT_TOKENS and classifier.shots[1].text == "Fine."
    assert prompt_token_count(tokenizer, "Nice.", LABELS, classifier.shots) < 2 * DEFAULT_MAX_TEXT_TOKENS + 100
    assert classifier.predict(["Nice."])[0].label in LABELS


def test_a_few_shot_runs_estimate_counts_its_examples_in_every_prompt(db):
    upload = DatasetUpload(examples=ROWS, labels=list(LABELS))
    config = build_config({**TINY, "train_limit": 12})
    zero = run_cost(config, upload, mode=Run.Mode.FEWSHOT, shots=0)
    twelve = run_cost(config, upload, mode=Run.Mode.FEWSHOT, shots=12)
    # Each example cut to 256 tokens, plus its two turns' markup (uncut: ~490 tokens each).
    assert 12 * 200 < twelve.shot_tokens <= 12 * (DEFAULT_MAX_TEXT_TOKENS + 16)
    test_n = len(dataset_of(config, upload).test)  # every test prompt carries them
    assert test_n > 5 and twelve.tokens - zero.tokens == test_n * twelve.shot_tokens


def test_a_group_whose_few_shot_prompts_go_over_the_budget_is_refused_naming_it(owner_client, labs, settings):
    upload = DatasetUpload(examples=ROWS, labels=list(LABELS))
    base = build_config({**TINY})
    fewshot = run_cost({**base, "train_limit": 12}, upload, mode=Run.Mode.FEWSHOT, shots=12).tokens
    trained = max(run_cost({**base, **overrides}, upload).tokens for overrides in
                  ({"train_limit": 12, "epochs": 5, "batch_size": 4, "eval_every": 0}, {"train_limit": 240}))
    assert trained < fewshot
    settings.RUN_MAX_TOKENS = (trained + fewshot) // 2  # the fine-tuned runs fit; the few-shot prompts do not
    response = owner_client.post(FEWSHOT_LAB, {**form_data(), "upload": long_upload()})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Few-shot prompt (12 examples in the prompt, no training): Its prompts would put about" in page
    assert not Run.objects.exists()
    settings.RUN_MAX_TOKENS = fewshot + 1
    assert owner_client.post(FEWSHOT_LAB, {**form_data(), "upload": long_upload()}).status_code == 302
    few_shot_run = Run.objects.get(mode=Run.Mode.FEWSHOT)
    assert few_shot_run.estimated_tokens == fewshot
