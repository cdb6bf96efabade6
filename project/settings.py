"""dualsend settings: every external value is read here, once, through django-environ.

The configuration table in README.md lists the variables. With DJANGO_DEBUG off the
project refuses to start without its secrets and real partner credentials.
"""

import importlib.util
import os  # Prometheus metrics: PROMETHEUS_MULTIPROC_DIR is exported below
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from dualsend_app.log_formats import log_format, logging_config
from project.api_clients import parse_api_clients, parse_client_rate
from project.database_settings import configure_postgresql
from project.partner_settings import SettingReader, read_partner, required_in_production

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
# Production runs on the database it is given, never on a SQLite file it made up.
if not DEBUG and not env.str("DATABASE_URL", default=""):
    raise ImproperlyConfigured(
        "DATABASE_URL must be set when DJANGO_DEBUG is off "
        "(e.g. postgres://user:password@host:5432/dualsend)"
    )

# --- Security: HTTPS only when DJANGO_DEBUG is off ---------------------------------------
# `manage.py check --deploy --fail-level WARNING` passes with production settings
# (tests/test_production.py). https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"  # no page of ours is ever framed
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # http:// is redirected to https://. Set 0 only when a proxy in front already does it.
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Probes and scrapers inside the network speak plain HTTP (paths without the leading /).
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    # Behind a TLS-terminating proxy: believe its X-Forwarded-Proto. Set it only when that
    # proxy is the only way in and overwrites the header, or a client could claim https.
    if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Browsers then refuse plain HTTP to this host for that long: start at an hour, raise it
    # to a year (31536000) once HTTPS is proven here.
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Swagger UI's files for /api/docs, served as static files like the admin's (no CDN).
    "drf_spectacular_sidecar",
    "dualsend_app.apps.DualsendConfig",
]
# The development tooling (demo, chaos, bench, the partner simulators) is an app of its
# own that the production image does not ship: its commands exist where it is installed.
if importlib.util.find_spec("devstack") is not None:
    INSTALLED_APPS.append("devstack.apps.DevstackConfig")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS and JS) from this process: see STATIC_ROOT below.
    "whitenoise.middleware.WhiteNoiseMiddleware",
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
    configure_postgresql(env, DATABASES["default"])
# The processes that each hold a pool against this database: the web process plus every
# worker (the README's production layout: gunicorn and one worker per queue, 4). Only the
# system check dualsend.W006 reads it.
DUALSEND_EXPECTED_PROCESSES = SettingReader(env, "DUALSEND").positive(int, "EXPECTED_PROCESSES", 4)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Static files: WhiteNoise serves them, so the admin is styled with DJANGO_DEBUG off ---
# Production serves STATIC_ROOT as `manage.py collectstatic` left it (the image runs it at
# build time: Dockerfile), under hashed names cached for a year and gzipped; a page naming
# a file collectstatic did not collect fails loudly. With DJANGO_DEBUG on (the demo, the
# tests) files come straight from the apps, no collectstatic needed. Both pinned at load:
# the test runner turns DEBUG off at run time, and WhiteNoise would then look in
# STATIC_ROOT, which a checkout has not collected.
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Logs (README "Logs"; dualsend_app/log_formats.py) -------------------------------------
# One JSON object per line when DJANGO_DEBUG is off, readable text when on; DUALSEND_LOG_FORMAT
# (json or text) overrides. Every line about an order carries its order_id and
# correlation_id, set from context (dualsend_app/log_context.py), never typed into messages.
# Celery's worker and beat use this too (dualsend_app/task_log_context.py), with their
# --loglevel and --logfile; gunicorn's logs, its access log included: gunicorn.conf.py.
try:
    DUALSEND_LOG_FORMAT = log_format(env.str("DUALSEND_LOG_FORMAT", default=""), debug=DEBUG)
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None
LOGGING = logging_config(DUALSEND_LOG_FORMAT, level=env.str("DJANGO_LOG_LEVEL", default="INFO"))

