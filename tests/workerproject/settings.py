"""Settings for the ``runworker`` process the worker tests start."""

import json
import os

from tests.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.workerproject.app.application"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "tests.workerproject.app.SeededLayer",
        "CONFIG": {"seed": json.loads(os.environ.get("WORKER_TEST_SEED", "[]"))},
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.channels.worker": {"handlers": ["stderr"], "level": "INFO"}},
}
