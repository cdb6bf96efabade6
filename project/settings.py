"""dualsend settings: every external value is read here, once, through django-environ.

The configuration table in README.md lists the variables. With DJANGO_DEBUG off the
project refuses to start without its secrets and real partner credentials.
"""

import importlib.util
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from project.partner_settings import read_partner, required_in_production

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# ---------------------------------------------------------------------------
# Django core
# ---------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = required_in_production(
    env,
    "DJANGO_SECRET_KEY",
    debug=DEBUG,
    development_value="django-insecure-dualsend-development-only",
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "dualsend_app.apps.DualsendConfig",
]
# The development tooling (demo, chaos, bench, the partner simulators) is an app of its
# own that the production image does not ship: its commands exist where it is installed.
if importlib.util.find_spec("devstack") is not None:
    INSTALLED_APPS.append("devstack.apps.DevstackConfig")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

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

# ---------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'dualsend.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Workers and the web process write concurrently: WAL lets readers go on while one
    # writes, IMMEDIATE takes the write lock up front (no upgrade deadlocks), and the
    # timeout waits for the lock instead of failing with "database is locked".
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Two test runs in one checkout must not share a file: DJANGO_TEST_DB_NAME separates them.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str(
            "DJANGO_TEST_DB_NAME", default=str(BASE_DIR / "var" / "test_dualsend.sqlite3")
        )
    }
else:
    # Keep connections between requests and tasks; check them before reuse so a database
    # restart costs one reconnect, not a failed task.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"urllib3": {"level": "WARNING"}},
}

# ---------------------------------------------------------------------------
# dualsend's own API
# ---------------------------------------------------------------------------
DEVELOPMENT_API_TOKEN = "dev-token-change-me"  # noqa: S105  (used only with DEBUG on)
DUALSEND_API_TOKENS = env.list(
    "DUALSEND_API_TOKENS", default=[DEVELOPMENT_API_TOKEN] if DEBUG else []
)
if not DEBUG and not DUALSEND_API_TOKENS:
    raise ImproperlyConfigured("DUALSEND_API_TOKENS must be set when DJANGO_DEBUG is off")

# A request body is a list of at most 100 items: 64 KiB is generous and bounds memory.
DUALSEND_MAX_BODY_BYTES = env.int("DUALSEND_MAX_BODY_BYTES", default=64 * 1024)
# GET /api/orders/<id>?wait=N holds a web thread; never longer than this.
DUALSEND_MAX_WAIT_SECONDS = env.float("DUALSEND_MAX_WAIT_SECONDS", default=30.0)

# ---------------------------------------------------------------------------
# Partners: where they are, how to authenticate, how hard to try
# ---------------------------------------------------------------------------
# One frozen PartnerSettings per partner; every PREFIX_* variable, its default and its
# check are in project/partner_settings.py. A bad value stops start-up here, named.
DUALSEND_PARTNERS = {
    "inventory": read_partner(
        env,
        "inventory",
        prefix="INVENTORY_API",
        url="http://127.0.0.1:8101",
        credential_name="INVENTORY_API_TOKEN",
        development_credential="dev-inventory-token",
        debug=DEBUG,
    ),
    "payment": read_partner(
        env,
        "payment",
        prefix="PAYMENT_API",
        url="http://127.0.0.1:8102",
        credential_name="PAYMENT_API_KEY",
        development_credential="dev-payment-key",
        debug=DEBUG,
    ),
}

# Compensations are the safety net: they try longer than the sends they undo.
DUALSEND_COMPENSATION_MAX_ATTEMPTS = env.int("DUALSEND_COMPENSATION_MAX_ATTEMPTS", default=10)
DUALSEND_COMPENSATION_DEADLINE = env.float("DUALSEND_COMPENSATION_DEADLINE", default=3600.0)
# settle found a send not yet final (a duplicated header result): look again after this.
DUALSEND_SETTLE_RECHECK_SECONDS = env.float("DUALSEND_SETTLE_RECHECK_SECONDS", default=2.0)

