"""A Python worker for `render` tasks (the `routed` test blueprint, or any
blueprint that routes by resources and cost), built on the unmodified
`avtomatika-worker` SDK. It answers with its own id, so one can see where
routing sent each task.

Its resources and costs come from the SDK's own environment variables, e.g.:

    WORKER_ID=gpu-1 GPU_MODEL="NVIDIA RTX 4090" GPU_VRAM_GB=24 CPU_CORES=16 \\
    COST_PER_SKILL='{"render": 2.0}' python render_worker.py

`RENDER_FAILS=1` makes every task fail with a PERMANENT_ERROR (a broken node).
"""

import logging
import os

from avtomatika_worker import Worker

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

worker = Worker(worker_type="python-renderer")
WORKER_ID = os.environ.get("WORKER_ID", "")


@worker.task("render")
async def render(params: dict, **kwargs):
    if os.environ.get("RENDER_FAILS") == "1":
        return {"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": f"{WORKER_ID} is broken"}}
    return {"status": "success", "data": {"rendered_by": WORKER_ID}}


if __name__ == "__main__":
    worker.run()
