//! The API's own description: the OpenAPI 3.1 document at
//! `GET /_public/openapi.json` and Swagger UI reading it at `GET /_public/docs`.
//!
//! The document is generated, never written by hand. Each handler carries a
//! `#[utoipa::path]` attribute, and the route table registers it with
//! `utoipa_axum::routes!`, which routes the handler under the very path and
//! method the attribute documents: a route cannot be served undocumented, nor
//! documented without being served (the routes this server leaves out, such as
//! history without a history database or files without S3, are missing from
//! both). Blueprint endpoints are not routes but looked up at request time (see
//! `client::create_job`), so they are added to the document at request time
//! from the blueprints loaded then, and follow every reload.
//!
//! To document a new route: give its handler a `#[utoipa::path(…)]` naming
//! the method, the path exactly as axum routes it, a `tag` from [`tags`], the
//! `security` of its caller (`security(("client_token" = []),
//! ("client_token_rxon" = []))` for a client route, `security(("worker_token"
//! = []), ("worker_access_token" = []))` for a worker route, none for a
//! public one), its `params` (a query struct can derive `IntoParams`, as
//! `PageQuery` does), `request_body` and `responses`, with every error status
//! it can answer as `(status = 404, response = NotFound)` (the markers below).
//! Then register it with `.routes(routes!(handler))` in its module's route
//! table; a route added with axum's `.route(…)` instead fails the
//! `openapi` tests.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, Required};
use utoipa::{PartialSchema, ToResponse, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;
use utoipa_swagger_ui::Config as SwaggerConfig;

use super::AppState;
use super::error::ApiError;
use super::extract::ApiPath;
use crate::model::JobStatus;
use crate::runtime::Blueprint;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/_public/openapi.json";
/// Where Swagger UI's files are served; the page itself is at this path
/// without the slash too.
const DOCS_DIR: &str = "/_public/docs/";

/// The operation tags, in the order the page lists them.
pub mod tags {
    pub const PUBLIC: &str = "public";
    pub const DOCS: &str = "docs";
    pub const BLUEPRINTS: &str = "blueprints";
    pub const JOBS: &str = "jobs";
    pub const FILES: &str = "files";
    pub const ADMIN: &str = "admin";
    pub const WORKER: &str = "worker";
    pub const UI: &str = "ui";
}

/// The security scheme names the `security(…)` of an operation lists. A
/// client sends one of the two client headers (either is enough); a worker
/// sends `X-Worker-Token` with its secret or an access token.
pub const CLIENT_TOKEN: &str = "client_token";
pub const CLIENT_TOKEN_RXON: &str = "client_token_rxon";
pub const WORKER_TOKEN: &str = "worker_token";
pub const WORKER_ACCESS_TOKEN: &str = "worker_access_token";
/// For documentation: what a client route's `security(…)` reads.
pub const CLIENT_SECURITY: [&str; 2] = [CLIENT_TOKEN, CLIENT_TOKEN_RXON];

/// Every error the API answers: `{"error": "<human readable message>"}`
/// with the status code (`ApiError`).
#[derive(ToSchema)]
#[schema(example = json!({ "error": "job 0195c7a8-8e52-7c3a-9f51-1d2f3b4c5d6e not found" }))]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
}

/// One reusable response per error status, each `{"error": …}`; an
/// operation names the ones it can answer, e.g. `(status = 404, response = NotFound)`.
macro_rules! error_responses {
    ($($name:ident = $status:literal, $description:literal;)*) => {
        $(
            #[doc = $description]
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<utoipa::openapi::response::Response>) {
                    (stringify!($name), error_response($description))
                }
            }
        )*

        /// Every error response, for the document's components.
        fn error_components() -> Vec<(&'static str, RefOr<utoipa::openapi::response::Response>)> {
            vec![$(<$name as ToResponse>::response()),*]
        }

        /// The statuses of the error responses, for the tests.
        #[cfg(test)]
        pub(crate) const ERROR_STATUSES: &[u16] = &[$($status),*];
    };
}

