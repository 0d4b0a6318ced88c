//! `image-pipeline`: resizes one image to several sizes at once, on as many
//! workers as are free, and gathers the thumbnails.
//!
//! `POST /api/v1/jobs/image-pipeline {"image": "s3://bucket/cat.png", "sizes":
//! ["small", "large"]}` (`sizes` defaults to `["small", "medium", "large"]`)
//! dispatches one `resize` task per size, all at once, each with
//! `{"image": ..., "size": ...}`. A worker's `success` data is expected to be
//! `{"url": "..."}`. When every task has answered, `collect` looks at them
//! all: if each one succeeded, it records `{"thumbnails": {"small": <url>,
//! ...}}` and ends the job `finished`; otherwise it records `{"failed_sizes":
//! [...]}` (every size whose task failed, was cancelled or timed out) and ends
//! it `failed`. Initial data without an image, or with sizes that are not a
//! non-empty list of strings, fails the job at once.

use avtomatika_blueprint::{Blueprint, Branch, Describe, Job, Next, State, Strategy, Value, json};

const DEFAULT_SIZES: [&str; 3] = ["small", "medium", "large"];

struct ImagePipeline;

impl Blueprint for ImagePipeline {
    fn describe() -> Describe {
        Describe::new("image-pipeline")
            .endpoint("v1", "/jobs/image-pipeline")
            .state(State::start("resize").to(["collect"]))
            .state(State::new("collect").to(["finished", "failed"]))
            .state(State::finished("finished"))
            .state(State::failed("failed"))
    }

    fn handle(job: Job) -> Result<Next, String> {
        match job.state() {
            "resize" => Ok(resize(&job)),
            "collect" => collect(&job),
            other => Err(format!("image-pipeline has no handler for state {other}")),
        }
    }
}

/// The requested sizes, in branch order: `collect` maps each result's
/// `index` back to its size with the same list.
fn sizes(initial_data: &Value) -> Result<Vec<String>, String> {
    match &initial_data["sizes"] {
        Value::Null => Ok(DEFAULT_SIZES.map(String::from).to_vec()),
        Value::Array(sizes) if !sizes.is_empty() => sizes
            .iter()
            .map(|size| size.as_str().map(String::from).ok_or_else(|| format!("size {size} is not a string")))
            .collect(),
        _ => Err("sizes must be a non-empty list of strings".into()),
    }
}

fn resize(job: &Job) -> Next {
    let image = match job.initial_data()["image"].as_str() {
        Some(image) if !image.is_empty() => image,
        _ => return Next::fail("the initial data has no image"),
    };
    match sizes(job.initial_data()) {
        Ok(sizes) => Next::parallel(
            "collect",
            // Resizes spread over the resizers: each to the one with the
            // fewest tasks in flight (routing, contract 1.1.0).
            sizes.iter().map(|size| {
                Branch::new("resize", json!({ "image": image, "size": size })).strategy(Strategy::LeastConnections)
            }),
        ),
        Err(message) => Next::fail(message),
    }
}

fn collect(job: &Job) -> Result<Next, String> {
    let sizes = sizes(job.initial_data())?;
    let results =
        job.aggregation_results().and_then(Value::as_object).ok_or("collect ran without the resize tasks' results")?;

    let mut thumbnails = json!({});
    let mut failed = Vec::new();
    for result in results.values() {
        let index = result["index"]
            .as_u64()
            .and_then(|index| usize::try_from(index).ok())
            .filter(|index| *index < sizes.len())
            .ok_or_else(|| format!("a resize result has no valid branch index: {result}"))?;
        if result["status"] == "success" {
            thumbnails[&sizes[index]] = result["data"]["url"].clone();
        } else {
            failed.push(index);
        }
    }

    if failed.is_empty() {
        Ok(Next::go_to("finished").with_history(json!({ "thumbnails": thumbnails })))
    } else {
        // Results are keyed by task id; list the failures in the order asked.
        failed.sort_unstable();
        let failed: Vec<&str> = failed.into_iter().map(|index| sizes[index].as_str()).collect();
        Ok(Next::go_to("failed").with_history(json!({ "failed_sizes": failed })))
    }
}

avtomatika_blueprint::export!(ImagePipeline);
