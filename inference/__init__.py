"""Use a trained adapter: the playground, the JSON and OpenAI-compatible APIs, baselines. Modules:

    models        ApiToken (hashed), BaselineResult
    serving       loaded classifiers, in a small per-process LRU cache
    services      which model a request names, checking its input, classifying
    api           POST /api/classify and the OpenAI-compatible /v1/models, /v1/chat/completions
    ratelimit     texts per learner over a sliding minute
    prompting     zero- and few-shot prompting baselines: what fine-tuning is compared against
    baselines     a run's baselines: launch, compute, store
    tasks         compute_baselines (default queue)
    forms         playground and token forms
    views         the playground, API tokens on the account page, the run's baselines section
    urls          /playground/, /account/api-tokens/, /api/classify, /v1/
    admin         tokens and baselines in the admin
    templatetags  inference_tags
    management    classify, evaluate, run_baselines
    apps          the app config
"""
