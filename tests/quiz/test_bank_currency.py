"""The bank names only what the installed libraries have: TRL, PEFT and transformers as pinned.

Issue 22 found answers written against older TRL releases (`rpo_alpha`, two named adapters for the
DPO reference, `GKDTrainer` and `ORPOConfig` at the top level). Three layers keep that from coming back:
- every python block (runnable or sketch) that imports from trl, peft or transformers imports names
  that exist, and passes keyword arguments the callee accepts;
- every backticked `SomethingConfig` / `SomethingTrainer` in the text exists somewhere in those
  libraries, inline calls such as `SFTConfig(completion_only_loss=True)` use real fields, and a name
  that lives only in `trl.experimental` is introduced with that module path;
- the behaviours the fixed answers describe are run here against the real libraries (the frozen
  "ref" adapter, the template check of assistant_only_loss, Adam cancelling DPO's beta).
Names the libraries removed may appear only in a paragraph that says they are gone.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

from quiz.bank import BANK_DIR, code_blocks, read_bank

LIBRARIES = ("trl", "peft", "transformers")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_CLASS_NAME = re.compile(r"^(?:[a-z_]+\.)*([A-Z][A-Za-z0-9]*(?:Config|Trainer))$")

# TRL 1.16 and peft 0.21 still use names transformers 5.x deprecated; those warnings are not the bank's.
pytestmark = [pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning"),
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]


@cache
def bank():
    questions, errors = read_bank(BANK_DIR)
    assert not errors, errors
    return questions


def question_text(question) -> str:
    return "\n".join([question.prompt, question.answer, question.hint, *question.rubric,
                      *(c["text"] + "\n" + c["explanation"] for c in question.choices)])


@cache
def experimental_modules() -> tuple[str, ...]:
    import trl.experimental

    return tuple(f"trl.experimental.{m.name}" for m in pkgutil.iter_modules(trl.experimental.__path__))


@cache
def find_class(name: str) -> tuple[object, str] | None:
    """(object, module) for a library name: top level of trl, peft, transformers, then trl.experimental.*"""
    for module in (*LIBRARIES, *experimental_modules()):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found, module
    return None


def accepted_keywords(obj) -> set[str] | None:
    """The keyword names a class or function takes; None when it takes **kwargs (anything goes).
    The signature, not the dataclass fields: some configs (BitsAndBytesConfig) write their own __init__."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    parameters = inspect.signature(target).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def check_call(call: ast.Call, obj, where: str) -> list[str]:
    allowed = accepted_keywords(obj)
    if allowed is None:
        return []
    return [f"{where}: {getattr(obj, '__name__', obj)} has no argument {kw.arg!r}"
            for kw in call.keywords if kw.arg is not None and kw.arg not in allowed]


# --- 1. code blocks ----------------------------------------------------------------------------

# Blocks that show outdated code on purpose ("this import fails today: why?"); for them the check
# is inverted: they must still fail, or the question has stopped making sense.
OUTDATED_ON_PURPOSE = {("completion-only-loss-current-trl", "question", 1)}


def library_blocks():
    found = []
    for question in bank():
        for section, text in (("question", question.prompt), ("answer", question.answer)):
            for block in code_blocks(text):
                if block.lang == "python" and re.search(rf"^\s*(from|import)\s+({'|'.join(LIBRARIES)})\b", block.code, re.M):
                    found.append(pytest.param(question.slug, section, block, id=f"{question.slug}:{section}:{block.number}"))
    return found


