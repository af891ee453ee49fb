"""Every code block the bank marks runnable runs as shown against the pinned libraries, and shows
what its answer says it shows.

A runnable block is executed in a fresh namespace holding the two names quiz/bank.py documents:
TOKENIZER_PATH (the bundled SmolLM2-135M-Instruct tokenizer, from the local model cache) and
TINY_MODEL_PATH (the tiny random test model). Nothing is downloaded.

What a block claims is checked in one of two ways:
- a check in CHECKS, keyed by question slug, recomputes the claim independently (for the
  masking snippets: which label positions are supervised, from the tokenizer itself);
- otherwise every line the block prints must appear in the block as a `# <line>` comment, so a
  block that says what it prints is held to it.
"""

from __future__ import annotations

import contextlib
import io
import signal

import pytest

from mlcore.registry import model_path
from quiz.bank import BANK_DIR, code_blocks, read_bank

TIMEOUT_S = 120
IGNORE = -100


def runnable_blocks() -> list:
    questions, errors = read_bank(BANK_DIR)
    assert not errors, errors
    found = []
    for question in questions:
        for section, text in (("question", question.prompt), ("answer", question.answer)):
            for block in code_blocks(text):
                if block.marker == "runnable":
                    found.append(pytest.param(question, block, id=f"{question.slug}:{section}:{block.number}"))
    return found


