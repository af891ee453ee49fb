"""Runs: fine-tune a model in a lab and see what happened (ARCHITECTURE.md follows one run). Modules:

    models         Lab, DatasetUpload, RunGroup, Run, RunEvent, ArtifactSet, ArtifactChunk
    catalog        the lab catalog: one markdown file per lab, checked when it loads (package)
    access         get_run_for_user and friends: one helper per owned object, views and sockets
    selectors      read-only queries other apps' pages show: a learner's last run, the next lab
    scheduling     fair use of the gpu workers: cost, GPU time used, dispatch to free slots, continuations
    events         a run's numbered events: persisted under a row lock, then broadcast
    services       what a learner does to runs: launch, upload a dataset, cancel
    worker         the worker side: claim, record, heartbeat, finish a run; the reaper
    training       inside the worker: Run row -> mlcore calls -> Outcome
    storage        a run's adapter and checkpoint for every host: stored once, local folders are caches
    exports        GGUF downloads of a run: request, build, state
    tasks          thin Celery tasks: train_run (gpu queue), reap_runs, dispatch_runs, export_gguf (sent by name)
    consumers      RunConsumer: a run's numbered events over a websocket
    routing        /ws/labs/runs/<pk>/
    presenters     what the pages show, computed from the rows
    forms          the launch form and dataset uploads
    views          thin pages: catalog, launch, runs, results, compare, downloads
    urls           /labs/
    admin          runs, groups, uploads and labs in the admin
    templatetags   labs_exports
    management     load_labs, finetune, export_gguf, warm_lab_cache (setup: what the default lab reuses)
    apps           the app config
"""
