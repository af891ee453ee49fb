"""Infrastructure every app stands on: realtime, limits, errors, health, and the diagnostics job.
Modules:

    realtime       the one way worker code talks to browsers: a group send on the channel layer
    consumers      the websocket base: authorize before accept, replay from the DB, then stream
    limits         counted limits in Redis: rate limits, login throttling, spend reservations
    middleware     two guards in front of every request: body size, JSON errors on the API
    daphne_limits  the body-size limit inside Daphne, while the body is still arriving
    reversing      reverse() once per process and script prefix, for pages that link many addresses
    templatetags   cached_url: the {% url %} builtin of every template, through reversing
    errors         API errors (/api/, /v1/): always JSON, in the OpenAI error shape
    text           what learner text and JSON must be to be stored: no NUL or lone surrogate, bounded integers
    health         /healthz: database, Redis, at least one Celery worker
    queue          send a Celery task by its name; the workers' remote control
    llm            the settings of the OpenAI-compatible endpoint the site may call
    dashboard      the learner's home after login
    models         PingJob, the diagnostics job (web -> Redis -> worker -> channel layer -> browser)
    access         who may see a PingJob (staff)
    services       launch and record the ping job
    tasks          the ping task
    views          home, healthz, diagnostics, CSRF failure page
    urls           the site-level URLs of these views
    routing        the diagnostics websocket
    admin          PingJob in the admin
    apps           the app config
    management     setup_site: what `make run` prepares
"""
