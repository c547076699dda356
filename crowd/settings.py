"""Settings: the embedded default when no environment is set, production from the environment.

No variables: SQLite (WAL, IMMEDIATE transactions), the in-memory channel layer and
Dramatiq jobs run by an in-process worker. ``DATABASE_URL`` switches to PostgreSQL,
``REDIS_URL`` to the Redis channel layer, the Redis job broker and a shared cache.
The README's configuration table lists every variable read here.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured
from dramatiq.middleware import Retries

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The configured key, else, on the embedded default, one generated once and kept in
    VAR_DIR (never a fixed default). With ``DATABASE_URL`` set the set-up may span machines,
    and a key generated per machine would break sessions and every signed URL between them:
    the key must then be configured."""
    configured = env.str("SECRET_KEY", default="")
    if configured:
        return configured
    if env.str("DATABASE_URL", default=""):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DATABASE_URL set, every web and job process on every "
            "machine must share one key (a key generated per machine breaks sessions and "
            "signed URLs between them): set SECRET_KEY to the same long random value "
            "everywhere, for example the output of: "
            'python -c "import secrets; print(secrets.token_urlsafe(50))"'
        )
    path = VAR_DIR / "secret_key"
    try:
        with path.open("x") as fh:  # "x": two processes starting at once cannot both write
            fh.write(secrets.token_urlsafe(50))
    except FileExistsError:
        pass
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    # django_dramatiq builds the broker in its AppConfig, so it comes before every app
    # that declares actors.
    "django_dramatiq",
    "crowd",
    "tasks",
    "qa",
    "payouts",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "crowd.csp.ContentSecurityPolicyMiddleware",
    "crowd.static.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "crowd.slashes.ApiSlashMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "crowd.urls"
ASGI_APPLICATION = "crowd.asgi.application"
AUTH_USER_MODEL = "crowd.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Writers of one process queue in order on a lock of the process (crowd/sqlite).
    DATABASES["default"]["ENGINE"] = "crowd.sqlite"
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so
    # concurrent writers queue on the busy timeout instead of failing with "database is locked"
    # when a read transaction tries to upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
        ),
    }
    # A local file: keeping each thread's connection saves a reconnect (and the PRAGMAs)
    # on every request and job.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=None)
    # Tests use a file too, not SQLite's shared in-memory database: that one locks whole
    # tables without waiting, so it would test a different engine from the one that runs.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # Check a connection before it is used (a pooled one as it leaves the pool, a persistent
    # one at the start of a request): one whose server process went away (a database restart
    # or fail-over, pg_terminate_backend) is replaced instead of failing the request. The
    # check is one round trip; crowd.postgresql replaces all of a pool's dead connections as
    # soon as one is found (see there).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["ENGINE"] = "crowd.postgresql"
    # A connection pool per process: under ASGI each request may run in another thread, so
    # persistent per-thread connections would pile up, and no connection at all would cost
    # a PostgreSQL backend start (several ms) on every request.
    # Prepared statements: a statement a connection has run this many times is prepared, so
    # PostgreSQL plans it once per connection instead of on every call (the claim and the
    # counted submit are planned in about the time they run). Needs server-side binding.
    # 0 turns both off (Django's default): for a pooler that cannot keep prepared statements
    # (PgBouncer in transaction mode before 1.21).
    PREPARE_THRESHOLD = env.int("DATABASE_PREPARE_THRESHOLD", default=5)
    if PREPARE_THRESHOLD > 0:
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=PREPARE_THRESHOLD
        )
    if env.bool("DATABASE_POOL", default=True):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN", default=2),
            "max_size": env.int("DATABASE_POOL_MAX", default=20),
            "timeout": env.int("DATABASE_POOL_TIMEOUT", default=10),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
DATABASES["default"]["ATOMIC_REQUESTS"] = False

