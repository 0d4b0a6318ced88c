"""A Python worker that runs on every generation of the `avtomatika-worker`
SDK: 1.0b3 (its own HTTP client), 1.0b5 (on `rxon` 1.0b2) and the newest
(on `rxon` 1.0b17, where handlers are "skills"). It reports progress, can be
cancelled over the WebSocket, and answers each kind of result the server
acts on.

Task types:
- `greet`     {"name"} -> {"greeting"}; no name: INVALID_INPUT_ERROR
- `report`    progress 0.25, 0.5, 1.0 a second apart, then success
- `hold`      progress 0.5, then waits two minutes (to be cancelled)
- `permanent` fails with PERMANENT_ERROR
- `transient` fails with TRANSIENT_ERROR
- `custom`    answers the blueprint-defined status `needs_review`
- `render`    progress 0.25, 0.5, 1.0, then `{"analysis_summary"}` (what the
              published example application's client prints at the end)

Configured by the SDK's environment variables (ORCHESTRATOR_URL, WORKER_ID,
WORKER_TOKEN); set WORKER_ENABLE_WEBSOCKETS=true for progress and cancels.
"""

import asyncio
import logging

from avtomatika_worker import Worker

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

worker = Worker(worker_type="python-live")
# The newest SDK registers handlers as skills; earlier ones as tasks.
handler = getattr(worker, "skill", None) or worker.task


async def progress(kwargs, value, message):
    await kwargs["send_progress"](kwargs["task_id"], kwargs["job_id"], value, message)


@handler("greet")
async def greet(params: dict, **kwargs):
    name = params.get("name")
    if not isinstance(name, str) or not name.strip():
        return {"status": "failure", "error": {"code": "INVALID_INPUT_ERROR", "message": "name is required"}}
    return {"status": "success", "data": {"greeting": f"Hello, {name}!"}}


@handler("report")
async def report(params: dict, **kwargs):
    for value in (0.25, 0.5, 1.0):
        await progress(kwargs, value, f"{int(value * 100)} %")
        await asyncio.sleep(1.0)
    return {"status": "success", "data": {"reported": 3}}


@handler("hold")
async def hold(params: dict, **kwargs):
    await progress(kwargs, 0.5, "holding")
    await asyncio.sleep(120)
    return {"status": "success", "data": {"held": True}}


@handler("permanent")
async def permanent(params: dict, **kwargs):
    return {"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": "will never work"}}


@handler("transient")
async def transient(params: dict, **kwargs):
    return {"status": "failure", "error": {"code": "TRANSIENT_ERROR", "message": "try again"}}


@handler("render")
async def render(params: dict, **kwargs):
    for value in (0.25, 0.5, 1.0):
        await progress(kwargs, value, f"rendering: {int(value * 100)} %")
        await asyncio.sleep(0.5)
    return {"status": "success", "data": {"analysis_summary": "rendered and analysed"}}


@handler("custom")
async def custom(params: dict, **kwargs):
    return {"status": "needs_review", "data": {"reason": "looks odd"}}


if __name__ == "__main__":
    worker.run()
