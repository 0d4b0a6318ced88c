//! `files-probe`: runs the `task-files` operations listed in its initial data
//! and records what each answered, so tests can drive the capability from
//! the outside. `POST /api/v1/jobs/files-probe {"ops": [{"op": "write",
//! "name": "a.txt", "text": "hi"}, {"op": "read", "name": "a.txt"}, …]}`
//! (ops `list`, `read`, `write` (`text`, or `size` bytes of `x`), `delete`,
//! `uri`, `adopt` (`source`, `name`)) ends `finished` with
//! `{"results": [{"ok": …} | {"error": "<kind>: <message>"}, …]}`.
//! With `"fail_on_error": true` the first error fails the handler instead
//! (the host retries it and then quarantines the job with the message).

use avtomatika_blueprint::{Blueprint, Describe, FileError, Job, Next, State, Value, files, json};

struct FilesProbe;

impl Blueprint for FilesProbe {
    fn describe() -> Describe {
        Describe::new("files-probe")
            .endpoint("v1", "/jobs/files-probe")
            .state(State::start("start").to(["finished"]))
            .state(State::finished("finished"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        let fail_on_error = job.initial_data()["fail_on_error"] == true;
        let mut results = Vec::new();
        for op in job.initial_data()["ops"].as_array().cloned().unwrap_or_default() {
            let result = run(&op);
            match result {
                Err(e) if fail_on_error => return Err(e.to_string()),
                Ok(value) => results.push(json!({ "ok": value })),
                Err(e) => results.push(json!({ "error": kind(&e) })),
            }
        }
        Ok(Next::go_to("finished").with_history(json!({ "results": results })))
    }
}

fn kind(error: &FileError) -> String {
    match error {
        FileError::Disabled => "disabled".to_owned(),
        FileError::NotFound(m) => format!("not-found: {m}"),
        FileError::Invalid(m) => format!("invalid: {m}"),
        FileError::Unavailable(m) => format!("unavailable: {m}"),
        other => format!("other: {other}"),
    }
}

fn run(op: &Value) -> Result<Value, FileError> {
    let name = op["name"].as_str().unwrap_or_default();
    match op["op"].as_str().unwrap_or_default() {
        "list" => {
            Ok(files::list()?.into_iter().map(|f| json!({ "name": f.name, "size": f.size, "uri": f.uri })).collect())
        }
        "read" => Ok(json!(files::read_string(name)?)),
        "write" => {
            let contents = match op["size"].as_u64() {
                Some(size) => "x".repeat(usize::try_from(size).unwrap_or(0)),
                None => op["text"].as_str().unwrap_or_default().to_owned(),
            };
            Ok(json!(files::write(name, contents)?))
        }
        "delete" => Ok(json!(files::delete(name)?)),
        "uri" => Ok(json!(files::uri(name)?)),
        "adopt" => {
            let f = files::adopt(op["source"].as_str().unwrap_or_default(), name)?;
            Ok(json!({ "name": f.name, "size": f.size, "uri": f.uri }))
        }
        other => Ok(json!(format!("unknown op {other:?}"))),
    }
}

avtomatika_blueprint::export!(FilesProbe);