@contextlib.contextmanager
def time_limit(seconds: int):
    def stop(signum, frame):
        raise TimeoutError(f"the block ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_block(question, block) -> tuple[dict, str]:
    """Execute the block as a learner would paste it; returns its namespace and what it printed."""
    namespace = {"__name__": "__bank_block__", "TOKENIZER_PATH": str(model_path("smollm2-135m-instruct")),
                 "TINY_MODEL_PATH": str(model_path("tiny-test"))}
    out = io.StringIO()
    code = compile(block.code, f"quiz/bank/{question.slug}.md (code block {block.number})", "exec")
    with time_limit(TIMEOUT_S), contextlib.redirect_stdout(out):
        exec(code, namespace)  # noqa: S102 - curated, reviewed bank code is what this test exists to run
    return namespace, out.getvalue()


# --- independent references ----------------------------------------------------------------


def reference_split(tok, messages) -> tuple[int, list[int]]:
    """(prompt length, full ids) from the rendered text, not from apply_chat_template's ids."""
    prompt_text = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tok.apply_chat_template(messages, tokenize=False)
    prompt = tok(prompt_text, add_special_tokens=False)["input_ids"]
    full = tok(full_text, add_special_tokens=False)["input_ids"]
    assert full[:len(prompt)] == prompt
    return len(prompt), full


def supervised(ids, labels) -> list[int]:
    assert len(ids) == len(labels), "labels must be aligned with the input ids"
    positions = [i for i, label in enumerate(labels) if label != IGNORE]
    assert all(labels[i] == ids[i] for i in positions), "a supervised label differs from its token"
    return positions


def assert_masks_only_the_answer(tok, messages, ids, labels, *, claimed: str):
    """The supervised positions are exactly the tokens after the prompt, and decode to the claim."""
    prompt_len, full = reference_split(tok, messages)
    assert list(ids) == full[:len(ids)]
    positions = supervised(ids, labels)
    assert positions == list(range(prompt_len, len(ids))), "the mask does not start where the prompt ends"
    assert tok.decode([ids[i] for i in positions]) == claimed


# --- per-question checks ---------------------------------------------------------------------


def check_completion_only(ns, output, question, block):
    ns_tok = ns["tok"]
    assert isinstance(ns["full"], list) and isinstance(ns["prompt"], list), "ids must be plain lists, not a BatchEncoding"
    assert_masks_only_the_answer(ns_tok, ns["msgs"], ns["full"], ns["labels"], claimed="negative<|im_end|>\n")
    assert f"# {output.strip()}" in block.code, "the printed supervised text must be the one the comment claims"


def check_label_masking_what_and_why(ns, output, question, block):
    ids, labels = ns["full_ids"], ns["labels"]
    assert_masks_only_the_answer(ns["tok"], ns["messages"], ids, labels, claimed="negative<|im_end|>\n")
    assert supervised(ids, labels) == [len(ids) - 3, len(ids) - 2, len(ids) - 1], "the answer says the last three ids"
    assert output.split() == [str(len(ids)), "3"] and f"# {output.strip()}" in block.code


def check_formatting_fine_tuning_data(ns, output, question, block):
    encoded = ns["encoded"]
    assert_masks_only_the_answer(ns["tok"], ns["example"]["messages"], encoded["input_ids"], encoded["labels"],
                                 claimed="negative<|im_end|>\n")
    assert output == "negative<|im_end|>\n\n" and "# negative<|im_end|> and a newline" in block.code
    long_review = {"messages": [ns["example"]["messages"][0], {"role": "user", "content": "word " * 600},
                                ns["example"]["messages"][2]]}
    with pytest.raises(ValueError, match="truncate the user text"):
        ns["encode"](long_review)


def check_supervised_token_fraction(ns, output, question, block):
    from mlcore.data import Example
    from mlcore.masking import encode
    from mlcore.prompt import labels_system_prompt

    messages = ns["messages"]
    labels = ["positive", "negative", "neutral"]
    assert messages[0]["content"] == labels_system_prompt(labels), "the block must use the lab's system prompt"
    # The lab's own encoder gives the same sequence and the same mask as the snippet.
    lab = encode(ns["tok"], Example(text=messages[1]["content"], label="negative"), labels, max_length=256)
    assert (lab.input_ids, lab.labels) == (ns["input_ids"], ns["labels"])
    prompt_len, full = reference_split(ns["tok"], messages)
    assert (prompt_len, len(full), len(lab.input_ids), len(supervised(lab.input_ids, lab.labels))) == (46, 49, 48, 2)
    assert question.numeric_answer == pytest.approx(100 * 2 / 48, abs=1e-4)
    assert abs(100 * 2 / 49 - question.numeric_answer) > question.tolerance, "tolerance must reject 2/49"
    assert all(f"# {line}" in block.code for line in output.strip().splitlines())


def check_lora_config_fields(ns, output, question, block):
    from dataclasses import fields

    from peft import LoraConfig

    config = ns["config"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    # The question's key, checked against the library itself.
    names = {f.name for f in fields(LoraConfig)}
    for choice in question.choices:
        assert (choice["text"] in names) == choice["correct"], choice["text"]


def check_what_is_peft(ns, output, question, block):
    model = ns["model"]
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum(p.numel() for p in model.parameters())
    assert trainable and all("lora_" in n for n, _ in trainable), "only the adapter may be trainable"
    assert sum(p.numel() for _, p in trainable) / total < 0.05, "the answer says a small share is trainable"
    assert "trainable params" in output


def check_instruction_data_formatting(ns, output, question, block):
    from transformers import AutoTokenizer

    messages = ns["to_messages"]("  Great value.  ", "positive")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"] and messages[1]["content"] == "Great value."
    assert [m["role"] for m in ns["to_messages"]("Great value.")] == ["system", "user"]
    rendered = AutoTokenizer.from_pretrained(ns["TOKENIZER_PATH"]).apply_chat_template(messages, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\npositive<|im_end|>\n")


CHECKS = {
    "completion-only-loss-current-trl": check_completion_only,
    "label-masking-what-and-why": check_label_masking_what_and_why,
    "formatting-fine-tuning-data": check_formatting_fine_tuning_data,
    "supervised-token-fraction-with-masking": check_supervised_token_fraction,
    "lora-config-fields": check_lora_config_fields,
    "what-is-peft": check_what_is_peft,
    "instruction-data-formatting": check_instruction_data_formatting,
}


# peft 0.21 still calls a transformers method deprecated in 5.x; the warning is not the bank's.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@pytest.mark.parametrize(("question", "block"), runnable_blocks())
def test_a_runnable_block_runs_and_shows_what_its_answer_says(question, block):
    namespace, output = run_block(question, block)
    check = CHECKS.get(question.slug)
    if check is not None:
        check(namespace, output, question, block)
    else:
        claimed = [line for line in output.splitlines() if line.strip() and f"# {line.strip()}" not in block.code]
        assert not claimed, f"printed lines the block does not claim in a '# ...' comment: {claimed}"


def test_the_masking_snippets_are_runnable_and_checked():
    """The issue's first case: the masking snippets must stay runnable (not quietly re-marked as sketches)."""
    ran = {param.values[0].slug for param in runnable_blocks()}
    assert {"completion-only-loss-current-trl", "label-masking-what-and-why", "formatting-fine-tuning-data",
            "supervised-token-fraction-with-masking"} <= ran
    assert set(CHECKS) <= ran, "a check names a question that has no runnable block"


def test_a_broken_block_fails_with_its_file_and_block_in_the_traceback():
    from quiz.bank import CodeBlock, QuestionData

    question = QuestionData(slug="broken", title="t", kind="open", difficulty="beginner", topics=["lora"],
                            very_often=False, status="draft", hint="h", rubric=["a", "b", "c"], prompt="p", answer="a")
    block = CodeBlock(number=2, line=1, lang="python", marker="runnable", code="x = [1]\nx[3]")
    with pytest.raises(IndexError) as info:
        run_block(question, block)
    assert "quiz/bank/broken.md (code block 2)" in str(info.traceback[-1].path)
