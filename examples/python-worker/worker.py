"""A Python worker for the `hello` blueprint, built on the unmodified
`avtomatika-worker` SDK.

It handles `greet` tasks: `{"name": "Ada"}` -> `{"greeting": "Hello, Ada!"}`.
A missing or empty name is rejected through the SDK's parameter validation,
which answers with an `INVALID_INPUT_ERROR` failure (the job ends `failed`).

Configured only through the SDK's environment variables, e.g.:

    ORCHESTRATOR_URL=http://localhost:8080
    WORKER_ID=python-greeter-1
    WORKER_TOKEN=secure-worker-token
"""

import logging
from dataclasses import dataclass

from avtomatika_worker import Worker

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

worker = Worker(worker_type="python-greeter")


@dataclass
class GreetParams:
    name: str | None = None

    def __post_init__(self):
        # A ValueError here is reported by the SDK as INVALID_INPUT_ERROR.
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("name is required")


@worker.task("greet")
async def greet(params: GreetParams, **kwargs):
    return {"status": "success", "data": {"greeting": f"Hello, {params.name}!"}}


if __name__ == "__main__":
    worker.run()
