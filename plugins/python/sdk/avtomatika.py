"""Write Avtomatika blueprints in Python.

A blueprint is a job state machine compiled to a WebAssembly component with
componentize-py. Write a `describe` and a `handle` function and export them
as `Handler` from the app module (componentize-py looks the class up by the
name of the exported WIT interface, `handler`)::

    from avtomatika import Describe, Job, Next, State, Task, export

    def describe() -> Describe:
        return (
            Describe("hello")
            .endpoint("v1", "/jobs/hello")
            .state(State.start("start").to("finished", "failed"))
            .state(State.finished("finished"))
            .state(State.failed("failed"))
        )

    def handle(job: Job) -> Next:
        if job.state == "start":
            return Next.dispatch(
                Task("greet", {"name": job.initial_data.get("name")})
                .on("success", "finished")
                .on("failure", "failed")
            )
        raise ValueError(f"no handler for state {job.state}")

    Handler = export(describe, handle)

What a handler can answer (every target state must be among the current
state's transitions, `State.to`, or the host refuses the answer and retries
the handler); `.with_history({...})` adds a JSON object to the job's state
history with any of them::

    Next.go_to("publish").with_history({"length": 42})
    Next.dispatch(Task("greet", {"name": "Ada"}).on("success", "finished").on("failure", "failed"))
    Next.parallel("collect", [Branch("resize", {"size": s}) for s in ("small", "large")])
    Next.await_approval(Approval("Publish?").on("approved", "publish").on("rejected", "reject"))
    Next.run_blueprint(ChildRun("payment", {"amount": 10}).on("finished", "ship").on("failed", "refund"))
    Next.fail("the document is empty")

A handler that raises any exception answers the WIT `err` (a handler error,
retried by the host and, when retries run out, quarantining the job with the
message); `HandlerError("text")` gives exactly "text", any other exception
"<Type>: <message> (at <file>:<line>)".

Handlers may also keep small state shared across jobs in a `Store`, read and
write the job's files in S3 with `files` (`files.write("a.txt", "hi")`,
`files.read_text("a.txt")`, `files.uri(...)` for a worker), and write to the
host's log with `log`.

Calls may share a live instance (the host keeps a few per blueprint unless
it is configured for a fresh one per call), so module globals may or may not
survive to the next call, even one for another job or client. Never rely on
them: carry state in the job's history or a `Store`. The WIT contract behind this module
is `wit/` at the repository root (`avtomatika:blueprint@1.1.0`).
"""

import functools
import json
import traceback
from typing import Any, Callable, Iterable, List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import data_store
from wit_world.imports import log as wit_log
from wit_world.imports import task_files
from wit_world.imports import types as wit

__all__ = [
    "Approval",
    "Branch",
    "ChildRun",
    "Client",
    "Describe",
    "HandlerError",
    "Job",
    "Next",
    "State",
    "FileError",
    "FileInfo",
    "Store",
    "StoreError",
    "files",
    "Task",
    "export",
    "log",
]


def _dump(value: Any) -> str:
    # Compact, and never NaN or Infinity, which are not JSON and which the
    # host would refuse.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _pairs(pairs: List[Tuple[str, str]]) -> List[wit.Transition]:
    return [wit.Transition(status=status, state=state) for status, state in pairs]


class State:
    """One state and the states it may lead to."""

    def __init__(self, name: str) -> None:
        """An intermediate state whose handler runs when a job enters it."""
        self._name = name
        self._start = False
        self._end: Optional[wit.TerminalStatus] = None
        self._transitions: List[str] = []

    @classmethod
    def start(cls, name: str) -> "State":
        """The state every job begins in (exactly one per blueprint)."""
        state = cls(name)
        state._start = True
        return state

    @classmethod
    def finished(cls, name: str) -> "State":
        """An end state: entering it ends the job with status `finished`."""
        state = cls(name)
        state._end = wit.TerminalStatus.FINISHED
        return state

    @classmethod
    def failed(cls, name: str) -> "State":
        """An end state: entering it ends the job with status `failed`."""
        state = cls(name)
        state._end = wit.TerminalStatus.FAILED
        return state

    def to(self, *states: str) -> "State":
        """The states this state's handler may move the job to: every target
        of `go_to`, of a task's, approval's or child run's transitions, and a
        parallel step's aggregator state."""
        self._transitions.extend(states)
        return self

    def _into_wit(self) -> wit.StateInfo:
        return wit.StateInfo(self._name, self._start, self._end, list(self._transitions))