error_responses! {
    BadRequest = 400, "The request is malformed: invalid JSON, a missing or invalid field or parameter.";
    Unauthorized = 401, "The token header is missing, or the token is not known (or, for an access token, expired or revoked).";
    Forbidden = 403, "The token is known but may not do this (another worker's task, another client's job).";
    NotFound = 404, "No such job, worker, blueprint, file or route.";
    MethodNotAllowed = 405, "The path exists, but not with this method.";
    Conflict = 409, "The job is not in a state that allows this.";
    PayloadTooLarge = 413, "The request body is over the route's limit (`MAX_REQUEST_BODY_BYTES` or smaller).";
    Unprocessable = 422, "Understood but refused: the blueprint set does not load; the running set stays as it was.";
    TooManyRequests = 429, "Over a quota or limit: a client's `monthly_attempts`, a worker token's `MAX_WORKERS_PER_TOKEN` new ids, `WORKER_MAX_POLLS` open polls.";
    Internal = 500, "A server fault; the cause is logged, never shown.";
    Unavailable = 503, "Storage, the history database or S3 is unavailable, or the server is shutting down and takes no new jobs: try again (another instance, or later).";
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::response::Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
        .into()
}

/// A job's status: its values are `JobStatus`'s own, so the document cannot
/// miss one.
pub struct JobStatusSchema;

impl PartialSchema for JobStatusSchema {
    fn schema() -> RefOr<Schema> {
        let values: Vec<&str> = JobStatus::ALL.iter().map(|status| status.as_str()).collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values))
            .description(Some(
                "`pending`, `running` and the `waiting_for_…` statuses are intermediate; the others are terminal.",
            ))
            .into()
    }
}

impl ToSchema for JobStatusSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "JobStatus".into()
    }
}

/// `{"status": "…"}`: an acknowledgement; each operation says which values.
#[derive(ToSchema)]
pub struct StatusBody {
    pub status: String,
}

/// The body of `POST <blueprint endpoint>`. A body with neither key is taken
/// as the initial data itself; an empty body is no initial data.
#[derive(ToSchema)]
#[schema(example = json!({ "initial_data": { "name": "Ada" }, "webhook_url": "https://example.com/hooks/jobs" }))]
pub struct CreateJobBody {
    /// What the blueprint's first handler gets.
    pub initial_data: Option<Value>,
    /// Gets one `POST` when the job ends (`job_finished`, `job_failed`, `job_quarantined`).
    pub webhook_url: Option<String>,
}

/// A job was created and queued.
#[derive(ToSchema)]
#[schema(example = json!({ "status": "accepted", "job_id": "0195c7a8-8e52-7c3a-9f51-1d2f3b4c5d6e" }))]
pub struct JobAccepted {
    /// `accepted`.
    pub status: String,
    /// The new job's id (a UUID).
    pub job_id: String,
}

/// An operator action was taken on a job: `status` says which
/// (`retry_accepted`, `webhook_queued`).
#[derive(ToSchema)]
pub struct JobAck {
    pub status: String,
    /// The job's id.
    pub job_id: String,
}

/// A job as its client sees it. More fields may be present (the current task,
/// parallel branches, timestamps); the client's token never is.
#[derive(ToSchema)]
pub struct Job {
    pub id: String,
    pub blueprint_name: String,
    /// The SHA-256 of the blueprint component the job runs on.
    pub blueprint_version: Option<String>,
    pub current_state: String,
    pub status: JobStatusSchema,
    pub initial_data: Value,
    /// What the job's handlers and results recorded, merged.
    pub state_history: Value,
    pub webhook_url: Option<String>,
    /// Why the job failed, once it has.
    pub error_message: Option<String>,
    /// The last progress its worker reported for the current task, 0.0–1.0.
    pub progress: f64,
    /// The message of that report; empty when there is none.
    pub progress_message: String,
}