# Every breaker, rate-limit and pause key in Redis starts with this (two deployments can
# share one Redis).
DUALSEND_RESILIENCE_KEY_PREFIX = env.str("DUALSEND_RESILIENCE_KEY_PREFIX", default="dualsend")
# An in-flight claim lasts the call's timeouts plus this; past it (the worker died
# mid-call) the send may be claimed again, with the same idempotency key.
DUALSEND_LEASE_MARGIN_SECONDS = env.float("DUALSEND_LEASE_MARGIN_SECONDS", default=30.0)
# No countdown (a retry, a deferral for the breaker or the rate limit) is ever longer than
# this: the Redis broker's visibility_timeout must exceed it (a system check says so).
DUALSEND_MAX_COUNTDOWN_SECONDS = env.float("DUALSEND_MAX_COUNTDOWN_SECONDS", default=300.0)

# The sweeper: re-drives work whose message was lost (broker down at commit, worker
# killed, Redis restarted without persistence). See tasks/sweeper.py.
DUALSEND_SWEEP_EVERY_SECONDS = env.float("DUALSEND_SWEEP_EVERY_SECONDS", default=15.0)
# Work this late past when it was due is taken as lost and sent again (idempotently).
DUALSEND_SWEEP_GRACE_SECONDS = env.float("DUALSEND_SWEEP_GRACE_SECONDS", default=60.0)
# An order not final this long after it was created goes to needs_attention.
DUALSEND_ORDER_MAX_AGE_SECONDS = env.float("DUALSEND_ORDER_MAX_AGE_SECONDS", default=3 * 3600.0)

# ---------------------------------------------------------------------------
# Celery (configured from here with the CELERY_ namespace; see project/celery.py)
# ---------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"

# Bulkheads: one queue per partner API, so a slow partner fills only its own workers.
QUEUE_INVENTORY = "api.inventory"
QUEUE_PAYMENT = "api.payment"
QUEUE_DEFAULT = "default"  # settle and compensations
CELERY_TASK_DEFAULT_QUEUE = QUEUE_DEFAULT
# A plain `celery -A project worker` consumes all three; `-Q api.payment` runs one bulkhead.
CELERY_TASK_QUEUES = tuple(Queue(name) for name in (QUEUE_INVENTORY, QUEUE_PAYMENT, QUEUE_DEFAULT))
CELERY_TASK_ROUTES = {
    "tasks.sends.send_inventory": {"queue": QUEUE_INVENTORY},
    "tasks.sends.send_payment": {"queue": QUEUE_PAYMENT},
    "tasks.settle.settle_order": {"queue": QUEUE_DEFAULT},
    "tasks.compensations.compensate": {"queue": QUEUE_DEFAULT},
    "tasks.sweeper.sweep": {"queue": QUEUE_DEFAULT},
}

# A task is acknowledged after it ran, and given back when its worker dies, so a killed
# worker loses nothing; every task is idempotent against the database (claim, then act).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Long I/O tasks: a worker takes one message per free slot, not a batch others could run.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A stuck HTTP call is bounded by its own timeouts; this is the backstop.
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 150
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis redelivers a message not acknowledged within visibility_timeout. It must be longer
# than the longest countdown a retry can take (a retried task is an ETA message held
# unacknowledged by the worker until it is due), or Redis delivers it a second time.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_connect_timeout": 2,
}
if CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ (Redis still holds results and the breaker and limiter state). Without
    # publisher confirms a publish onto a dead connection "succeeds" and the message is
    # gone; with them, a broker that did not take the chord raises, and the order stays
    # pending for the sweeper, with dispatched_at unset.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True, "connect_timeout": 2}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu's Redis transport with one fix, else a Redis restart kills every worker: see
    # project/redis_transport.py.
    CELERY_BROKER_TRANSPORT = "project.redis_transport:Transport"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# When the broker is down, publishing gives up fast: POST /api/orders still answers 202 and
# the order waits as pending for the sweeper, instead of the request hanging.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 2
CELERY_REDIS_SOCKET_TIMEOUT = 10
CELERY_BEAT_SCHEDULE = {
    "sweep": {
        "task": "tasks.sweeper.sweep",
        "schedule": DUALSEND_SWEEP_EVERY_SECONDS,
        # Sweeps do not pile up while no worker runs: a late one is dropped.
        "options": {"expires": DUALSEND_SWEEP_EVERY_SECONDS},
    },
}
