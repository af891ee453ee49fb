"""tunelab's ML core: fine-tune a small instruct LLM with LoRA into a sentiment classifier.

A plain Python package: it imports nothing from Django, so it can be tested and benchmarked on
its own. The Django apps (labs, inference) and the management commands call into it.

Modules, in the order data flows through them:
    registry       base models by name, load_base(), pick_device()
    paths          where runtime files live (var/, the model cache)
    data           bundled datasets, upload parsing, splits (package)
    prompt         THE prompt format (training, evaluation and serving all use it)
    masking        tokenisation + label mask (only the assistant's answer is supervised)
    cost           what a run will cost (steps, tokens), computed before it runs
    config         TrainConfig: each training setting declared once, its checks (no torch)
    train          the training loop (torch, peft and transformers at the top)
    upper          LoRA in the top blocks only: the frozen blocks below run once per example
    lab_cache      what every run of a lab computes alike (zero-shot baseline, frozen states), kept
    classify       label scoring with a cached system-prompt prefix
    fused          a lean inference forward for Llama-family decoders
    metrics        accuracy, macro-F1, per-class scores, confusion matrix
    evaluate       classifier + examples -> metrics and per-example predictions
    gguf_export    a trained classifier as GGUF, for llama.cpp and Ollama
    gguf_reader    the gguf package with its header reader made fast (every import of gguf goes here)
    gguf_quant     calibrated rounding (GPTQ) into Q8_0 / Q4_0 blocks
    gguf_classify  classify through an exported GGUF file, to check an export
    onnx_serving   the served decoder exported to ONNX and compiled by OpenVINO, off the request path
"""

import os

# Let idle OpenMP threads sleep instead of spin. torch's CPU kernels run on OpenMP threads that,
# by default, busy-wait after every parallel region; on a machine whose cores are shared with
# other processes (2 cores, a web server, tests, another training run) those spinning threads
# steal the cores the working ones need. Measured here under load: one LoRA training step of
# SmolLM2-135M took 48-67 s with the default policy and 5.5-6.5 s with PASSIVE. It must be set
# before torch starts its thread pool, hence here, before any mlcore module imports torch;
# an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