@pytest.mark.parametrize(("slug", "section", "block"), library_blocks())
def test_a_code_block_imports_only_names_the_pinned_libraries_have_and_calls_them_with_real_arguments(slug, section, block):
    where = f"quiz/bank/{slug}.md code block {block.number}"
    tree = ast.parse(block.code)  # a library block must be valid Python, sketch or not
    imported, problems = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    problems.append(f"{where}: {node.module} has no {alias.name!r}")
                else:
                    imported[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
            problems += check_call(node, imported[node.func.id], where)
    if (slug, section, block.number) in OUTDATED_ON_PURPOSE:
        assert problems, f"{where} shows outdated code on purpose, but it is valid against the pinned libraries"
    else:
        assert not problems, "\n".join(problems)


def test_the_library_block_scan_sees_the_fixed_answers():
    seen = {param.values[0] for param in library_blocks()}
    assert {"dpo-chosen-logprob-falls", "dpo-reference-model-with-lora", "completion-only-loss-current-trl"} <= seen


# --- 2. names in the text ----------------------------------------------------------------------

def test_every_config_or_trainer_named_in_the_text_exists_and_experimental_ones_say_where():
    problems = []
    for question in bank():
        text = question_text(question)
        for span in sorted(set(_INLINE_CODE.findall(text))):
            call = re.match(r"^([A-Za-z_.]+)\((.*)\)$", span)
            name_match = _CLASS_NAME.match(call.group(1) if call else span)
            if not name_match:
                continue
            name = name_match.group(1)
            found = find_class(name)
            if found is None:
                problems.append(f"{question.slug}: `{span}` names {name}, which trl, peft and transformers do not have")
                continue
            obj, module = found
            if module.startswith("trl.experimental") and module not in text:
                problems.append(f"{question.slug}: {name} lives in {module}; say so where it is named")
            if call:
                expression = ast.parse(span, mode="eval").body
                problems += check_call(expression, obj, f"{question.slug}: `{span}`")
    assert not problems, "\n".join(problems)


def test_the_name_check_catches_a_removed_field_and_a_moved_trainer():
    from trl import DPOConfig

    call = ast.parse("DPOConfig(rpo_alpha=1.0, beta=0.1)", mode="eval").body
    assert check_call(call, DPOConfig, "x") == ["x: DPOConfig has no argument 'rpo_alpha'"]
    assert find_class("GKDTrainer")[1] == "trl.experimental.gkd"
    assert find_class("NoSuchTrainer") is None


# Names older TRL releases had. The bank may still mention them (learners meet them in old
# tutorials) but only in a paragraph that says they are gone.
REMOVED = {
    "rpo_alpha": ("trl", "DPOConfig"),
    "model_adapter_name": ("trl", "DPOConfig"),
    "ref_adapter_name": ("trl", "DPOConfig"),
    "DataCollatorForCompletionOnlyLM": ("trl", None),
}
_SAYS_GONE = re.compile(r"removed|is gone|no longer|older|old tutorial|fails", re.I)


def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; a fenced code block stays one paragraph, blank lines and all."""
    paragraphs, current, fenced = [], [], False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not line.strip() and not fenced:
            if current:
                paragraphs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    return paragraphs + (["\n".join(current)] if current else [])


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_a_removed_name_is_really_gone_and_the_bank_says_so_wherever_it_appears(name):
    module, owner = REMOVED[name]
    library = importlib.import_module(module)
    if owner is None:
        assert not hasattr(library, name)
    else:
        assert name not in accepted_keywords(getattr(library, owner))
    for question in bank():
        paragraphs = split_paragraphs(question_text(question))
        for number, paragraph in enumerate(paragraphs):
            if re.search(rf"\b{name}\b", paragraph):
                # A code block counts as explained by the paragraph before or after it.
                around = "\n".join(paragraphs[max(0, number - 1):number + 2])
                assert _SAYS_GONE.search(around), f"{question.slug} mentions {name} without saying it is gone:\n{around}"


def test_the_fixed_answers_name_todays_api():
    texts = {q.slug: question_text(q) for q in bank()}
    assert 'loss_type=["sigmoid", "sft"]' in texts["dpo-chosen-logprob-falls"]
    assert "loss_weights" in texts["dpo-chosen-logprob-falls"]
    assert '"ref"' in texts["dpo-reference-model-with-lora"]
    assert "trl.experimental.gkd" in texts["logit-vs-sequence-distillation"]
    assert "trl.experimental.orpo" in texts["orpo-how-it-differs"]
    for slug in ("completion-only-loss-current-trl", "trl-completion-only-replacement", "assistant-mask-needs-generation-tags"):
        assert "ValueError" in texts[slug] and "SmolLM2" in texts[slug], slug
    beta = texts["dpo-beta-what-it-controls"]
    assert "larger beta means larger steps" not in beta and "cancels" in beta


# --- 3. the behaviours, run ------------------------------------------------------------------------

def test_dpo_loss_type_sft_with_weights_is_how_rpo_is_spelled_now():
    from trl import DPOConfig

    args = DPOConfig(output_dir="unused", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], report_to="none",
                     use_cpu=True)
    assert (args.loss_type, args.loss_weights, args.beta) == (["sigmoid", "sft"], [1.0, 1.0], 0.1)
    with pytest.raises(TypeError, match="rpo_alpha"):
        DPOConfig(output_dir="unused", rpo_alpha=1.0)


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer

    from mlcore.registry import model_path

    path = str(model_path("tiny-test"))
    return path, AutoTokenizer.from_pretrained(path)


def _dpo_trainer(tmp_path, tiny, **kwargs):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    pairs = Dataset.from_list([{"prompt": "Review: great.", "chosen": " positive", "rejected": " negative"}] * 2)
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=2, max_steps=1)
    return DPOTrainer(args=args, train_dataset=pairs, processing_class=tiny[1], **kwargs)


def test_dpo_on_a_trained_adapter_gets_a_frozen_copy_as_reference_and_a_fresh_adapter_gets_none(tmp_path, tiny):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # non-zero: "trained"
    policy = _dpo_trainer(tmp_path / "a", tiny, model=get_peft_model(AutoModelForCausalLM.from_pretrained(tiny[0]), lora)).model
    assert sorted(policy.peft_config) == ["default", "ref"]
    copies = [(name, p) for name, p in policy.named_parameters() if ".ref." in name]
    assert copies
    for name, ref in copies:
        trained = policy.get_parameter(name.replace(".ref.", ".default."))
        assert torch.equal(ref, trained) and not ref.requires_grad and trained.requires_grad, name

    fresh = _dpo_trainer(tmp_path / "b", tiny, model=AutoModelForCausalLM.from_pretrained(tiny[0]),
                         peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).model
    assert sorted(fresh.peft_config) == ["default"]  # the reference is this model with the adapter off


def _messages():
    from datasets import Dataset

    return Dataset.from_list([{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}] * 2)


def test_assistant_only_loss_refuses_smollm2s_template_and_swaps_in_a_tagged_one_for_qwen25(tmp_path, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from mlcore.registry import model_path

    args = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, assistant_only_loss=True)
    smollm2 = AutoTokenizer.from_pretrained(str(model_path("smollm2-135m-instruct")))
    assert "{% generation %}" not in smollm2.chat_template
    with pytest.raises(ValueError, match="not training-compatible"):
        SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny[0]), args=args, train_dataset=_messages(),
                   processing_class=smollm2)

    import trl

    qwen = AutoTokenizer.from_pretrained(tiny[0])
    qwen.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny[0]), args=args, train_dataset=_messages(),
                         processing_class=qwen)
    assert "{% generation %}" in trainer.chat_template and "{% generation %}" not in qwen.chat_template


def test_adam_cancels_dpo_beta_in_the_first_step_and_sgd_does_not():
    """dpo-beta-what-it-controls: at the start the DPO gradient is beta/2 times one direction, so
    Adam's first step is the same for any beta; SGD's step scales with it."""
    import torch

    def first_step(beta: float, optimizer_class) -> torch.Tensor:
        torch.manual_seed(0)
        # float64: an SGD step of 1e-5 on weights of ~0.3 would lose digits in float32
        policy = torch.nn.Linear(8, 5).double()
        reference = torch.nn.Linear(8, 5).double()
        reference.load_state_dict(policy.state_dict())
        x, chosen, rejected = torch.randn(4, 8).double(), torch.tensor([0, 1, 2, 3]), torch.tensor([4, 3, 1, 0])

        def logp(model, y):
            return torch.log_softmax(model(x), -1).gather(1, y[:, None]).squeeze(1)

        with torch.no_grad():
            ref_margin = logp(reference, chosen) - logp(reference, rejected)
        margin = beta * (logp(policy, chosen) - logp(policy, rejected) - ref_margin)
        optimizer = optimizer_class(policy.parameters(), lr=1e-3)
        before = policy.weight.detach().clone()
        torch.nn.functional.softplus(-margin).mean().backward()  # -log sigmoid(margin)
        optimizer.step()
        return policy.weight.detach() - before

    adam_small, adam_large = first_step(0.1, torch.optim.Adam), first_step(0.5, torch.optim.Adam)
    assert torch.allclose(adam_small, adam_large, rtol=1e-3, atol=1e-9)
    sgd_small, sgd_large = first_step(0.1, torch.optim.SGD), first_step(0.5, torch.optim.SGD)
    assert torch.allclose(sgd_large, 5 * sgd_small, rtol=1e-6, atol=0)