/// A live worker as it registered and last reported. Fields the worker sent
/// that the orchestrator does not interpret are shown as sent.
#[derive(ToSchema)]
pub struct Worker {
    pub worker_id: String,
    pub worker_type: Option<String>,
    pub supported_tasks: Vec<String>,
    pub max_concurrent_tasks: Option<u32>,
    /// `idle`, `busy`, or what the worker said.
    pub status: String,
    pub load: f64,
    /// Tasks dispatched to it whose results have not arrived.
    pub in_flight: u32,
    /// The share of its recent results that succeeded.
    pub reputation: f64,
}

/// A file of a job, in S3.
#[derive(ToSchema)]
pub struct JobFile {
    /// The name under the job's prefix (may contain `/`).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// `s3://bucket/jobs/{job_id}/{name}`.
    pub uri: String,
}

/// A person's decision for a job waiting in `waiting_for_human`.
#[derive(ToSchema)]
#[schema(example = json!({ "decision": "approved" }))]
pub struct ApprovalDecision {
    /// One of the transitions the job is waiting on.
    pub decision: String,
}

/// The decision was taken.
#[derive(ToSchema)]
pub struct ApprovalReceived {
    /// `approval_received`.
    pub status: String,
    pub job_id: String,
}

/// The body of `POST /_worker/workers/register`. Both SDK generations'
/// layouts are read (the newer one nests `max_concurrent_tasks` under
/// `resources` and may name `supported_skills` instead of `supported_tasks`);
/// other fields are kept and shown back as sent.
#[derive(ToSchema)]
#[schema(example = json!({
    "worker_id": "gpu-1", "worker_type": "gpu", "supported_tasks": ["render"],
    "max_concurrent_tasks": 4, "capabilities": { "websockets": true }
}))]
pub struct WorkerRegistration {
    /// Optional when the worker's own token names it.
    pub worker_id: Option<String>,
    pub worker_type: Option<String>,
    pub supported_tasks: Option<Vec<String>>,
    pub max_concurrent_tasks: Option<u32>,
}

/// A heartbeat's update; every field optional, `{}` or no body is a ping.
#[derive(ToSchema)]
#[schema(example = json!({ "status": "busy", "load": 0.5, "supported_tasks": ["render"] }))]
pub struct WorkerUpdate {
    /// `idle`, `busy`, or another status of the worker's.
    pub status: Option<String>,
    pub load: Option<f64>,
    pub supported_tasks: Option<Vec<String>>,
}

/// A task for a worker.
#[derive(ToSchema)]
pub struct Task {
    pub job_id: String,
    pub task_id: String,
    /// The task type: the worker's handler name.
    #[schema(rename = "type")]
    pub task_type: String,
    pub params: Value,
    pub priority: i32,
    /// W3C trace context of the job, when tracing is on.
    pub tracing_context: Option<Value>,
}

/// A task's result, in either SDK generation's layout: 1.0b3 nests `status`,
/// `data` and `error` under `result`; the `rxon` SDKs (with
/// `X-RXON-Version`) send them at the top level.
#[derive(ToSchema)]
#[schema(example = json!({
    "job_id": "0195c7a8-8e52-7c3a-9f51-1d2f3b4c5d6e", "task_id": "0195c7a8-9000-7000-8000-000000000001",
    "worker_id": "gpu-1", "result": { "status": "success", "data": { "frames": 240 } }
}))]
pub struct TaskResult {
    pub job_id: String,
    pub task_id: String,
    pub worker_id: Option<String>,
    /// 1.0b3: `{"status", "data", "error": {"code", "message"}}`.
    pub result: Option<Value>,
    /// `rxon`: `success` (the default), `failure`, `cancelled` or a status of the blueprint's.
    pub status: Option<String>,
    pub data: Option<Value>,
    pub error: Option<Value>,
}

/// Whether the client asked to cancel a task.
#[derive(ToSchema)]
pub struct TaskCancellation {
    pub job_id: String,
    pub task_id: String,
    pub cancellation_requested: bool,
}

