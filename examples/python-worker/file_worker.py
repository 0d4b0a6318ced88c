"""A Python worker for the `uppercase` blueprint, built on the unmodified
`avtomatika-worker` SDK and its S3 payload offloading.

It handles `uppercase_file` tasks: `{"input": "s3://bucket/jobs/<job>/input.txt"}`.
The SDK downloads every `s3://` URI in the params before the handler runs,
so `params["input"]` is a local path here; the handler writes the upper-cased
text to a file in its task folder and returns that path, which the SDK
uploads to `S3_DEFAULT_BUCKET`, answering with the file's `s3://` URI:
`{"output": "s3://bucket/<task id>-upper.txt", "bytes": <size>}`.

Configured only through the SDK's environment variables, the S3 ones
included (the same S3 the server uses):

    ORCHESTRATOR_URL=http://localhost:8080
    WORKER_ID=python-uppercase-1
    WORKER_TOKEN=secure-worker-token
    S3_ENDPOINT_URL=http://127.0.0.1:9000
    S3_ACCESS_KEY=...
    S3_SECRET_KEY=...
    S3_DEFAULT_BUCKET=avtomatika-payloads
    TASK_FILES_DIR=/tmp/payloads
"""

import logging
import os

import obstore
from avtomatika_worker import Worker
from avtomatika_worker.task_files import TaskFiles

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

# avtomatika-worker 1.0b3 `await`s `obstore.get(...)` and `obstore.put(...)`,
# which are synchronous in every obstore release (the awaitable ones are
# `get_async` and `put_async`), so its S3 download and upload fail with
# "object builtins.GetResult can't be used in 'await' expression". Pointing
# the names the SDK calls at the async functions makes its own S3 code work
# unchanged.
obstore.get = obstore.get_async
obstore.put = obstore.put_async

worker = Worker(worker_type="python-uppercase")


@worker.task("uppercase_file")
async def uppercase_file(params: dict, files: TaskFiles, task_id: str, **kwargs):
    source = params.get("input")
    if not isinstance(source, str) or not os.path.isfile(source):
        return {
            "status": "failure",
            "error": {"code": "INVALID_INPUT_ERROR", "message": f"input is not a downloaded file: {source!r}"},
        }
    with open(source, encoding="utf-8") as f:
        text = f.read()
    # The file name becomes the object's key at the top of the bucket: make
    # it unique per task.
    output = await files.path_to(f"{task_id}-upper.txt")
    with open(output, "w", encoding="utf-8") as f:
        f.write(text.upper())
    return {"status": "success", "data": {"output": output, "bytes": len(text.encode())}}


if __name__ == "__main__":
    worker.run()