class Describe:
    """A blueprint's name, endpoint and states."""

    def __init__(self, name: str) -> None:
        """A blueprint called `name` with no endpoint and no states yet
        (without an endpoint it runs only as a child or on a schedule)."""
        self._name = name
        self._version: Optional[str] = None
        self._endpoint: Optional[str] = None
        self._states: List[State] = []

    def endpoint(self, version: str, endpoint: str) -> "Describe":
        """Jobs are created with `POST /api/{version}{endpoint}`."""
        self._version = version
        self._endpoint = endpoint
        return self

    def state(self, state: State) -> "Describe":
        """Adds a state."""
        self._states.append(state)
        return self

    def _into_wit(self) -> wit.BlueprintInfo:
        return wit.BlueprintInfo(self._name, self._version, self._endpoint, [s._into_wit() for s in self._states])


# The WIT `dispatch-strategy` enum by name (the WIT `routing` record documents them).
STRATEGIES = ("default", "round-robin", "least-connections", "cheapest", "best-value")


class _Routed:
    """Which worker may take a task and how long it may take (the WIT `routing` record)."""

    _strategy = "default"
    _requirements: Any = None
    _max_cost: Optional[float] = None
    _timeout_seconds: Optional[int] = None

    def strategy(self, strategy: str):
        """How the host chooses among the workers that qualify: one of `STRATEGIES`
        (underscores work too; default: warm cache first, then the cheapest)."""
        name = strategy.replace("_", "-")
        if name not in STRATEGIES:
            raise ValueError(f"unknown dispatch strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
        self._strategy = name
        return self

    def requires(self, requirements: Any):
        """What the worker must have, e.g. `{"gpu_info": {"vram_gb": 16}}`."""
        self._requirements = requirements
        return self

    def max_cost(self, max_cost: float):
        """Only workers whose cost for the task is at most `max_cost`."""
        self._max_cost = float(max_cost)
        return self

    def timeout_seconds(self, seconds: int):
        """Seconds the worker has for its result (overrides `WORKER_TIMEOUT_SECONDS`)."""
        self._timeout_seconds = int(seconds)
        return self

    def _routing(self) -> "wit.Routing":
        strategy = getattr(wit.DispatchStrategy, self._strategy.replace("-", "_").upper())
        requirements = None if self._requirements is None else _dump(self._requirements)
        return wit.Routing(strategy, requirements, self._max_cost, self._timeout_seconds)


class Task(_Routed):
    """A task for a remote worker."""

    def __init__(self, task_type: str, params: Any) -> None:
        """A task of `task_type` with `params` (a JSON object) and no transitions yet."""
        self.task_type = task_type
        self.params = params
        self.transitions: List[Tuple[str, str]] = []
        self.priority_value = 0

    def on(self, status: str, state: str) -> "Task":
        """When the worker answers with `status`, move the job to `state`."""
        self.transitions.append((status, state))
        return self

    def priority(self, priority: int) -> "Task":
        """Higher runs sooner among one worker's queued tasks (default 0)."""
        self.priority_value = priority
        return self


class Branch(_Routed):
    """One branch of `Next.parallel`: a task without transitions."""

    def __init__(self, task_type: str, params: Any, priority: int = 0) -> None:
        self.task_type = task_type
        self.params = params
        self.priority = priority


class Approval:
    """A question for a person (`Next.await_approval`) and where each decision leads."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.transitions: List[Tuple[str, str]] = []

    def on(self, decision: str, state: str) -> "Approval":
        """When the person decides `decision`, move the job to `state`."""
        self.transitions.append((decision, state))
        return self


class ChildRun:
    """A blueprint to run as a child job (`Next.run_blueprint`) and where each ending leads."""

    def __init__(self, blueprint: str, initial_data: Any) -> None:
        self.blueprint = blueprint
        self.initial_data = initial_data
        self.transitions: List[Tuple[str, str]] = []

    def on(self, status: str, state: str) -> "ChildRun":
        """When the child ends with `status` (`finished`, `failed`, `cancelled`
        or `quarantined`), move the parent to `state`."""
        self.transitions.append((status, state))
        return self


class Next:
    """A handler's answer: one action and an optional history update.
    Build it with the class methods."""

    def __init__(self, action: wit.Action) -> None:
        self._action = action
        self._history: Any = None

    @classmethod
    def go_to(cls, state: str) -> "Next":
        """Move the job to `state` (an end state ends it)."""
        return cls(wit.Action_GoTo(state))

    @classmethod
    def dispatch(cls, task: Task) -> "Next":
        """Hand `task` to a worker and wait for its result."""
        return cls(
            wit.Action_DispatchTask(
                wit.Task(
                    task.task_type, _dump(task.params), _pairs(task.transitions), task.priority_value, task._routing()
                )
            )
        )

    @classmethod
    def parallel(cls, aggregate_into: str, branches: Iterable[Branch]) -> "Next":
        """Hand every branch to a worker at once; when each has a result, move
        to `aggregate_into`, whose handler reads them in `job.aggregation_results`."""
        wit_branches = [wit.Branch(b.task_type, _dump(b.params), b.priority, b._routing()) for b in branches]
        return cls(wit.Action_DispatchParallel(wit.Parallel(wit_branches, aggregate_into)))

    @classmethod
    def await_approval(cls, approval: Approval) -> "Next":
        """Wait until a person decides (at `job.approval_path`)."""
        return cls(wit.Action_AwaitHumanApproval(wit.Approval(approval.message, _pairs(approval.transitions))))

    @classmethod
    def run_blueprint(cls, child: ChildRun) -> "Next":
        """Run `child` and wait for it to end; the next handler reads it in `job.child_result`."""
        return cls(
            wit.Action_RunBlueprint(
                wit.ChildRun(child.blueprint, _dump(child.initial_data), _pairs(child.transitions))
            )
        )

    @classmethod
    def fail(cls, message: str) -> "Next":
        """End the job as `failed` with `message`."""
        return cls(wit.Action_Fail(message))

    def with_history(self, update: Any) -> "Next":
        """Also merge `update` (a JSON object) into the job's state history."""
        self._history = update
        return self

    def _into_wit(self) -> wit.Outcome:
        return wit.Outcome(self._action, None if self._history is None else _dump(self._history))


class Client:
    """Who created the job: `name`, `plan` (or None) and `params` (a dict)."""

    def __init__(self, name: str, plan: Optional[str], params: Any) -> None:
        self.name = name
        self.plan = plan
        self.params = params


class Job:
    """The job whose current state's handler is running, its JSON documents parsed.

    Attributes: `id`, `blueprint`, `state` (the current state), `initial_data`
    and `history` (dicts), `client`, `aggregation_results` and `child_result`
    (set only in an aggregator's or a child run's next handler), `webhook_url`.
    """

    def __init__(self, context: wit.JobContext) -> None:
        self._context = context
        self.id = context.job_id
        self.blueprint = context.blueprint
        self.state = context.current_state
        self.webhook_url = context.webhook_url

    # The JSON documents are parsed on first read: parsing costs the
    # interpreter microseconds each, and most handlers read one or two.

    @functools.cached_property
    def initial_data(self) -> Any:
        return json.loads(self._context.initial_data)

    @functools.cached_property
    def history(self) -> Any:
        return json.loads(self._context.state_history)

    @functools.cached_property
    def client(self) -> Client:
        client = self._context.client
        return Client(client.name, client.plan, json.loads(client.params))

    @functools.cached_property
    def aggregation_results(self) -> Any:
        return _loads_optional(self._context.aggregation_results)

    @functools.cached_property
    def child_result(self) -> Any:
        return _loads_optional(self._context.child_result)

    @property
    def approval_path(self) -> str:
        """Where a person decides this job while it waits in `Next.await_approval`."""
        return f"/_public/webhooks/approval/{self.id}"


def _loads_optional(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


class HandlerError(Exception):
    """Raise it to fail the handler call with exactly this message."""


def _error_text(error: Exception) -> str:
    if isinstance(error, HandlerError):
        return str(error)
    text = f"{type(error).__name__}: {error}"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return text


def export(describe: Callable[[], Describe], handle: Callable[[Job], Next]) -> type:
    """The class componentize-py exports as the `handler` interface; bind it to
    the name `Handler` in the app module."""

    class Handler(exports.Handler):
        def describe(self) -> wit.BlueprintInfo:
            return describe()._into_wit()

        def handle(self, context: wit.JobContext) -> wit.Outcome:
            # componentize-py turns a raised `Err` into the WIT `err` and any
            # other exception into a trap, which would hide the message behind
            # "plugin trapped"; so every exception becomes an `Err`.
            try:
                answer = handle(Job(context))
                if not isinstance(answer, Next):
                    raise TypeError(f"handle must return a Next, not {type(answer).__name__}")
                return answer._into_wit()
            except Exception as error:
                raise Err(_error_text(error)) from None

    return Handler


class StoreError(Exception):
    """A store operation failed: `kind` is `unavailable` or `invalid`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _store_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Err as error:
        kind = "unavailable" if isinstance(error.value, data_store.StoreError_Unavailable) else "invalid"
        raise StoreError(kind, error.value.value) from None


class Store:
    """A named key-value store shared by every job of the blueprint; values are JSON."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get(self, key: str) -> Any:
        """The value under `key`, or None when there is none."""
        text = _store_call(lambda: data_store.get(self.name, key))
        return None if text is None else json.loads(text)

    def set(self, key: str, value: Any) -> None:
        """Sets `key` to `value`."""
        _store_call(lambda: data_store.set(self.name, key, _dump(value)))

    def delete(self, key: str) -> bool:
        """Deletes `key`; True when it existed."""
        return _store_call(lambda: data_store.delete(self.name, key))

    def increment(self, key: str, delta: int = 1) -> int:
        """Adds `delta` to the integer under `key` (missing counts as 0) atomically; the new value."""
        return _store_call(lambda: data_store.increment(self.name, key, delta))


class FileError(Exception):
    """A file operation failed: `kind` is `disabled` (no S3 configured),
    `not-found`, `invalid` (a bad name, over 1 MiB, a URI outside the job's
    bucket) or `unavailable` (S3 unreachable; a retry may succeed)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind


class FileInfo:
    """One of the job's files: `name` (below the job's folder), `size` in bytes, `uri`."""

    def __init__(self, name: str, size: int, uri: str) -> None:
        self.name = name
        self.size = size
        self.uri = uri

    def __repr__(self) -> str:
        return f"FileInfo({self.name!r}, {self.size}, {self.uri!r})"


_FILE_ERROR_KINDS = {
    task_files.FileError_Disabled: "disabled",
    task_files.FileError_NotFound: "not-found",
    task_files.FileError_Invalid: "invalid",
    task_files.FileError_Unavailable: "unavailable",
}


def _files_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Err as error:
        kind = _FILE_ERROR_KINDS.get(type(error.value), "unavailable")
        raise FileError(kind, getattr(error.value, "value", "") or "") from None


def _file_info(info: Any) -> FileInfo:
    return FileInfo(info.name, info.size, info.uri)


class _Files:
    """The job's own files in S3 (`wit/task-files.wit`): names are relative to
    the job's folder (`input.csv`, `frames/0001.png`), which goes when the job
    ends. A handler reads and writes files of up to 1 MiB; larger ones pass
    between workers as URIs (`uri`, `adopt`). Each method raises `FileError`."""

    def list(self) -> List[FileInfo]:
        """The job's files, in name order."""
        return [_file_info(info) for info in _files_call(task_files.list)]

    def read(self, name: str) -> bytes:
        """The contents of `name`."""
        return _files_call(lambda: task_files.read(name))

    def read_text(self, name: str) -> str:
        """The contents of `name`, decoded as UTF-8."""
        return self.read(name).decode("utf-8")

    def write(self, name: str, contents: Any) -> str:
        """Creates or replaces `name` with `contents` (bytes, or a str written
        as UTF-8); returns its URI."""
        data = contents.encode("utf-8") if isinstance(contents, str) else bytes(contents)
        return _files_call(lambda: task_files.write(name, data))

    def delete(self, name: str) -> bool:
        """Deletes `name`; True when it existed."""
        return _files_call(lambda: task_files.delete(name))

    def uri(self, name: str) -> str:
        """The `s3://` URI of `name`, existing or not: hand it to a worker."""
        return _files_call(lambda: task_files.uri(name))

    def adopt(self, source: str, name: str) -> FileInfo:
        """Moves the object at the `s3://` URI `source` (e.g. a worker's
        upload) into the job's folder as `name`."""
        return _file_info(_files_call(lambda: task_files.adopt(source, name)))


files = _Files()
"""The job's files; see `_Files`."""


_LEVELS = {
    "trace": wit_log.Level.TRACE,
    "debug": wit_log.Level.DEBUG,
    "info": wit_log.Level.INFO,
    "warn": wit_log.Level.WARN,
    "error": wit_log.Level.ERROR,
}


def log(level: str, message: str, **fields: Any) -> None:
    """Writes a record to the host's log: `log("info", "fetched", length=42)`.
    `level` is trace, debug, info, warn or error; field values become strings."""
    wit_log.log(_LEVELS[level], message, [(key, str(value)) for key, value in fields.items()])