/// A short-lived worker access token, sent back in `X-Worker-Token`.
#[derive(ToSchema)]
pub struct AccessToken {
    /// `avt1.…`.
    pub access_token: String,
    /// `Bearer` (the `rxon` SDKs' word; the token goes in `X-Worker-Token`).
    pub token_type: String,
    /// Seconds.
    pub expires_in: u64,
    pub worker_id: String,
}

/// A worker event over HTTP (the newest `rxon` SDKs), e.g. progress:
/// `{"event_type": "progress", "payload": {"progress", "message"},
/// "target_job_id", "target_task_id"}`, or `{"event": "progress_update",
/// "job_id", "task_id", "progress", "message"}`.
#[derive(ToSchema)]
pub struct WorkerEvent {
    pub worker_id: Option<String>,
    pub event_type: Option<String>,
    pub event: Option<String>,
    pub payload: Option<Value>,
}

/// The document's fixed part (what the route table documents, with the
/// shared components), built once with the router.
pub struct Document {
    base: OpenApi,
}

impl Document {
    /// Completes what the route table collected: title, the rules every
    /// operation shares, the security schemes and the error responses.
    pub fn new(mut doc: OpenApi) -> Self {
        doc.info = InfoBuilder::new()
            .title("Avtomatika")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(DESCRIPTION))
            .build();
        doc.tags = Some(
            [
                (tags::PUBLIC, "No authentication."),
                (tags::DOCS, "This document and the page showing it."),
                (tags::BLUEPRINTS, "One operation per loaded blueprint endpoint: each creates a job of its blueprint."),
                (tags::JOBS, "A client's jobs (client token)."),
                (tags::FILES, "A job's files in S3 (client token; only when S3 is configured)."),
                (tags::ADMIN, "Workers, schedules, blueprints and reloads (client token)."),
                (tags::WORKER, "The worker protocol (worker token)."),
                (tags::UI, "The operator dashboard's page and files (no token; the page asks for a client token)."),
            ]
            .into_iter()
            .map(|(name, description)| TagBuilder::new().name(name).description(Some(description)).build())
            .collect(),
        );
        let components = doc.components.get_or_insert_with(Default::default);
        let header_key = |header: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(header, description)))
        };
        components.add_security_schemes_from_iter([
            (CLIENT_TOKEN, header_key("X-Avtomatika-Token", "A client token: `clients.toml`'s or `CLIENT_TOKEN`.")),
            (
                CLIENT_TOKEN_RXON,
                header_key(
                    "X-Client-Token",
                    "The same tokens in the header of the `rxon` SDKs; read only when `X-Avtomatika-Token` is absent.",
                ),
            ),
            (
                WORKER_TOKEN,
                header_key(
                    "X-Worker-Token",
                    "A worker's own token from `workers.toml` (it names the worker), or `GLOBAL_WORKER_TOKEN` \
                     (the worker id then comes from the path, the body or `X-Worker-ID`).",
                ),
            ),
            (
                WORKER_ACCESS_TOKEN,
                header_key(
                    "X-Worker-Token",
                    "An access token (`avt1.…`) from `POST /_worker/auth/token`, in the same header: it names its \
                     worker and lapses after `expires_in` seconds.",
                ),
            ),
        ]);
        for (name, response) in error_components() {
            components.responses.insert(name.to_owned(), response);
        }
        // The blueprint operations, added per request, refer to these.
        for (name, schema) in [
            (ErrorBody::name(), ErrorBody::schema()),
            (CreateJobBody::name(), CreateJobBody::schema()),
            (JobAccepted::name(), JobAccepted::schema()),
        ] {
            components.schemas.insert(name.into_owned(), schema);
        }
        // axum's catch-all `{*name}` is OpenAPI's `{name}` (whose value
        // may then hold `/`).
        let paths = std::mem::take(&mut doc.paths.paths);
        doc.paths.paths = paths.into_iter().map(|(path, item)| (path.replace("{*", "{"), item)).collect();
        Self { base: doc }
    }

    /// The document with one operation per blueprint endpoint of `blueprints`.
    pub fn with_blueprints(&self, blueprints: &[Arc<Blueprint>]) -> OpenApi {
        let mut doc = self.base.clone();
        for blueprint in blueprints {
            let Some(endpoint) = &blueprint.graph.endpoint else { continue };
            doc.paths.add_path_operation(endpoint, vec![HttpMethod::Post], create_job_operation(blueprint));
        }
        doc
    }
}

