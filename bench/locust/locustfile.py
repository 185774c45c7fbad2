"""The SageMaker blog's three traffic patterns as a Locust test, for users
who already load-test with Locust. `mme bench` measures the same patterns
with less overhead; see ../../BENCHMARKS.md.

Settings come from the environment:
  MME_PATTERN  even (uniform), hot (90% to model 0) or few-hot (90% to
               models 0-9); the rest of the traffic is uniform over the
               other models. Default: even.
  MME_MODELS   how many models: <prefix>0 ... <prefix>N-1. Default: 1000.
  MME_PREFIX   the models' name prefix. Default: sklearn-.
  MME_BODY     the JSON request body. Default: [[0.5]].

  MME_PATTERN=hot locust -f bench/locust/locustfile.py --host http://127.0.0.1:8080 \
      --headless -u 64 -r 64 -t 60s
"""

import os
import random

from locust import FastHttpUser, task

PATTERN = os.environ.get("MME_PATTERN", "even")
MODELS = int(os.environ.get("MME_MODELS", "1000"))
PREFIX = os.environ.get("MME_PREFIX", "sklearn-")
BODY = os.environ.get("MME_BODY", "[[0.5]]")
HOT_SHARE = 0.9
HOT_MODELS = {"even": 0, "hot": 1, "few-hot": 10}

if PATTERN not in HOT_MODELS:
    raise SystemExit(f"MME_PATTERN={PATTERN!r}: use even, hot or few-hot")


def pick_model():
    """The index of the next model, drawn with the pattern's weights."""
    hot = min(HOT_MODELS[PATTERN], MODELS)
    if hot in (0, MODELS):
        return random.randrange(MODELS)
    if random.random() < HOT_SHARE:
        return random.randrange(hot)
    return random.randrange(hot, MODELS)


class ModelUser(FastHttpUser):
    """Sends predictions back to back, as `mme bench` does in closed loop."""

    @task
    def predict(self):
        model = f"{PREFIX}{pick_model()}"
        self.client.post(
            f"/predictions/{model}",
            data=BODY,
            headers={"content-type": "application/json"},
            name=f"/predictions ({PATTERN})",
        )