# ---------------------------------------------------------------------------
# dualsend's own API
# ---------------------------------------------------------------------------
DEVELOPMENT_API_TOKEN = "dev-token-change-me"  # noqa: S105  (used only with DEBUG on)
# The API's clients, each `name:token` or a plain `token` (project/api_clients.py); a bad
# entry stops start-up here, named by position, never echoing a token.
DUALSEND_API_CLIENTS = parse_api_clients(
    env.str("DUALSEND_API_TOKENS", default=DEVELOPMENT_API_TOKEN if DEBUG else "")
)
if not DEBUG and not DUALSEND_API_CLIENTS:
    raise ImproperlyConfigured("DUALSEND_API_TOKENS must be set when DJANGO_DEBUG is off")
# Each client's own inbound limit, shared by every web process (moving window in Redis):
# one client's flood answers 429 to that client only.
DUALSEND_CLIENT_RATE_LIMIT = parse_client_rate(
    "DUALSEND_CLIENT_RATE_LIMIT", env.str("DUALSEND_CLIENT_RATE_LIMIT", default="50/second")
)
# ?wait holders per web process; past it an order is answered at once as it stands, so
# long polls never take every web thread. 0 answers every ?wait at once.
DUALSEND_MAX_WAITERS = env.int("DUALSEND_MAX_WAITERS", default=8)
if DUALSEND_MAX_WAITERS < 0:
    raise ImproperlyConfigured(
        f"DUALSEND_MAX_WAITERS must not be negative, got {DUALSEND_MAX_WAITERS}"
    )

# A request body is a list of at most 100 items: 64 KiB is generous and bounds memory.
DUALSEND_MAX_BODY_BYTES = env.int("DUALSEND_MAX_BODY_BYTES", default=64 * 1024)
# POST /api/orders/batch carries up to 100 orders: 2 MiB holds 100 orders of 100 items
# each with the longest fields, pretty-printed (about 1.4 MB), and still bounds memory.
DUALSEND_BATCH_MAX_BODY_BYTES = env.int("DUALSEND_BATCH_MAX_BODY_BYTES", default=2 * 1024 * 1024)
# GET /api/orders/<id>?wait=N holds a web thread; never longer than this.
DUALSEND_MAX_WAIT_SECONDS = env.float("DUALSEND_MAX_WAIT_SECONDS", default=30.0)
# A POST whose Idempotency-Key is still being created by another request waits this long
# for it to commit (then replays it), and past it answers 409, retry shortly.
DUALSEND_INTAKE_LOCK_TIMEOUT_SECONDS = env.float(
    "DUALSEND_INTAKE_LOCK_TIMEOUT_SECONDS", default=2.0
)
# --- Health probes (dualsend_app/api/health.py) -------------------------------------------
# GET /readyz waits at most this for each of the database and the broker (checked at once),
# then answers 503 naming the late one: keep the prober's own timeout above it.
DUALSEND_READY_TIMEOUT_SECONDS = SettingReader(env, "DUALSEND").positive(
    float, "READY_TIMEOUT_SECONDS", 1.0
)

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
# mid-call, or its host was cut off) the send may be claimed again, with the same
# idempotency key. Short, so that such a send goes again within the 30 s we promise for
# recovery; safe, because a late answer of the first call finds its claim taken (the
# attempt number fences it) and changes nothing.
DUALSEND_LEASE_MARGIN_SECONDS = env.float("DUALSEND_LEASE_MARGIN_SECONDS", default=5.0)
# No countdown (a retry, a deferral for the breaker or the rate limit) is ever longer than
# this: the Redis broker's visibility_timeout must exceed it (a system check says so).
DUALSEND_MAX_COUNTDOWN_SECONDS = env.float("DUALSEND_MAX_COUNTDOWN_SECONDS", default=300.0)