const DESCRIPTION: &str = "\
Job orchestration: clients create jobs at the blueprint endpoints and follow them under `/api/v1/jobs/…`; \
workers take their tasks under `/_worker/…`.

Every error is `{\"error\": \"<message>\"}` (schema `ErrorBody`) with the status code the operation lists; \
a path no route or blueprint endpoint takes answers `404` (`NotFound`), a method a path does not list `405` \
(`MethodNotAllowed`).

**API versions.** The client routes are documented under `/api/v1/`. They answer under every API version a \
loaded blueprint's endpoint uses as well (`/api/v2/jobs/{job_id}` beside a `v2` blueprint's \
`POST /api/v2/…`), and under `/api/` when a blueprint has an unversioned endpoint; a `POST` to a blueprint \
endpoint always creates a job, even where a client route of the same shape exists.

**Blueprints.** The `blueprints` operations are the endpoints of the blueprints loaded when this document was \
fetched: `POST /api/v1/admin/reload-blueprints` (or `BLUEPRINTS_WATCH_INTERVAL_SECONDS`) changes them.";

fn create_job_operation(blueprint: &Blueprint) -> utoipa::openapi::path::Operation {
    let name = blueprint.name();
    let errors = [
        ("400", "BadRequest"),
        ("401", "Unauthorized"),
        ("413", "PayloadTooLarge"),
        ("429", "TooManyRequests"),
        ("500", "Internal"),
        ("503", "Unavailable"),
    ];
    let accepted = ResponseBuilder::new()
        .description("The job was created and queued.")
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("JobAccepted"))).build())
        .build();
    let body = RequestBodyBuilder::new()
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("CreateJobBody"))).build())
        .required(Some(Required::False))
        .build();
    let mut operation = OperationBuilder::new()
        .tag(tags::BLUEPRINTS)
        .operation_id(Some(format!("create_job_{name}")))
        .summary(Some(format!("Create a job of blueprint `{name}`")))
        .description(Some(format!(
            "Starts a job of blueprint `{name}` (version `{}`, from `{}`) in its start state `{}`.",
            blueprint.version, blueprint.file, blueprint.graph.start
        )))
        .request_body(Some(body))
        .response("202", accepted);
    for (status, response) in errors {
        operation = operation.response(status, Ref::from_response_name(response));
    }
    for scheme in CLIENT_SECURITY {
        operation = operation.security(SecurityRequirement::new(scheme, Vec::<String>::new()));
    }
    operation.build()
}

/// Where the document goes once the route table it describes is built: the
/// docs routes are part of that table, so they get the slot before it is filled.
pub type DocumentSlot = Arc<OnceLock<Document>>;

/// The docs routes: the document and the page. Only the document's route
/// carries the slot (an extension on every route would cost every request).
pub fn routes(slot: DocumentSlot) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(document).layer(Extension(slot)))
        .routes(routes!(docs_page))
        .routes(routes!(docs_dir))
        .routes(routes!(docs_file))
}

/// This document, with the blueprint endpoints loaded now.
#[utoipa::path(
    get, path = "/_public/openapi.json", tag = tags::DOCS, operation_id = "openapi_document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this server.", content_type = "application/json", body = Object),
        (status = 500, response = Internal),
    ),
)]
async fn document(
    State(state): State<AppState>,
    Extension(slot): Extension<DocumentSlot>,
) -> Result<Json<OpenApi>, ApiError> {
    // Filled by `api::router` before the server takes requests.
    let doc = slot.get().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the API document was never built")))?;
    Ok(Json(doc.with_blueprints(&state.orchestrator.runtime.blueprints())))
}

