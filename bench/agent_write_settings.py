"""Settings for bench/agent_write.py only: the product settings plus a bench-only urlconf."""

from crm_hub.settings import *  # noqa: F403

ROOT_URLCONF = "agent_write_urls"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