# --- Redis: channel layer, job broker, cache --------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
REDIS_PREFIX = env.str("REDIS_PREFIX", default="crowd")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: a group message is published once and each ASGI process with
            # members in the group gets it once (see crowd/layers.py).
            "BACKEND": "crowd.layers.RedisBroadcastLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_connect_timeout": 5}],
                "prefix": REDIS_PREFIX,
            },
        }
    }
    # A cache command waits this long at most for Redis to connect or answer; past it, or
    # with Redis down, the cache fails open (crowd/cache.py): it only holds helpers (rate
    # limit counters, the sweep's schedule), and the database decides everything else.
    REDIS_CACHE_TIMEOUT_SECONDS = env.float("REDIS_CACHE_TIMEOUT_SECONDS", default=0.5)
    CACHES = {
        "default": {
            "BACKEND": "crowd.cache.FailOpenRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
            "OPTIONS": {
                "socket_connect_timeout": REDIS_CACHE_TIMEOUT_SECONDS,
                "socket_timeout": REDIS_CACHE_TIMEOUT_SECONDS,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "crowd.layers.EmbeddedChannelLayer",
            "CONFIG": {"capacity": env.int("LIVE_CHANNEL_CAPACITY", default=10_000)},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

_JOB_MIDDLEWARE: list[Any] = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    Retries(
        min_backoff=env.int("JOB_RETRY_MIN_BACKOFF_MS", default=15_000),
        max_backoff=env.int("JOB_RETRY_MAX_BACKOFF_MS", default=7 * 24 * 3600 * 1000),
    ),
    "dramatiq.middleware.Pipelines",
    # Lets a job tell whether the broker will retry it (qa.jobs.export_build).
    "dramatiq.middleware.CurrentMessage",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
]
# A job worker that dies mid-job (killed, out of memory, its host gone) leaves its message
# unacknowledged. Live workers put such messages back on their queue once the dead worker has
# sent no heartbeat for this long; every broker command is a heartbeat, and a worker polls its
# idle queues about once a second even while busy, so a live worker never goes this quiet.
JOB_HEARTBEAT_TIMEOUT_MS = env.int("JOB_HEARTBEAT_TIMEOUT_MS", default=15_000)
# A job that builds one row's results (a consensus run, an export) claims the row for this
# long and renews the claim every third of it while it runs (crowd/claims.py). A worker cut
# off from Redis keeps running, and renewing, while its job is delivered again: the second
# copy finds the row claimed and leaves it. A dead worker stops renewing, and the next
# delivery takes over once the claim lapses; as long as the broker's heartbeat timeout, that
# delivery need not wait.
JOB_LEASE_SECONDS = env.float("JOB_LEASE_SECONDS", default=15.0)
if REDIS_URL:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        "OPTIONS": {
            "url": REDIS_URL,
            "namespace": REDIS_PREFIX + "-jobs",
            "heartbeat_timeout": JOB_HEARTBEAT_TIMEOUT_MS,
            # Look for dead workers' messages on every broker command (out of a million), not
            # Dramatiq's default one in a thousand, which strands a message for many minutes
            # (an idle worker sends about one command a second); the look is a range read of
            # a small sorted set.
            "maintenance_chance": 1_000_000,
        },
        "MIDDLEWARE": _JOB_MIDDLEWARE,
    }
else:
    # Embedded default: the stub broker keeps messages in this process and the in-process
    # worker (crowd.jobs.InProcessWorker) starts on the first message and runs them.
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": [*_JOB_MIDDLEWARE, "crowd.jobs.InProcessWorker"],
    }
JOB_WORKER_THREADS = env.int("JOB_WORKER_THREADS", default=2)
DRAMATIQ_AUTODISCOVER_MODULES = ["jobs"]

# --- Files ------------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
MEDIA_URL = "/media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# With a bucket named, images, thumbnails and exports live in that S3-compatible bucket
# (crowd/storage.py), shared by every machine; without one, under MEDIA_ROOT on this machine.
# django-storages reads the AWS_* settings below; the web processes hand out presigned URLs
# valid for STORAGE_URL_SECONDS instead of streaming the bytes.
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
STORAGE_URL_SECONDS = env.int("STORAGE_URL_SECONDS", default=300)
if AWS_STORAGE_BUCKET_NAME:
    AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
    AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="") or None
    AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="") or None
    AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="") or None
    AWS_S3_ADDRESSING_STYLE = env.str("AWS_S3_ADDRESSING_STYLE", default="") or None
    # Where browsers and scripts reach the store, when not at AWS_S3_ENDPOINT_URL (the
    # address inside the servers' network): presigned URLs are signed for this one.
    AWS_S3_PUBLIC_ENDPOINT_URL = env.str("AWS_S3_PUBLIC_ENDPOINT_URL", default="") or None
    STORAGES["default"] = {"BACKEND": "crowd.storage.BucketStorage"}
WHITENOISE_USE_FINDERS = DEBUG
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2 * 1024 * 1024)

