"""CRM Hub settings: one module, every deployment knob read from the environment.

Defaults are embedded (SQLite file, a Celery broker on the local filesystem) so a
new user runs the project with one command; PostgreSQL and Redis take over when
``DATABASE_URL`` and ``CELERY_BROKER_URL`` name them.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CRM_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and not env_bool("CRM_ALLOW_INSECURE_KEY", False):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (50+ random characters) or DEBUG=1 for development."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production-0123456789abcdef"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "import_export",
    "crm_hub",
    "contacts",
    "conversations",
    "forms_app",
    "automations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "crm_hub.api.limits.RequestSizeLimitMiddleware",
    "crm_hub.api.idempotency.IdempotencyMiddleware",
]

ROOT_URLCONF = "crm_hub.urls"
WSGI_APPLICATION = "crm_hub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -----------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("CONN_MAX_AGE", 60),
            conn_health_checks=True,
        )
    }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "crm_hub.sqlite3",
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions + WAL: concurrent writers queue instead of failing
    # with "database is locked" (Django 5.1+).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (throttling, idempotency locks); Redis when CACHE_URL names it -----
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL.startswith("redis"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- Security (on by default when DEBUG is off; `check --deploy` stays quiet) ----
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
if env_bool("CRM_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Celery -------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_DIR = Path(os.environ.get("CELERY_BROKER_DIR", VAR_DIR / "celery-broker"))
if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_DIR.mkdir(parents=True, exist_ok=True)
    (CELERY_BROKER_DIR / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR),
        "data_folder_out": str(CELERY_BROKER_DIR),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE: dict = {}

# Django's own CSRF refusal page is bare; ours has the app's layout and says what to do.
CSRF_FAILURE_VIEW = "contacts.views.csrf_failure"

# --- REST framework -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["crm_hub.api.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "crm_hub.api.negotiation.JsonOnlyNegotiation",
    # JSON only: the endpoints take nested objects (custom, contact, task) that a form body
    # cannot carry, and DRF read them from one as empty, silently. File uploads name their own parser.
    "DEFAULT_PARSER_CLASSES": ["crm_hub.api.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["crm_hub.api.auth.AgentTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["crm_hub.api.permissions.HasAgentScopes"],
    "DEFAULT_THROTTLE_CLASSES": ["crm_hub.api.throttling.AgentRateThrottle"],
    "EXCEPTION_HANDLER": "crm_hub.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CRM Hub agent API",
    "DESCRIPTION": "The write path from a conversation to a clean CRM record.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "crm_hub.api.schema.document_idempotency_key",
        "crm_hub.api.schema.nullable_references",
        "crm_hub.api.schema.describe_strict_inputs",
        "crm_hub.api.schema.bound_integer_parameters",
        "crm_hub.api.schema.document_conversation_enums",
    ],
}

# --- CRM Hub -------------------------------------------------------------------------
# The agent write path sends its hottest statements as prepared statements on PostgreSQL
# (crm_hub/rawsql.py); turn off behind a pooler that cannot keep them.
CRM_PREPARED_STATEMENTS = env_bool("CRM_PREPARED_STATEMENTS", True)
CRM_DEFAULT_PHONE_REGION = os.environ.get("CRM_DEFAULT_PHONE_REGION", "US").strip().upper()


def _check_phone_region(region: str) -> None:
    # A code phonenumbers does not know ("UK" for GB) made every national number "not a valid phone".
    import phonenumbers

    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ImproperlyConfigured(
            f"CRM_DEFAULT_PHONE_REGION must be an ISO 3166 country code phonenumbers knows (US, GB, BR, DE, ...), "
            f"got {region!r}" + (" (the United Kingdom is GB)" if region == "UK" else "")
        )


_check_phone_region(CRM_DEFAULT_PHONE_REGION)
CRM_MAX_UPLOAD_BYTES = env_int("CRM_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
CRM_ALLOWED_UPLOAD_TYPES = env_list(
    "CRM_ALLOWED_UPLOAD_TYPES",
    "application/pdf,image/png,image/jpeg,image/gif,image/webp,text/plain,text/csv,"
    "application/msword,application/vnd.openxmlformats-officedocument.wordprocessingml.document,"
    "application/vnd.ms-excel,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)
# Sales users see only contacts they own when this is on.
CRM_SALES_SEE_OWN_ONLY = env_bool("CRM_SALES_SEE_OWN_ONLY", False)
# Hosts/networks outbound webhooks may reach despite the SSRF guard (tests, local dev).
CRM_WEBHOOK_ALLOWED_HOSTS = env_list("CRM_WEBHOOK_ALLOWED_HOSTS")
CRM_LLM_BASE_URL = os.environ.get("CRM_LLM_BASE_URL", "")
CRM_LLM_API_KEY = os.environ.get("CRM_LLM_API_KEY", "")
CRM_LLM_MODEL = os.environ.get("CRM_LLM_MODEL", "")
CRM_LLM_TIMEOUT_SECONDS = float(os.environ.get("CRM_LLM_TIMEOUT_SECONDS", "20"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # Django's own console handler (DEBUG) plus the root's printed each of its lines twice.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# --- Forms (issue 8): public form pages --------------------------------------------
FORMS_MAX_TEXT_CHARS = env_int("FORMS_MAX_TEXT_CHARS", 1000)
FORMS_MAX_LONG_TEXT_CHARS = env_int("FORMS_MAX_LONG_TEXT_CHARS", 10000)
FORMS_MAX_FILE_BYTES = env_int("FORMS_MAX_FILE_BYTES", 5 * 1024 * 1024)
# POSTs per visitor IP per window, across all forms (honeypot hits and invalid posts count too).
FORMS_RATE_LIMIT = env_int("FORMS_RATE_LIMIT", 10)
FORMS_RATE_LIMIT_WINDOW = env_int("FORMS_RATE_LIMIT_WINDOW", 600)
FORMS_TOKEN_MAX_AGE = env_int("FORMS_TOKEN_MAX_AGE", 2 * 24 * 3600)
FORMS_TRUST_X_FORWARDED_FOR = env_bool("FORMS_TRUST_X_FORWARDED_FOR", False)

# --- Automations and outbound webhooks (automations/) ------------------------------
# Rules set off by rules (a tag a rule adds firing "tag added" rules) stop at this depth.
CRM_AUTOMATION_MAX_DEPTH = env_int("CRM_AUTOMATION_MAX_DEPTH", 3)
CRM_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("CRM_WEBHOOK_TIMEOUT_SECONDS", "10"))
CRM_WEBHOOK_BATCH_SIZE = env_int("CRM_WEBHOOK_BATCH_SIZE", 50)
# POSTs of one batch run on this many threads, so one slow receiver does not stall the rest.
CRM_WEBHOOK_SEND_THREADS = env_int("CRM_WEBHOOK_SEND_THREADS", 8)
# How many delivery tasks a commit queues at most (match the worker's concurrency).
CRM_WEBHOOK_PARALLEL_TASKS = env_int("CRM_WEBHOOK_PARALLEL_TASKS", 2)
# A claimed row is due again after this long if its worker died mid-batch (at least the time
# a batch of timing-out receivers takes).
CRM_WEBHOOK_LEASE_SECONDS = env_int("CRM_WEBHOOK_LEASE_SECONDS", 120)
CRM_WEBHOOK_TASK_SECONDS = env_int("CRM_WEBHOOK_TASK_SECONDS", 60)
# Retries: doubling from BASE up to MAX between tries, with jitter, for RETRY_FOR seconds.
CRM_WEBHOOK_RETRY_BASE_SECONDS = float(os.environ.get("CRM_WEBHOOK_RETRY_BASE_SECONDS", "30"))
CRM_WEBHOOK_RETRY_MAX_SECONDS = float(os.environ.get("CRM_WEBHOOK_RETRY_MAX_SECONDS", str(3 * 3600)))
CRM_WEBHOOK_RETRY_FOR_SECONDS = env_int("CRM_WEBHOOK_RETRY_FOR_SECONDS", 26 * 3600)
CRM_WEBHOOK_DISABLE_AFTER_SECONDS = env_int("CRM_WEBHOOK_DISABLE_AFTER_SECONDS", 24 * 3600)
CRM_WEBHOOK_ROTATION_SECONDS = env_int("CRM_WEBHOOK_ROTATION_SECONDS", 24 * 3600)
CRM_WEBHOOK_QUEUE_ON_COMMIT = env_bool("CRM_WEBHOOK_QUEUE_ON_COMMIT", True)
CRM_WEBHOOK_POLL_SECONDS = float(os.environ.get("CRM_WEBHOOK_POLL_SECONDS", "15"))
CELERY_BEAT_SCHEDULE["automations-deliver-due-webhooks"] = {
    "task": "automations.deliver_due_webhooks",
    "schedule": CRM_WEBHOOK_POLL_SECONDS,
    # A run that waited longer than one interval in the queue is superseded by the next.
    "options": {"expires": CRM_WEBHOOK_POLL_SECONDS},
}
CRM_WEBHOOK_KEEP_DAYS = env_int("CRM_WEBHOOK_KEEP_DAYS", 30)
CELERY_BEAT_SCHEDULE["automations-prune-webhook-log"] = {
    "task": "automations.prune_webhook_log",
    "schedule": 24 * 3600.0,
}

# --- Agent API (issue 3) -------------------------------------------------------------
# Stored Idempotency-Key responses are kept this long; purge_idempotency_keys runs hourly.
CRM_IDEMPOTENCY_TTL_HOURS = max(env_int("CRM_IDEMPOTENCY_TTL_HOURS", 24), 24)
# How long a duplicate waits for the first call to finish before answering 409.
CRM_IDEMPOTENCY_WAIT_SECONDS = float(os.environ.get("CRM_IDEMPOTENCY_WAIT_SECONDS", "2"))
# An in-flight key older than this belonged to a request that died; a retry may take it over.
CRM_IDEMPOTENCY_IN_FLIGHT_SECONDS = env_int("CRM_IDEMPOTENCY_IN_FLIGHT_SECONDS", 60)
# POST access/check, per agent: tight, so the check cannot walk the contact list.
CRM_ACCESS_CHECK_RATE = os.environ.get("CRM_ACCESS_CHECK_RATE", "30/min")
CELERY_BEAT_SCHEDULE["purge-idempotency-keys"] = {"task": "crm_hub.purge_idempotency_keys", "schedule": 3600.0}
SPECTACULAR_SETTINGS.update(
    {
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
        "COMPONENT_SPLIT_REQUEST": True,
    }
)

# --- Contact import and export (issue 7) -----------------------------------------------
# Files with more rows than this run on Celery (anything over 10,000 always does).
CRM_IMPORT_SYNC_MAX_ROWS = env_int("CRM_IMPORT_SYNC_MAX_ROWS", 2000)
CRM_IMPORT_BATCH_SIZE = env_int("CRM_IMPORT_BATCH_SIZE", 5000)
# Processes that parse phones for big files (phonenumbers is the import's floor).
CRM_IMPORT_WORKERS = env_int("CRM_IMPORT_WORKERS", os.cpu_count() or 1)
# A running import whose worker wrote no progress for this long has stopped (killed): it is
# failed with where it stopped, so it can be reverted; a batch takes seconds.
CRM_IMPORT_STALE_AFTER = env_int("CRM_IMPORT_STALE_AFTER", 300)
CELERY_BEAT_SCHEDULE["imports-recover-stale"] = {"task": "contacts.importing.recover_stale_imports", "schedule": 60.0}
# Stock behaviour (drops a leading "="); our export resource also neutralizes + - @ tab CR.
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = True

# --- Staff sign-in throttling (crm_hub/login_throttle.py) ------------------------------
# Failed sign-ins (web UI and admin alike) per username and per client IP within the window;
# at the limit that username or IP is refused for the lockout, right password or not. 0 = no limit.
CRM_LOGIN_MAX_FAILURES_PER_USER = env_int("CRM_LOGIN_MAX_FAILURES_PER_USER", 5)
CRM_LOGIN_MAX_FAILURES_PER_IP = env_int("CRM_LOGIN_MAX_FAILURES_PER_IP", 20)
CRM_LOGIN_FAILURE_WINDOW_SECONDS = max(1, env_int("CRM_LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60))
CRM_LOGIN_LOCKOUT_SECONDS = max(1, env_int("CRM_LOGIN_LOCKOUT_SECONDS", CRM_LOGIN_FAILURE_WINDOW_SECONDS))
# Reverse proxies of your own in front of the app that append to X-Forwarded-For: the client IP
# is the N-th entry from the right. 0 = REMOTE_ADDR (X-Forwarded-For ignored). Defaults to 1 when
# CRM_BEHIND_TLS_PROXY or FORMS_TRUST_X_FORWARDED_FOR says there is such a proxy, because behind
# one every client would otherwise share the proxy's address (and its failure budget).
CRM_LOGIN_TRUSTED_PROXIES = env_int(
    "CRM_LOGIN_TRUSTED_PROXIES",
    1 if env_bool("CRM_BEHIND_TLS_PROXY", False) or FORMS_TRUST_X_FORWARDED_FOR else 0,
)
