"""`files-probe-py`: the Rust testing plugin `files-probe` in Python, over the
SDK's `files`. Runs the `task-files` operations listed in its initial data and
records what each answered: `POST /api/v1/jobs/files-probe-py {"ops": [{"op":
"write", "name": "a.txt", "text": "hi"}, {"op": "read", "name": "a.txt"}, ...]}`
(ops `list`, `read`, `write` (`text`, or `size` bytes of `x`), `delete`,
`uri`, `adopt` (`source`, `name`)) ends `finished` with `{"results": [{"ok":
...} | {"error": "<kind>: <message>"}, ...]}`. With `"fail_on_error": true` the
first error fails the handler instead.
"""

from typing import Any

from avtomatika import Describe, FileError, FileInfo, Job, Next, State, export, files


def _info(info: FileInfo) -> Any:
    return {"name": info.name, "size": info.size, "uri": info.uri}


def _run(op: Any) -> Any:
    name = op.get("name", "")
    kind = op.get("op")
    if kind == "list":
        return [_info(info) for info in files.list()]
    if kind == "read":
        return files.read_text(name)
    if kind == "write":
        size = op.get("size")
        return files.write(name, "x" * size if isinstance(size, int) else op.get("text", ""))
    if kind == "delete":
        return files.delete(name)
    if kind == "uri":
        return files.uri(name)
    if kind == "adopt":
        return _info(files.adopt(op.get("source", ""), name))
    return f"unknown op {kind!r}"


def describe() -> Describe:
    return (
        Describe("files-probe-py")
        .endpoint("v1", "/jobs/files-probe-py")
        .state(State.start("start").to("finished"))
        .state(State.finished("finished"))
    )


def handle(job: Job) -> Next:
    fail_on_error = job.initial_data.get("fail_on_error") is True
    results = []
    for op in job.initial_data.get("ops", []):
        try:
            results.append({"ok": _run(op)})
        except FileError as error:
            if fail_on_error:
                raise
            results.append({"error": str(error)})
    return Next.go_to("finished").with_history({"results": results})


Handler = export(describe, handle)