# --- Auth -------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Browsers remember to use HTTPS only (sent on HTTPS responses alone, so plain-http
# localhost is never pinned); on by default once cookies are HTTPS-only.
SECURE_HSTS_SECONDS = env.int(
    "SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if SESSION_COOKIE_SECURE else 0
)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# How many requests of a web process run their synchronous part (the view) at once; the rest
# wait in arrival order (crowd/handlers.py). 0: no limit.
WEB_REQUEST_SLOTS = env.int("WEB_REQUEST_SLOTS", default=4)
# How long the cache keeps a token's user (crowd/tokens.py); 0: every request reads them.
# Every change drops the entry, but only in a cache the web processes share: with the
# process-local cache of the embedded default it stays off unless set (one process only).
TOKEN_CACHE_SECONDS = env.int("TOKEN_CACHE_SECONDS", default=60 if REDIS_URL else 0)

REST_FRAMEWORK: dict[str, Any] = {
    # Token first: its WWW-Authenticate header is what turns "not logged in" into a 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "crowd.tokens.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "crowd.parsers.JSONParser",  # DRF's, with too-deep nesting a 400
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "crowd.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "crowd.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {
        "auth": env.str("THROTTLE_AUTH", default="30/minute"),
        "register": env.str("THROTTLE_REGISTER", default="10/minute"),
        # Per worker, POST /projects/{id}/assignments/next/.
        "next": env.str("THROTTLE_NEXT", default="120/minute"),
    },
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Crowd annotation API",
    "DESCRIPTION": "Microtasks, routing, quality, consensus, datasets and pay for annotation.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # JSON bodies are documented as JSON only (DRF's form parsers accept them too): a
    # generated client then has one body type per operation. Uploads name multipart.
    "PARSER_WHITELIST": ["crowd.parsers.JSONParser"],
    # Operation ids name the path after the version: projects_list, not v1_projects_list.
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Item schemas that AnnotationsField refers to, beside drf-spectacular's enum hook.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "crowd.schema.add_components",
    ],
    # Each operation's tag comes from crowd.schema.TAG_RULES.
    "TAGS": [
        {"name": "Accounts", "description": "Registration, tokens, sessions and the caller."},
        {"name": "Projects", "description": "Managers' projects: settings, state and progress."},
        {"name": "Images", "description": "Uploads, the image list and image files."},
        {"name": "Work", "description": "Workers' leases, answers and history."},
        {"name": "Quality", "description": "Gold, worker scores, agreement and consensus."},
        {"name": "Review", "description": "Approving and rejecting answers; bonuses."},
        {"name": "Money", "description": "Balances, ledger, payout accounts and payouts."},
        {"name": "Datasets", "description": "Exports of merged labels, and their downloads."},
        {"name": "Models", "description": "Model predictions: imports and ML backend runs."},
    ],
}

# --- Product ----------------------------------------------------------------------------------
DEFAULT_CURRENCY = env.str("DEFAULT_CURRENCY", default="USD")

# --- Money ------------------------------------------------------------------------------------
# A worker may request a payout once their balance reaches this (in each currency's units).
MIN_PAYOUT = env.str("MIN_PAYOUT", default="5.00")
# Projects whose effective hourly rate (median active time per task x reward) falls below
# this, in the project's currency per hour, carry a fair-pay warning.
FAIR_PAY_HOURLY_FLOOR = env.str("FAIR_PAY_HOURLY_FLOOR", default="10.00")
# Stripe Connect: set STRIPE_SECRET_KEY to pay through Stripe; the manual provider otherwise.
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Where the SDK sends requests; only changed to point it at a local Stripe stand-in.
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_TIMEOUT_SECONDS = env.float("STRIPE_TIMEOUT_SECONDS", default=20.0)
# Retries inside one call (same idempotency key); the payout job retries on top of these.
STRIPE_NETWORK_RETRIES = env.int("STRIPE_NETWORK_RETRIES", default=2)

# --- Locale, logging --------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

AUTHENTICATION_BACKENDS = ["crowd.backends.CaseInsensitiveModelBackend"]

