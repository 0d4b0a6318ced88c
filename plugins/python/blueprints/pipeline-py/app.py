"""`pipeline-py`: the Rust `pipeline` example in Python. Fetches a document
through one worker, measures it, and hands the measurement to another.

`POST /api/v1/jobs/pipeline-py {"url": "https://example.com"}` dispatches a
`fetch` task with `{"url": ...}`. The worker's `success` data (expected:
`{"content": "..."}`) joins the state history, and `transform` records the
content's length in characters, or fails the job if there is no content.
`publish` then dispatches a priority-5 `publish` task with `{"length": ...}`;
its `success` ends the job `finished`. A `failure` follows its error code.
"""

from avtomatika import Describe, HandlerError, Job, Next, State, Task, export


def describe() -> Describe:
    return (
        Describe("pipeline-py")
        .endpoint("v1", "/jobs/pipeline-py")
        .state(State.start("fetch").to("transform", "failed"))
        # `Next.fail` ends the job without a transition, so none is declared for it.
        .state(State("transform").to("publish"))
        .state(State("publish").to("finished", "failed"))
        .state(State.finished("finished"))
        .state(State.failed("failed"))
    )


def handle(job: Job) -> Next:
    if job.state == "fetch":
        return Next.dispatch(
            Task("fetch", {"url": job.initial_data.get("url")}).on("success", "transform").on("failure", "failed")
        )
    if job.state == "transform":
        content = job.history.get("content")
        if isinstance(content, str) and content:
            return Next.go_to("publish").with_history({"length": len(content)})
        return Next.fail("fetch returned no content")
    if job.state == "publish":
        return Next.dispatch(
            Task("publish", {"length": job.history.get("length")})
            .on("success", "finished")
            .on("failure", "failed")
            .priority(5)
            # Routing (contract 1.1.0): the publisher with the fewest tasks in
            # flight, and ten minutes for its answer.
            .strategy("least_connections")
            .timeout_seconds(600)
        )
    raise HandlerError(f"pipeline-py has no handler for state {job.state}")


Handler = export(describe, handle)
