"""tunelab settings: one module, configured by environment variables through strict helpers.

Every variable is listed in the README's configuration table.
"""

import json
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str
from mlcore.paths import var_dir

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime files (database, Redis data, model cache, run artifacts) live here, git-ignored.
VAR_DIR = var_dir()  # TUNELAB_VAR_DIR, else <repo>/var
# Only this account may enter: it holds the SQLite database (sessions, API token hashes), the
# secret key and learners' artifacts. An existing var/ that others can enter is closed too.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
if VAR_DIR.stat().st_mode & 0o077 and VAR_DIR.stat().st_uid == os.getuid():
    VAR_DIR.chmod(0o700)

# Off unless asked for: a debug page shows settings and code to whoever triggers an error.
# `make dev` turns it on (with autoreload); `make run` serves like a small production site.
DEBUG = env_bool("DJANGO_DEBUG", False)

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", LOOPBACK_HOSTS)
# Served only to this machine (the default) or to others: a site others reach needs an explicit
# secret key (the same on every web node) and HTTPS.
SERVES_OTHER_HOSTS = any(host not in LOOPBACK_HOSTS for host in ALLOWED_HOSTS)


def _generated_secret_key() -> str:
    """Generate the key once into var/ (mode 0600), so sessions survive restarts and no key is
    committed. Written to a temporary file and linked into place: processes starting at once
    all read the same complete key. The file is created 0600 (not chmod-ed after writing), so
    the key is never readable by others, not even for an instant."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        tmp = VAR_DIR / f".secret_key.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won: use its key
        finally:
            tmp.unlink()
    return path.read_text().strip()


SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if SERVES_OTHER_HOSTS and not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_ALLOWED_HOSTS names hosts other than "
                                   "this machine (every web node needs the same key).")
    SECRET_KEY = _generated_secret_key()

# HTTPS: on by default for a site served to other hosts, off for loopback only (`make run` is
# plain http on 127.0.0.1). On, it redirects http to https, marks cookies Secure and sends HSTS.
HTTPS = env_bool("DJANGO_HTTPS", SERVES_OTHER_HOSTS and not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain http
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000 if HTTPS else 0, min_value=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
# Behind a proxy that terminates TLS, Django sees plain http: trust X-Forwarded-Proto from it.
# Only set this when the proxy always sets (or strips) that header, or clients could forge it.
if env_bool("DJANGO_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "ops.views.csrf_failure"  # JSON on the API paths, the usual page elsewhere

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "accounts",
    "ops",
    "quiz",
    "labs",
    "inference",
]

MIDDLEWARE = [
    # Outermost: on /api/ and /v1/ every error below it (404, CSRF, an unexpected 500) becomes JSON.
    "ops.middleware.ApiJsonErrorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files are served by the ASGI app itself in both modes: no separate web server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            # Every template's {% url %} reverses each address once per process (ops.reversing).
            "builtins": ["ops.templatetags.cached_url"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite under var/ by default, Postgres (or any) via DATABASE_URL -------------
_database_url = env_str("DATABASE_URL")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            # Kept open between requests, as a DATABASE_URL's is: a new connection costs ~0.16 ms of
            # a request's CPU (Django registers its SQL functions, then the PRAGMAs below run).
            "CONN_MAX_AGE": 60,
            # A file (not :memory:) so the servers a test starts see its data; one per pytest
            # process so two suites running at once never share it.
            "TEST": {"NAME": str(VAR_DIR / f"test_db_{os.getpid()}.sqlite3")},
        }
    }
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The web server and the worker write to the same file: WAL lets readers go on while a
    # worker writes, IMMEDIATE takes the write lock up front instead of failing mid-transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
         "transaction_mode": "IMMEDIATE", "timeout": 30}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Threads per web process serving sync views (config.asgi): each keeps its own database
# connection, so web processes x this bounds the web side's connections (PostgreSQL allows 100 by
# default). A page waiting on the LLM judge holds one for the call's length.
WEB_SYNC_THREADS = env_int("TUNELAB_WEB_THREADS", 4, min_value=1, max_value=256)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"  # collectstatic target for production
STATIC_ROOT.mkdir(exist_ok=True)
# `make setup` collects (and compresses) the files into STATIC_ROOT; WhiteNoise serves that copy.
# From source instead (no collectstatic) in dev mode and in tests, which must see edits at once.
WHITENOISE_USE_FINDERS = env_bool("TUNELAB_STATIC_FROM_SOURCE", DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# This host's own folder for run artifacts: a worker trains in it, and every host keeps there
# the copies it read back from the artifact store (labs.storage). Never shared; deletable.
ARTIFACTS_DIR = Path(env_str("TUNELAB_ARTIFACTS_DIR", str(VAR_DIR / "runs")))
# Where adapters, checkpoints and metrics go so that every host can read them: "database" (the
# default: chunks in the database DATABASE_URL names, nothing else to run), or the dotted path
# of a Django storage class, e.g. "storages.backends.s3.S3Storage" (django-storages) with its
# options as JSON in TUNELAB_ARTIFACT_STORAGE_OPTIONS ({"bucket_name": "tunelab", ...}).
ARTIFACT_STORAGE = env_str("TUNELAB_ARTIFACT_STORAGE", "database")
if ARTIFACT_STORAGE != "database":
    try:
        _artifact_options = json.loads(env_str("TUNELAB_ARTIFACT_STORAGE_OPTIONS", "{}"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"TUNELAB_ARTIFACT_STORAGE_OPTIONS must be a JSON object: {exc}") from None
    if "." not in ARTIFACT_STORAGE or not isinstance(_artifact_options, dict):
        raise ImproperlyConfigured("TUNELAB_ARTIFACT_STORAGE must be 'database' or the dotted path of a Django storage "
                                   "class, and TUNELAB_ARTIFACT_STORAGE_OPTIONS a JSON object.")
    STORAGES["artifacts"] = {"BACKEND": ARTIFACT_STORAGE, "OPTIONS": _artifact_options}

# --- Redis: one server for the Celery broker and the Channels layer --------------------------
# When REDIS_URL is unset, `make run` starts an embedded redis-server on this loopback port.
REDIS_PORT = env_int("TUNELAB_REDIS_PORT", 6390, min_value=1, max_value=65535)
REDIS_URL = env_str("REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # socket_timeout: redis-py 8 gives every read a 5 s timeout by default, exactly the time
        # channels-redis blocks in BZPOPMIN waiting for a message, so a websocket with nothing to
        # receive for 5 s died with "Timeout reading from redis" (close code 1011). Reads get
        # longer than the blocking wait; a dead Redis still surfaces within 15 s.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "capacity": 500, "expiry": 30},
    }
}

# --- Celery -----------------------------------------------------------------------------------
RUN_TIME_LIMIT_S = env_int("TUNELAB_RUN_TIME_LIMIT", 3 * 3600, min_value=60)
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # results live in the database, not in Celery
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "ops.tasks.ping": {"queue": "gpu"},
    "labs.tasks.train_run": {"queue": "gpu"},
    # GGUF exports (minutes of CPU and a whole model in memory each) and the cleanup of their
    # bundles, which lie on the export worker's disk: never on `default`, with the reaper and dispatcher.
    "labs.tasks.export_gguf": {"queue": "export"},
    "labs.tasks.clean_exports": {"queue": "export"},
}
# A GPU job is redelivered if its worker dies mid-run (acks_late), one at a time (prefetch 1).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = RUN_TIME_LIMIT_S + 300
CELERY_TASK_SOFT_TIME_LIMIT = RUN_TIME_LIMIT_S
# The visibility timeout must exceed the longest run, or Redis hands a running job to a second worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": RUN_TIME_LIMIT_S + 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("TUNELAB_CELERY_EAGER", False)
# A training worker's idle pool child imports torch and the model code before its run arrives
# (labs.worker.child_warm_start): ~3.5 s off every run's start, ~400 MB resident per waiting child.
WORKER_PRELOAD = env_bool("TUNELAB_WORKER_PRELOAD", True)
# The reaper marks runs whose worker stopped sending heartbeats as failed (default queue).
# Every interval it also re-sends queued runs whose task was lost and fills free gpu slots.
RUN_REAPER_INTERVAL_S = env_int("TUNELAB_REAPER_INTERVAL", 10, min_value=1)
CELERY_BEAT_SCHEDULE: dict = {
    "labs-reap-stale-runs": {"task": "labs.tasks.reap_runs", "schedule": float(RUN_REAPER_INTERVAL_S)},
    "labs-dispatch-runs": {"task": "labs.tasks.dispatch_runs", "schedule": float(RUN_REAPER_INTERVAL_S)},
    "labs-clean-exports": {"task": "labs.tasks.clean_exports", "schedule": 3600.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Product settings ------------------------------------------------------------------------
# LLM judge / prompting baselines (any OpenAI-compatible server). Unset key = feature off.
LLM_API_BASE_URL = env_str("TUNELAB_LLM_BASE_URL", "https://api.openai.com/v1")
LLM_API_KEY = env_str("TUNELAB_LLM_API_KEY", "")
LLM_MODEL = env_str("TUNELAB_LLM_MODEL", "gpt-4o-mini")
LLM_TIMEOUT_S = env_float("TUNELAB_LLM_TIMEOUT", 20.0, min_value=0.1)
LLM_PRICE_INPUT_PER_M = env_float("TUNELAB_LLM_PRICE_INPUT_PER_M", 0.15, min_value=0)
LLM_PRICE_OUTPUT_PER_M = env_float("TUNELAB_LLM_PRICE_OUTPUT_PER_M", 0.60, min_value=0)
JUDGE_RATE_PER_HOUR = env_int("TUNELAB_JUDGE_RATE_PER_HOUR", 60, min_value=1)

MAX_ACTIVE_RUNS_PER_USER = env_int("TUNELAB_MAX_ACTIVE_RUNS", 2, min_value=1)
# Live streams (websockets) one learner may have open at once (a run page holds one), and how
# often one stream re-reads the database when its page asks ("sync").
WS_PER_USER = env_int("TUNELAB_WS_PER_USER", 12, min_value=1)
WS_SYNC_INTERVAL_S = env_float("TUNELAB_WS_SYNC_INTERVAL", 1.0, min_value=0)
# Dataset uploads a learner may keep (bytes of examples as stored; a repeated file is kept once).
# Over it, their uploads no run uses are dropped oldest first; a launch that still does not fit is refused.
UPLOAD_BYTES_PER_USER = env_int("TUNELAB_UPLOAD_BYTES_PER_USER", 20_000_000, min_value=1)
# Fair GPU use (staff exempt from the limits). A run's cost is counted in tokens through the
# model (a training token x3: forward + backward), estimated before it is queued.
RUN_MAX_TOKENS = env_int("TUNELAB_RUN_MAX_TOKENS", 3_000_000, min_value=1000)
RUN_MAX_STEPS = env_int("TUNELAB_RUN_MAX_STEPS", 2000, min_value=1)
RUN_MAX_EVALS = env_int("TUNELAB_RUN_MAX_EVALS", 100, min_value=1)
# Seconds of gpu worker time (start to finish of each run) a learner may use per rolling 24 h.
# A launch must fit what is left after the time used and its queued and running runs' estimates.
GPU_SECONDS_PER_DAY = env_int("TUNELAB_GPU_SECONDS_PER_DAY", 2 * 3600, min_value=1)
# How a run's estimated tokens become seconds until a few runs have finished here (then their
# measured durations price a token, labs.scheduling.estimated_seconds): budget tokens per second
# of a worker (about 550 for SmolLM2-135M on 2 CPU cores; far more on a GPU) and the seconds to
# load a model.
RUN_TOKENS_PER_S = env_float("TUNELAB_RUN_TOKENS_PER_S", 500.0, min_value=1)
RUN_LOAD_S = env_float("TUNELAB_RUN_LOAD_S", 20.0, min_value=0)
# Runs wait in the database and are sent to the gpu queue at most one per free slot: set this
# to the number of gpu worker processes (`-Q gpu -c 1` each) serving the queue.
GPU_WORKER_SLOTS = env_int("TUNELAB_GPU_SLOTS", 1, min_value=1)
# A sent run that no worker has started after this long is sent again (its task was lost).
RUN_DISPATCH_TIMEOUT_S = env_int("TUNELAB_DISPATCH_TIMEOUT", 60, min_value=5)
# Steps between resumable checkpoints (a lost worker costs at most this many steps), and how
# often a run is started again after its worker was lost before it is failed.
RUN_CHECKPOINT_EVERY = env_int("TUNELAB_CHECKPOINT_EVERY", 20, min_value=1)
RUN_MAX_ATTEMPTS = env_int("TUNELAB_RUN_MAX_ATTEMPTS", 3, min_value=1)
# Step events kept per run (every k-th step beyond this): pages and replays stay small.
RUN_MAX_STEP_EVENTS = env_int("TUNELAB_RUN_MAX_STEP_EVENTS", 400, min_value=10)
RUN_HEARTBEAT_TIMEOUT_S = env_int("TUNELAB_HEARTBEAT_TIMEOUT", 30, min_value=3)
# A training worker touches its run's heartbeat this often, from a thread, whatever the run is
# doing (loading a model, a long step, evaluating); well under the timeout, or runs get reaped.
RUN_HEARTBEAT_INTERVAL_S = env_float("TUNELAB_HEARTBEAT_INTERVAL", 5.0, min_value=0.1)
if RUN_HEARTBEAT_INTERVAL_S * 3 > RUN_HEARTBEAT_TIMEOUT_S:
    raise ImproperlyConfigured("TUNELAB_HEARTBEAT_INTERVAL must be at most a third of TUNELAB_HEARTBEAT_TIMEOUT.")
# The tiny random test model is offered in the launch form only when this is on (tests).
LABS_ALLOW_TEST_MODEL = env_bool("TUNELAB_ALLOW_TEST_MODEL", False)
CLASSIFIER_CACHE_SIZE = env_int("TUNELAB_CLASSIFIER_CACHE_SIZE", 2, min_value=1)
# Models a web process loads (and merges) at once, each holding a whole model's weights while it
# does; a request that finds none free within the wait gets a 503 with Retry-After. A load costs
# the learner this many texts of TUNELAB_TEXTS_PER_MINUTE (a cached model costs nothing more).
MODEL_LOADS_AT_ONCE = env_int("TUNELAB_MODEL_LOADS_AT_ONCE", 1, min_value=1)
MODEL_LOAD_WAIT_S = env_float("TUNELAB_MODEL_LOAD_WAIT", 2.0, min_value=0)
MODEL_LOAD_TEXTS = env_int("TUNELAB_MODEL_LOAD_TEXTS", 50, min_value=0)
# Serving (inference app): texts per API request (more = 413), per playground submission,
# reviews per forward pass, torch threads in a web process (0 = torch's default: all cores).
API_MAX_TEXTS = env_int("TUNELAB_API_MAX_TEXTS", 64, min_value=1)
PLAYGROUND_MAX_TEXTS = env_int("TUNELAB_PLAYGROUND_MAX_TEXTS", 500, min_value=1)
# Texts a learner may classify per minute: API, playground and all their tokens together
# (a request counts at least one). Counted in Redis; when Redis is down the API answers 503.
CLASSIFY_TEXTS_PER_MINUTE = env_int("TUNELAB_TEXTS_PER_MINUTE", 600, min_value=1)
if max(API_MAX_TEXTS, PLAYGROUND_MAX_TEXTS) > CLASSIFY_TEXTS_PER_MINUTE:
    raise ImproperlyConfigured("TUNELAB_TEXTS_PER_MINUTE must be at least TUNELAB_API_MAX_TEXTS and "
                               "TUNELAB_PLAYGROUND_MAX_TEXTS, or a full request could never be served.")
if MODEL_LOAD_TEXTS >= CLASSIFY_TEXTS_PER_MINUTE:
    raise ImproperlyConfigured("TUNELAB_MODEL_LOAD_TEXTS must be below TUNELAB_TEXTS_PER_MINUTE, or no model could load.")
BASELINES_PER_HOUR = env_int("TUNELAB_BASELINES_PER_HOUR", 6, min_value=1)
# LLM API tokens (prompts, k-shot examples included, and replies) the prompting baselines may
# spend per learner per rolling 24 h, reserved before the calls start and settled to what the API
# reports (the judge's own limit is TUNELAB_JUDGE_RATE_PER_HOUR, also reserved first).
BASELINE_API_TOKENS_PER_DAY = env_int("TUNELAB_BASELINE_API_TOKENS_PER_DAY", 1_000_000, min_value=0)
# Login throttling (both login pages): failed attempts allowed per account and per client
# address within the window; then that account or address waits for the window to slide.
LOGIN_FAILURES_PER_ACCOUNT = env_int("TUNELAB_LOGIN_FAILURES_PER_ACCOUNT", 5, min_value=1)
LOGIN_FAILURES_PER_ADDRESS = env_int("TUNELAB_LOGIN_FAILURES_PER_ADDRESS", 20, min_value=1)
LOGIN_THROTTLE_WINDOW_S = env_int("TUNELAB_LOGIN_THROTTLE_WINDOW", 900, min_value=1)
# Accounts one address may create per window: every per-learner limit multiplies with accounts.
# A class signing up from behind one NAT needs more (or accounts made by staff in the admin).
SIGNUPS_PER_ADDRESS = env_int("TUNELAB_SIGNUPS_PER_ADDRESS", 10, min_value=1)
SIGNUP_WINDOW_S = env_int("TUNELAB_SIGNUP_WINDOW", 3600, min_value=1)
# Request bodies: refused with 413 from the Content-Length header, before Django reads them,
# and cut off when a body without one streams past the limit. The API's is smaller: 64 texts.
MAX_BODY_BYTES = env_int("TUNELAB_MAX_BODY_BYTES", 4_000_000, min_value=10_000)
API_MAX_BODY_BYTES = env_int("TUNELAB_API_MAX_BODY_BYTES", 2_000_000, min_value=10_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES
# /healthz answers from a result this many seconds old at most (asking the workers takes ~1 s).
HEALTHZ_CACHE_S = env_float("TUNELAB_HEALTHZ_CACHE", 5.0, min_value=0)
INFERENCE_BATCH_SIZE = env_int("TUNELAB_INFERENCE_BATCH_SIZE", 32, min_value=1)
INFERENCE_THREADS = env_int("TUNELAB_INFERENCE_THREADS", 0, min_value=0)
# What computes a served classifier's decoder on a CPU (mlcore.classify.BACKENDS): "openvino"
# (exported and compiled in the background after a model's first load, cached per adapter under
# var/exports/; torch serves until it is ready, and whenever it is missing or fails) or "torch".
INFERENCE_BACKENDS = ("openvino", "torch")
INFERENCE_BACKEND = env_str("TUNELAB_INFERENCE_BACKEND", "openvino")
if INFERENCE_BACKEND not in INFERENCE_BACKENDS:
    raise ImproperlyConfigured(f"TUNELAB_INFERENCE_BACKEND must be one of {', '.join(INFERENCE_BACKENDS)}, "
                               f"not {INFERENCE_BACKEND!r}.")
# GGUF exports (llama.cpp / Ollama bundles, ~100-500 MB each): builds a learner may start per
# rolling 24 h, how long after a failed build the same one may start again, how long a bundle is
# kept after it was built, and the disk all bundles on an export worker may take (oldest go first).
EXPORTS_PER_DAY = env_int("TUNELAB_EXPORTS_PER_DAY", 6, min_value=1)
EXPORT_RETRY_AFTER_S = env_int("TUNELAB_EXPORT_RETRY_AFTER", 600, min_value=0)
EXPORT_KEEP_S = env_int("TUNELAB_EXPORT_KEEP", 7 * 86_400, min_value=60)
EXPORT_DISK_BYTES = env_int("TUNELAB_EXPORT_DISK_BYTES", 5_000_000_000, min_value=1_000_000)
# Prompting baselines: examples in the few-shot prompt (drawn from the train split, balanced
# across labels) and LLM API calls in flight at once while evaluating.
BASELINE_SHOTS = env_int("TUNELAB_BASELINE_SHOTS", 6, min_value=1, max_value=64)
BASELINE_API_CONCURRENCY = env_int("TUNELAB_BASELINE_API_CONCURRENCY", 4, min_value=1, max_value=64)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("TUNELAB_LOG_LEVEL", "INFO")},
}