# The sweeper: re-drives work whose message was lost (broker down at commit, worker
# killed, Redis restarted without persistence). See tasks/sweeper.py. Lost work goes
# again at most one period plus the grace after it was due (a lost in-flight call: one
# period after its lease), so these two bound how long a fault can hold an order.
DUALSEND_SWEEP_EVERY_SECONDS = env.float("DUALSEND_SWEEP_EVERY_SECONDS", default=5.0)
# Work this late past when it was due is taken as lost and sent again (idempotently).
DUALSEND_SWEEP_GRACE_SECONDS = env.float("DUALSEND_SWEEP_GRACE_SECONDS", default=10.0)
# An order not final this long after it was created (or re-driven by an operator) stops:
# its unfinished sends fail, and settle's rules undo what may have taken effect.
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
# Each thread has one message waiting behind the one it runs, so a thread that finishes
# starts its next send at once. With 1, every message came only after the last task's ack
# and a fetch from Redis: in a 1,000-order burst the payment worker's threads sat idle 44%
# of the time (py-spy). `manage.py bench`, throughput against the bare chord's: single
# POSTs 0.63-0.75x with 1 (four runs), 0.71-0.85x with 2 (five runs); batch intake
# 0.74-0.81x, then 0.80-0.92x. Not more than one waiting: a message held here is one that
# another worker process on the same queue cannot run. With acks_late a waiting message is
# unacknowledged like a running one, and given back if the worker dies.
CELERY_WORKER_PREFETCH_MULTIPLIER = 2
# A send spends its time waiting for a partner, not computing: threads, many of them, so a
# plain `celery -A project worker` serves I/O-bound sends at speed. Celery's own default,
# prefork with one process per core, ran 2.2 orders/s here (each process held one send
# for the whole partner call). The GIL caps one process at about one core: run one worker
# process per core to use them all (README, "Running each process by hand").
CELERY_WORKER_POOL = env.str("DUALSEND_WORKER_POOL", default="threads")
CELERY_WORKER_CONCURRENCY = env.int("DUALSEND_WORKER_CONCURRENCY", default=32)
# Not enforced under `--pool threads` (the README's layout): there a task is bounded by
# its network timeouts (partner calls, database, Redis, broker; see "Every wait is bounded"
# in the README). Under prefork they are the backstop.
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 150
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Every Redis wait is bounded (kombu's Redis transport options; the result backend's
# redis_* settings below): a command on a connection whose server vanished without closing
# it (failover, NAT or firewall timeout) raises after CELERY_SOCKET_TIMEOUT instead of
# waiting forever, and a connection idle for CELERY_HEALTH_CHECK_INTERVAL is PINGed before
# use. kombu also drops a worker's BRPOP connection whose reply is overdue by the interval:
# a consumer on a half-open connection recovers within 1 s + 2 x the interval.
_celery_timeouts = SettingReader(env, "CELERY")
_socket_timeout = _celery_timeouts.positive(float, "SOCKET_TIMEOUT", 5.0)
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 2
CELERY_REDIS_SOCKET_TIMEOUT = _socket_timeout
CELERY_REDIS_SOCKET_KEEPALIVE = True
CELERY_REDIS_BACKEND_HEALTH_CHECK_INTERVAL = _celery_timeouts.positive(
    int, "HEALTH_CHECK_INTERVAL", 10
)
# Redis redelivers a message not acknowledged within visibility_timeout. It must be longer
# than the longest countdown a retry can take (a retried task is an ETA message held
# unacknowledged by the worker until it is due), or Redis delivers it a second time.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_connect_timeout": CELERY_REDIS_SOCKET_CONNECT_TIMEOUT,
    "socket_timeout": _socket_timeout,
    "socket_keepalive": True,
    "health_check_interval": CELERY_REDIS_BACKEND_HEALTH_CHECK_INTERVAL,
}
# Storing a result retries 20 times a second apart by default, each try up to the socket
# timeout: minutes of a worker thread on a vanished Redis. Here a blip of 3.5 s is ridden
# out; past it the result is dropped, and the sweeper settles an order whose chord never
# fired.
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {
        "max_retries": 5,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1,
    },
}
if CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ (Redis still holds results and the breaker and limiter state). Without
    # publisher confirms a publish onto a dead connection "succeeds" and the message is
    # gone; with them, a broker that did not take the chord raises, and the order stays
    # pending for the sweeper, with dispatched_at unset.
    # A read or write on a connection whose broker vanished raises after
    # CELERY_SOCKET_TIMEOUT (py-amqp's read_timeout/write_timeout), and heartbeats every
    # 10 s let a worker notice a dead connection within about two of them.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "confirm_publish": True,
        "connect_timeout": 2,
        "read_timeout": _socket_timeout,
        "write_timeout": _socket_timeout,
    }
    CELERY_BROKER_HEARTBEAT = 10
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu's Redis transport with one fix, else a Redis restart kills every worker: see
    # project/redis_transport.py.
    CELERY_BROKER_TRANSPORT = "project.redis_transport:Transport"
