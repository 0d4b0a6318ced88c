//! `uppercase`: hands a text file to a worker through S3 and keeps the
//! worker's output with the job (the `task-files` capability).
//!
//! `POST /api/v1/jobs/uppercase {"text": "hello"}` runs `start`, which writes
//! `text` to the job's file `input.txt` (`s3://{bucket}/jobs/{job_id}/input.txt`)
//! and dispatches an `uppercase_file` task with `{"input": <that URI>}`.
//! Without `text`, the client uploads the file itself: the job waits for a
//! human decision (`waiting_for_human`) until the client has sent
//! `PUT /api/v1/jobs/{job_id}/files/input.txt` and then
//! `POST /_public/webhooks/approval/{job_id} {"decision": "uploaded"}`;
//! `dispatch` then checks the file is there (failing the job if not) and
//! dispatches the same task.
//!
//! The worker (`examples/python-worker/file_worker.py`) answers
//! `{"output": "s3://{bucket}/<its upload>", "bytes": N}`. `collect` moves
//! that object into the job's folder as `output.txt` (so it is deleted with
//! the job, and the client can download it from
//! `GET /api/v1/jobs/{job_id}/files/output.txt`), and records
//! `{"input": <URI>, "output": <URI of output.txt>, "output_size": N,
//! "preview": <its first 100 characters>}`; the job ends `finished`.

use avtomatika_blueprint::{Approval, Blueprint, Describe, Job, Next, State, Task, files, json};

struct Uppercase;

const INPUT: &str = "input.txt";
const OUTPUT: &str = "output.txt";

impl Blueprint for Uppercase {
    fn describe() -> Describe {
        Describe::new("uppercase")
            .endpoint("v1", "/jobs/uppercase")
            .state(State::start("start").to(["dispatch", "collect"]))
            .state(State::new("dispatch").to(["collect", "failed"]))
            .state(State::new("collect").to(["finished"]))
            .state(State::finished("finished"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        match job.state() {
            "start" => start(&job),
            "dispatch" => dispatch(),
            "collect" => collect(&job),
            other => Err(format!("uppercase has no handler for state {other}")),
        }
    }
}

fn task(input: &str) -> Next {
    Next::dispatch(Task::new("uppercase_file", json!({ "input": input })).on("success", "collect"))
        .with_history(json!({ "input": input }))
}

fn start(job: &Job) -> Result<Next, String> {
    match job.initial_data()["text"].as_str() {
        Some(text) => Ok(task(&files::write(INPUT, text)?)),
        None => Ok(Next::await_approval(
            Approval::new(format!(
                "upload {INPUT} with PUT /api/v1/jobs/{}/files/{INPUT}, then decide \"uploaded\"",
                job.id()
            ))
            .on("uploaded", "dispatch"),
        )),
    }
}

fn dispatch() -> Result<Next, String> {
    match files::list()?.into_iter().find(|file| file.name == INPUT) {
        Some(file) => Ok(task(&file.uri)),
        None => Ok(Next::go_to("failed").with_history(json!({ "error": format!("{INPUT} was not uploaded") }))),
    }
}

fn collect(job: &Job) -> Result<Next, String> {
    let Some(uploaded) = job.history()["output"].as_str() else {
        return Err("the worker's result has no `output` URI".into());
    };
    let output = match files::adopt(uploaded, OUTPUT) {
        Ok(output) => output,
        // A retried handler finds the output already moved.
        Err(files::FileError::NotFound(_)) => files::list()?
            .into_iter()
            .find(|file| file.name == OUTPUT)
            .ok_or_else(|| format!("the worker's output {uploaded} is gone"))?,
        Err(e) => return Err(e.into()),
    };
    let text = files::read_string(OUTPUT)?;
    let preview: String = text.chars().take(100).collect();
    Ok(Next::go_to("finished").with_history(json!({
        "output": output.uri,
        "output_size": output.size,
        "preview": preview,
    })))
}

avtomatika_blueprint::export!(Uppercase);