/// The interactive page (Swagger UI) for this document, served from the binary.
#[utoipa::path(
    get, path = "/_public/docs", tag = tags::DOCS, operation_id = "docs_page",
    responses((status = 200, description = "An HTML page.", content_type = "text/html")),
)]
async fn docs_page() -> Response {
    match swagger_file("index.html") {
        // The page is at `/_public/docs`, its files under `/_public/docs/`:
        // the base makes the page's relative links point there.
        Some((_, body)) => {
            let html = String::from_utf8_lossy(&body)
                .replacen("<head>", &format!("<head>\n    <base href=\"{DOCS_DIR}\">"), 1)
                .replacen("<title>Swagger UI</title>", "<title>Avtomatika API</title>", 1);
            ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], html).into_response()
        }
        None => page_missing(),
    }
}

/// The same page, at the address with the slash.
#[utoipa::path(
    get, path = "/_public/docs/", tag = tags::DOCS, operation_id = "docs_page_dir",
    responses((status = 200, description = "An HTML page.", content_type = "text/html")),
)]
async fn docs_dir() -> Response {
    docs_page().await
}

/// A file of the page (scripts, styles, icons).
#[utoipa::path(
    get, path = "/_public/docs/{file}", tag = tags::DOCS, operation_id = "docs_file",
    params(("file" = String, Path, description = "A file of Swagger UI, e.g. `swagger-ui-bundle.js`.")),
    responses(
        (status = 200, description = "The file.", content_type = "application/octet-stream"),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    ),
)]
async fn docs_file(ApiPath(file): ApiPath<String>) -> Result<Response, super::ApiError> {
    if file == "index.html" {
        return Ok(docs_page().await);
    }
    let (content_type, body) =
        swagger_file(&file).ok_or_else(|| super::ApiError::NotFound(format!("no file {file} in the docs page")))?;
    let content_type =
        HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// `file` of the embedded Swagger UI, its initializer set to read this
/// document.
fn swagger_file(file: &str) -> Option<(String, Vec<u8>)> {
    let config = Arc::new(SwaggerConfig::from(DOCUMENT_PATH));
    match utoipa_swagger_ui::serve(file, config) {
        Ok(found) => found.map(|file| (file.content_type, file.bytes.into_owned())),
        Err(e) => {
            tracing::error!(file, error = %e, "cannot serve a Swagger UI file");
            None
        }
    }
}

fn page_missing() -> Response {
    let body = json!({ "error": "the docs page is not in this build; the document is at /_public/openapi.json" });
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Job as JobRecord, JobView, WorkerInfo, WorkerRegistration as Registration};

    /// The properties `T`'s schema requires.
    fn required<T: ToSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap_or_default();
        serde_json::from_value(schema["required"].clone()).unwrap_or_default()
    }

    /// The schemas of what the handlers answer by serialising a model type
    /// are written beside it, not derived from it: these keep them in step.
    #[test]
    fn the_documented_job_and_worker_fields_are_what_the_api_shows() {
        let record = JobRecord::new("hello".into(), "client".into(), "start".into(), json!({ "name": "Ada" }), None);
        let job = serde_json::to_value(JobView::new(&record, None)).unwrap_or_default();
        let fields = required::<Job>();
        assert!(fields.len() >= 6, "{fields:?}");
        for field in fields {
            assert!(job.get(&field).is_some(), "the job has no {field}: {job:#}");
        }
        let status = serde_json::to_value(JobStatusSchema::schema()).unwrap_or_default();
        assert!(status["enum"].as_array().is_some_and(|values| values.contains(&job["status"])), "{status}");

        let registration: Registration =
            serde_json::from_value(json!({ "worker_id": "w1", "supported_tasks": ["greet"] })).unwrap_or_else(|e| {
                panic!("{e}");
            });
        let worker = serde_json::to_value(WorkerInfo::from_registration("w1".into(), registration)).unwrap_or_default();
        for field in required::<Worker>() {
            assert!(worker.get(&field).is_some(), "the worker has no {field}: {worker:#}");
        }
    }
}