# --- Routing --------------------------------------------------------------------------------
LEASE_SWEEP_SECONDS = env.int("LEASE_SWEEP_SECONDS", default=30)  # 0: no periodic sweep
# PostgreSQL: after tasks are added, their tables' statistics are refreshed at most this often
# (tasks.planner_stats; the claim's plan depends on them). 0: only when a project starts.
ROUTING_ANALYZE_SECONDS = env.int("ROUTING_ANALYZE_SECONDS", default=10)
# A worker hears this many seconds before their lease expires (at most half the lease).
LEASE_WARNING_SECONDS = env.int("LEASE_WARNING_SECONDS", default=60)
# A worker sees their score move only every this many of their answers in a project: a
# score that moved right after an answer would tell them which task was gold.
SCORE_SHOWN_EVERY = env.int("SCORE_SHOWN_EVERY", default=10)
# A task whose answers reach its overlap is decided (consensus, dynamic overlap, agreement)
# by a job, off the request path ("deferred"), which waits this long for more to batch with;
# "inline" decides it in the submitting request.
TASK_DECISIONS = env.str("TASK_DECISIONS", default="deferred")
if TASK_DECISIONS not in ("deferred", "inline"):
    raise ImproperlyConfigured("TASK_DECISIONS is 'deferred' or 'inline'")
TASK_DECISION_DELAY_MS = env.int("TASK_DECISION_DELAY_MS", default=50)

# --- Live -------------------------------------------------------------------------------------
# Summary frames (progress, work available) go out at most once per this many seconds per
# group (per process in the embedded default, per deployment with Redis); the first change
# after a quiet spell goes at once.
LIVE_COALESCE_SECONDS = env.float("LIVE_COALESCE_SECONDS", default=0.1)

# --- Ingestion --------------------------------------------------------------------------------
MAX_IMAGE_PIXELS = env.int("MAX_IMAGE_PIXELS", default=100_000_000)  # decompression-bomb cap
MAX_IMAGE_BYTES = env.int("MAX_IMAGE_BYTES", default=200 * 1024 * 1024)
MAX_UPLOAD_BYTES = env.int("MAX_UPLOAD_BYTES", default=2 * 1024 * 1024 * 1024)  # one request
MAX_ARCHIVE_FILES = env.int("MAX_ARCHIVE_FILES", default=20_000)
NEAR_DUPLICATE_BITS = env.int("NEAR_DUPLICATE_BITS", default=6)  # of 64 perceptual-hash bits
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # larger uploads stream to a temporary file

# --- Model in the loop ------------------------------------------------------------------------
# This server's own address as other services reach it (no trailing slash): ML backends fetch
# images from signed URLs on it. Unset: running a backend is refused until it is set.
PUBLIC_URL = env.str("PUBLIC_URL", default="").rstrip("/")
# The only host:port pairs a project's ML backend may use (checked when the project is saved
# and again before every call); empty: no backend may be named.
ML_BACKEND_HOSTS = env.list("ML_BACKEND_HOSTS", default=[])
# How long a signed image URL handed to a backend stays valid.
ML_IMAGE_URL_SECONDS = env.int("ML_IMAGE_URL_SECONDS", default=900)
# Calls to a backend: images per /predict, seconds to connect and to read an answer, tries of
# one call (waiting ML_BACKEND_BACKOFF_SECONDS, doubling, between them), and the largest
# answer read.
ML_BACKEND_BATCH_SIZE = env.int("ML_BACKEND_BATCH_SIZE", default=8)
ML_BACKEND_CONNECT_TIMEOUT_SECONDS = env.float("ML_BACKEND_CONNECT_TIMEOUT_SECONDS", default=5.0)
ML_BACKEND_TIMEOUT_SECONDS = env.float("ML_BACKEND_TIMEOUT_SECONDS", default=120.0)
ML_BACKEND_TRIES = env.int("ML_BACKEND_TRIES", default=3)
ML_BACKEND_BACKOFF_SECONDS = env.float("ML_BACKEND_BACKOFF_SECONDS", default=2.0)
ML_BACKEND_MAX_RESPONSE_BYTES = env.int("ML_BACKEND_MAX_RESPONSE_BYTES", default=64 * 1024 * 1024)
# A run stops (failed) after this many batches in a row fail whole: the backend is down.
ML_BACKEND_MAX_FAILED_BATCHES = env.int("ML_BACKEND_MAX_FAILED_BATCHES", default=3)
# Largest predictions file imported in one request, bytes (413 above it).
MAX_PREDICTIONS_BYTES = env.int("MAX_PREDICTIONS_BYTES", default=100 * 1024 * 1024)
