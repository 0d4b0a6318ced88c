"""`misbehave-py`: a Python blueprint that breaks the rules on request, for
the host's sandbox tests (`tests/tests/python_blueprints.rs`).

The start handler does what `initial_data.mode` asks:

- `"raise"`: raises `RuntimeError("misbehave-py: deliberate exception")`,
  which the SDK hands to the host as the handler's `err` (a guest error, not
  a trap);
- `"loop"`: spins forever (the CPU time limit must stop it);
- `"bomb"`: allocates without bound (the memory limit must stop it);
- anything else, or no mode: moves to `finished` with `{"ok": true}` in the
  history.
"""

from avtomatika import Describe, HandlerError, Job, Next, State, export

MIB = 1 << 20


def describe() -> Describe:
    return (
        Describe("misbehave-py")
        .endpoint("v1", "/jobs/misbehave-py")
        .state(State.start("start").to("finished"))
        .state(State.finished("finished"))
    )


def handle(job: Job) -> Next:
    if job.state != "start":
        raise HandlerError(f"misbehave-py has no handler for state {job.state}")
    mode = job.initial_data.get("mode")
    if mode == "raise":
        raise RuntimeError("misbehave-py: deliberate exception")
    if mode == "loop":
        spin()
    if mode == "bomb":
        hoard()
    return Next.go_to("finished").with_history({"ok": True})


def spin() -> None:
    count = 0
    while True:
        count += 1


def hoard() -> None:
    # Non-zero bytes, so every page is written rather than left as fresh zeroes.
    blocks = []
    while True:
        blocks.append(b"\xa5" * MIB)


Handler = export(describe, handle)
