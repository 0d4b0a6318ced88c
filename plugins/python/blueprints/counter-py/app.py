"""`counter-py`: the Rust `counter` example in Python. Counts visits per page
in a data store shared by every job of the blueprint, and remembers who came
last. No worker is involved.

`POST /api/v1/jobs/counter-py {"page": "about", "name": "Ada"}` (`page`
defaults to `home`, `name` to `anonymous`) runs `count`, which adds 1 to the
page's counter in the store `visits`, reads the previous visitor from the
store `visitors` (key `last_visitor`) and replaces it with `name`. It records
`{"count": <the page's new count>, "previous_visitor": <name or null>}` and
ends the job `finished`. With `"reset": true`, the page's counter is deleted
first (so the count starts again at 1) and the history also gets
`{"deleted": <whether the counter existed>}`.

A store error (a `StoreError`) fails the handler, which the host retries.
"""

from avtomatika import Describe, HandlerError, Job, Next, State, Store, export


def describe() -> Describe:
    return (
        Describe("counter-py")
        .endpoint("v1", "/jobs/counter-py")
        .state(State.start("count").to("finished"))
        .state(State.finished("finished"))
    )


def handle(job: Job) -> Next:
    if job.state != "count":
        raise HandlerError(f"counter-py has no handler for state {job.state}")
    data = job.initial_data
    page = data.get("page", "home")
    name = data.get("name", "anonymous")
    # Two stores, so that no page name can collide with `last_visitor`.
    visits = Store("visits")
    visitors = Store("visitors")

    history = {}
    if data.get("reset") is True:
        history["deleted"] = visits.delete(page)
    history["count"] = visits.increment(page)
    history["previous_visitor"] = visitors.get("last_visitor")
    visitors.set("last_visitor", name)
    return Next.go_to("finished").with_history(history)


Handler = export(describe, handle)
