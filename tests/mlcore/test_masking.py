"""Label masking on the real SmolLM2 tokenizer: exactly the answer is supervised."""

import pytest

from mlcore.data import Example
from mlcore.masking import IGNORE_INDEX, MaskingError, encode, prompt_and_answer_ids, token_view

LABELS3 = ["positive", "negative", "neutral"]
LABELS4 = ["positive", "negative", "neutral", "mixed"]
IM_END = 2  # <|im_end|>: the end-of-turn token, and also this tokenizer's pad token


def supervised_positions(encoded):
    return [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]


def test_the_pad_token_is_the_end_of_turn_token(tokenizer):
    # The premise of the next tests: a mask built from input_ids == pad_token_id would hide <|im_end|>.
    assert tokenizer.pad_token_id == IM_END
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == IM_END


@pytest.mark.parametrize("label", LABELS3)
def test_only_the_label_and_end_of_turn_are_supervised(tokenizer, label):
    encoded = encode(tokenizer, Example("Works fine, nothing special.", label), LABELS3, max_length=256)
    n = len(encoded.input_ids)
    assert supervised_positions(encoded) == [n - 2, n - 1]
    assert encoded.labels[-2:] == [tokenizer.convert_tokens_to_ids(label), IM_END]
    assert encoded.labels[-2:] == encoded.input_ids[-2:]
    assert encoded.num_supervised == 2


def test_the_end_of_turn_token_is_supervised_although_it_equals_the_pad_id(tokenizer):
    encoded = encode(tokenizer, Example("Great value.", "positive"), LABELS3, max_length=256)
    assert encoded.input_ids[-1] == tokenizer.pad_token_id
    assert encoded.labels[-1] == tokenizer.pad_token_id  # not -100


def test_the_template_newline_after_end_of_turn_is_cut(tokenizer):
    encoded = encode(tokenizer, Example("Great value.", "positive"), LABELS3, max_length=256)
    text = tokenizer.decode(encoded.input_ids)
    assert text.endswith("<|im_start|>assistant\npositive<|im_end|>")


def test_the_prompt_is_every_token_before_the_answer(tokenizer):
    encoded = encode(tokenizer, Example("Arrived late.", "negative"), LABELS3, max_length=256)
    prompt = tokenizer.decode(encoded.input_ids[:-2])
    assert prompt.startswith("<|im_start|>system\nClassify the sentiment of the product review.")
    assert prompt.endswith("<|im_start|>user\nArrived late.<|im_end|>\n<|im_start|>assistant\n")
    assert all(label == IGNORE_INDEX for label in encoded.labels[:-2])


def test_without_masking_every_token_is_supervised(tokenizer):
    encoded = encode(tokenizer, Example("Arrived late.", "negative"), LABELS3, max_length=256, mask_prompt=False)
    assert encoded.labels == encoded.input_ids
    assert encoded.num_supervised == len(encoded.input_ids) - 1  # position 0 has nothing before it


def test_four_labels_supervise_the_mixed_label_the_same_way(tokenizer):
    encoded = encode(tokenizer, Example("Good sound, awful battery.", "mixed"), LABELS4, max_length=256)
    assert "neutral or mixed." in tokenizer.decode(encoded.input_ids)
    assert [encoded.input_ids[i] for i in supervised_positions(encoded)] == [
        tokenizer.convert_tokens_to_ids("mixed"),
        IM_END,
    ]


@pytest.mark.parametrize("variant", ["reviews", "reviews_mixed"])
def test_every_bundled_example_supervises_exactly_its_label_and_end_of_turn(tokenizer, request, variant):
    dataset = request.getfixturevalue(variant)
    for example in dataset.train + dataset.validation + dataset.test:
        encoded = encode(tokenizer, example, dataset.labels, max_length=256)
        supervised = [encoded.input_ids[i] for i in supervised_positions(encoded)]
        assert tokenizer.decode(supervised) == example.label + "<|im_end|>", example


def test_truncation_cuts_the_review_and_keeps_the_label(tokenizer):
    long_review = "The zipper jammed on day one and never recovered. " * 60
    encoded = encode(tokenizer, Example(long_review, "negative"), LABELS3, max_length=96)
    assert encoded.text_truncated
    assert len(encoded.input_ids) <= 96
    assert encoded.labels[-2:] == [tokenizer.convert_tokens_to_ids("negative"), IM_END]
    assert tokenizer.decode(encoded.input_ids).endswith("<|im_end|>\n<|im_start|>assistant\nnegative<|im_end|>")


def test_a_short_review_is_not_marked_truncated(tokenizer):
    assert not encode(tokenizer, Example("Fine.", "neutral"), LABELS3, max_length=96).text_truncated


def test_an_example_left_with_no_supervised_token_is_refused(tokenizer):
    # max_length below the prompt length would cut the answer off: loss 0 and NaN grad norm
    # elsewhere; here it is an error.
    with pytest.raises(MaskingError, match="no supervised token"):
        encode(tokenizer, Example("Fine.", "neutral"), LABELS3, max_length=32)
    with pytest.raises(MaskingError, match="no supervised token"):
        encode(tokenizer, Example("Fine.", "neutral"), LABELS3, max_length=32, mask_prompt=False)


def test_a_template_whose_prompt_is_not_a_token_prefix_is_refused(tokenizer):
    # A generation prompt ending in a space (a classic template slip): " neutral" is one token,
    # so the prompt tokenised alone ends in a token that prompt+answer does not have.
    from mlcore.registry import load_tokenizer

    odd = load_tokenizer("smollm2-135m-instruct")
    odd.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|>assistant\nAnswer: {{ m['content'] }}<|im_end|>\n"
        "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\nAnswer: {% endif %}"
    )
    with pytest.raises(MaskingError, match="not a prefix"):
        prompt_and_answer_ids(odd, "Fine.", "neutral", LABELS3)


def test_token_view_shows_which_tokens_are_graded(tokenizer):
    encoded = encode(tokenizer, Example("Fine.", "neutral"), LABELS3, max_length=256)
    rows = token_view(tokenizer, encoded)
    assert len(rows) == len(encoded.input_ids)
    graded = [row for row in rows if row["supervised"]]
    assert [row["token"] for row in graded] == ["neutral", "<|im_end|>"]
    assert rows[0] == {"token": "<|im_start|>", "id": rows[0]["id"], "label_id": IGNORE_INDEX, "supervised": False}