# When the broker is down, publishing gives up fast: POST /api/orders still answers 202 and
# the order waits as pending for the sweeper, instead of the request hanging.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BEAT_SCHEDULE = {
    "sweep": {
        "task": "tasks.sweeper.sweep",
        "schedule": DUALSEND_SWEEP_EVERY_SECONDS,
        # Sweeps do not pile up while no worker runs: a late one is dropped.
        "options": {"expires": DUALSEND_SWEEP_EVERY_SECONDS},
    },
}

# --- Flower and task events ---------------------------------------------------------------
# Flower (`celery -A project flower`, README "Flower") builds its task list from task
# events: a plain `celery -A project worker` sends them without -E (received, started,
# retried, succeeded, failed), so a task shows up as soon as a worker takes it. Every task
# of an order carries the order id in its kwargs as events show them
# (dualsend_app/enqueue.py), so searching Flower for an order's id lists them all. Flower's
# own options (basic auth, address, port) are FLOWER_* variables that Flower reads itself;
# project/flower.py sets its defaults.
CELERY_WORKER_SEND_TASK_EVENTS = True
# The task-sent event, from whoever publishes a task (web, sweeper, a worker retrying),
# shows a task while it still waits in its queue. It is one more broker message per task
# published, on the web's path of every order (a fifth of the chord's publishing CPU in
# a micro-benchmark: 2.5 -> 1.9 ms per chord): off unless asked for.
CELERY_TASK_SEND_SENT_EVENT = env.bool("DUALSEND_TASK_SENT_EVENTS", default=False)

# --- Prometheus metrics -------------------------------------------------------------------
# GET /metrics on the web process is the one scrape target of a one-host deployment: every
# process of the host (gunicorn's, each worker and its pool processes) writes its series to
# files in one directory, prometheus_client's multiprocess mode, and /metrics adds them up
# (dualsend_app/metrics.py). prometheus_client reads PROMETHEUS_MULTIPROC_DIR once, when it
# is first imported, and in each of our processes the settings load before anything imports
# it: so the default is exported here. The web process tidies the directory as it starts
# (project/wsgi.py; dualsend_app/metrics_directory.py says why it removes only the files of
# processes that have exited).
PROMETHEUS_MULTIPROC_DIR = env.str(
    "PROMETHEUS_MULTIPROC_DIR", default=str(BASE_DIR / "var" / "prometheus")
)
# Many hosts: a worker started with DUALSEND_METRICS_PORT serves its own series on that port
# (dualsend_app/metrics_worker.py). Its files go to port-<N> under the directory, which it
# alone serves and tidies, so the web's /metrics (which reads only the directory's own
# files) never counts them twice. 0 or unset: no port.
DUALSEND_METRICS_PORT = SettingReader(env, "DUALSEND").not_negative(int, "METRICS_PORT", 0)
if DUALSEND_METRICS_PORT > 65535:
    raise ImproperlyConfigured(
        f"DUALSEND_METRICS_PORT must be a TCP port, got {DUALSEND_METRICS_PORT}"
    )
if DUALSEND_METRICS_PORT and Path(PROMETHEUS_MULTIPROC_DIR).name != f"port-{DUALSEND_METRICS_PORT}":
    # (A child process started by such a worker inherits the port's directory: not nested.)
    PROMETHEUS_MULTIPROC_DIR = str(Path(PROMETHEUS_MULTIPROC_DIR) / f"port-{DUALSEND_METRICS_PORT}")
try:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
except OSError as _error:
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR: cannot create {PROMETHEUS_MULTIPROC_DIR} ({_error.strerror})"
    ) from None
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
# /metrics answers a loopback client (not one a proxy forwarded), or any client that sends
# `Authorization: Bearer <this token>`; unset, loopback only (dualsend_app/metrics_access.py).
DUALSEND_METRICS_TOKEN = env.str("DUALSEND_METRICS_TOKEN", default="")
if any(char.isspace() or not char.isprintable() for char in DUALSEND_METRICS_TOKEN):
    raise ImproperlyConfigured(
        "DUALSEND_METRICS_TOKEN holds white space or a control character; set it without them "
        "(the value is not shown: it is a secret)"
    )
