//! ab-gateway: the original A/B testing REST API, served over the ab_testing extension.
//!
//! Every endpoint is one call of one of the extension's SQL functions. The gateway adds no
//! logic of its own, only HTTP: it reads JSON, passes it on, returns what the function
//! returned, and maps SQLSTATEs to status codes (see `status_for`).
//!
//! It also serves the results pages (`pages.rs`): `/` lists the experiments and
//! `/experiments/{id}` shows one, as HTML, read-only.
//!
//! Every request but `/health`, `/api/v1/openapi.json` and `/login` presents a token
//! (`Authorization: Bearer`, or from a browser the cookie `/login` sets). Each token maps to a
//! database role, and the request runs on a connection of that role's pool, switched to the
//! role (`SET ROLE` when the connection is made, and again after each statement), so the
//! database's own grants decide what a request may do (see `auth.rs` and `guard`). The login
//! role has no rights of its own.
//!
//! Settings (environment): AB_GATEWAY_DATABASE_URL (a libpq-style connection string, default
//! "host=/var/run/postgresql dbname=postgres"; its role should be NOINHERIT and a member of
//! every mapped role), AB_GATEWAY_TOKENS_FILE (lines `ROLE TOKEN`, readable by its owner only)
//! and/or AB_GATEWAY_TOKENS (the same lines), AB_GATEWAY_LISTEN (default 127.0.0.1:8000),
//! AB_GATEWAY_ALLOWED_HOSTS (comma-separated Host values; default the bound address and, on
//! loopback, localhost), AB_GATEWAY_CORS_ORIGINS (comma-separated origins whose scripts may
//! call the API with a token; default none), AB_GATEWAY_POOL_SIZE (default 16 connections per
//! role), AB_GATEWAY_STATEMENT_TIMEOUT_MS (default 30000), AB_GATEWAY_POOL_TIMEOUT_MS (how long a
//! request waits for a connection, default 5000), AB_GATEWAY_HEALTH_TIMEOUT_MS (default 2000).

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::{json, Number, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::ToSql;

mod auth;
mod pages;

const OPENAPI: &str = include_str!("../openapi.json");

/// Every route, as (method, path) in the OpenAPI document's spelling; a test keeps the two in step.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/experiments/"),
    ("get", "/api/v1/experiments/"),
    ("get", "/api/v1/experiments/{id}"),
    ("delete", "/api/v1/experiments/{id}"),
    ("post", "/api/v1/experiments/{id}/start"),
    ("post", "/api/v1/experiments/{id}/stop"),
    ("post", "/api/v1/experiments/get-variant"),
    ("post", "/api/v1/experiments/record-result"),
    ("get", "/api/v1/experiments/{id}/analyze"),
    ("get", "/api/v1/experiments/{id}/summary"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/health"),
];

/// What every handler shares: the pools, the credentials and the request rules.
#[derive(Clone)]
struct App(Arc<AppInner>);

struct AppInner {
    /// One pool per role of the tokens.
    pools: HashMap<String, Pool>,
    /// One connection of its own for `/health`, so that slow requests holding the pool's
    /// connections cannot make it wait.
    health: Pool,
    tokens: auth::Tokens,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
}

/// The database role a request runs as, from its token, and the statement that switches to it.
#[derive(Clone)]
struct Role {
    name: Arc<str>,
    set: Arc<str>,
}

impl Role {
    fn new(name: &str) -> Role {
        Role { name: name.into(), set: format!("SET ROLE {}", auth::quote_ident(name)).into() }
    }
}

impl App {
    /// The pool of a role's connections (the guard only lets through roles of the tokens).
    fn pool(&self, role: &Role) -> &Pool {
        &self.0.pools[&*role.name]
    }
}

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The HTTP status of a failed call, from its SQLSTATE.
fn status_for(sqlstate: &str) -> StatusCode {
    match sqlstate {
        // undefined_object: unknown experiment or layer
        "42704" => StatusCode::NOT_FOUND,
        // bad definitions and arguments: invalid_parameter_value, invalid_text_representation
        // (malformed JSON), null_value_not_allowed, check_violation, numeric_value_out_of_range,
        // a NUL in text (character_not_in_repertoire, untranslatable_character)
        "22023" | "22P02" | "22004" | "23514" | "22003" | "54000" | "22021" | "22P05" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        // duplicate names, wrong lifecycle state, full layer, lost races
        "42710" | "23505" | "55000" | "55006" | "40001" | "40P01" => StatusCode::CONFLICT,
        "42501" => StatusCode::FORBIDDEN,
        // query_canceled: the statement timeout
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        s if s.starts_with("08") || s.starts_with("57P") || s.starts_with("53") => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => ApiError {
                status: status_for(db.code().code()),
                body: json!({"detail": db.message(), "sqlstate": db.code().code(), "hint": db.hint()}),
            },
            None => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({"detail": format!("database unavailable: {e}")}),
            },
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        let detail = match e {
            deadpool_postgres::PoolError::Timeout(_) => "database busy: no connection became free in time".to_string(),
            // A new connection could not switch to the token's role (the login role is no
            // longer a member of it): the database's own words.
            deadpool_postgres::PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => {
                match e.as_db_error() {
                    Some(db) => format!("database unavailable: cannot switch to the token's role: {}", db.message()),
                    None => format!("database unavailable: {e}"),
                }
            }
            e => format!("database unavailable: {e}"),
        };
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, body: json!({"detail": detail}) }
    }
}

fn refusal(status: StatusCode, sqlstate: &str, detail: impl Into<String>, hint: Option<&str>) -> ApiError {
    ApiError { status, body: json!({"detail": detail.into(), "sqlstate": sqlstate, "hint": hint}) }
}

/// A request the gateway refuses before calling the database: 422 with SQLSTATE 22023
/// (invalid_parameter_value), shaped like the database's errors.
fn unprocessable(detail: impl Into<String>) -> ApiError {
    unprocessable_with_hint(detail, None)
}

fn unprocessable_with_hint(detail: impl Into<String>, hint: Option<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: json!({"detail": detail.into(), "sqlstate": "22023", "hint": hint}),
    }
}

/// A number the database could not hold: 422 with SQLSTATE 22003 (numeric_value_out_of_range).
fn out_of_range(detail: impl Into<String>) -> ApiError {
    out_of_range_with_hint(detail, None)
}

fn out_of_range_with_hint(detail: impl Into<String>, hint: Option<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: json!({"detail": detail.into(), "sqlstate": "22003", "hint": hint}),
    }
}

/// Refuses a body with a key the endpoint does not read: a misspelt key ("attributes" for
/// "user_attributes") would otherwise be ignored silently.
fn known_fields(body: &Value, fields: &[&str]) -> Result<(), ApiError> {
    let unknown: Vec<&str> = body
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .map(String::as_str)
        .filter(|k| !fields.contains(k))
        .collect();
    match unknown.first() {
        None => Ok(()),
        Some(k) => Err(unprocessable_with_hint(
            format!("unknown field \"{k}\" in the request body"),
            Some(format!("the fields are {}", fields.join(", "))),
        )),
    }
}

const STATUSES: [&str; 3] = ["draft", "running", "stopped"];

/// An experiment as named by a request: a number is an id, anything else a name; `?by=name`
/// reads an all-digit path segment as a name, `?by=id` insists on an id.
enum Experiment {
    Id(i64),
    Name(String),
}

impl Experiment {
    fn from_path(s: String, query: &HashMap<String, String>) -> Result<Self, ApiError> {
        no_nul("the experiment", &s)?;
        match query.get("by").map(String::as_str) {
            None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map(Experiment::Id).map_err(|_| {
                    out_of_range_with_hint(
                        format!("experiment id {s} is out of range"),
                        Some("ids are 64-bit integers; add ?by=name if it is a name".into()),
                    )
                })
            }
            None => Ok(s.parse().map(Experiment::Id).unwrap_or(Experiment::Name(s))),
            Some("name") => Ok(Experiment::Name(s)),
            Some("id") => s
                .parse()
                .map(Experiment::Id)
                .map_err(|_| unprocessable(format!("by=id needs a numeric experiment id, got \"{s}\""))),
            Some(other) => Err(unprocessable(format!("by must be id or name, got \"{other}\""))),
        }
    }

    /// From a body's "experiment_id" (a number, or a name) or "experiment_name".
    fn from_body(body: &Value) -> Result<Self, ApiError> {
        match (body.get("experiment_id"), body.get("experiment_name")) {
            (Some(Value::Number(n)), None) => n.as_i64().map(Experiment::Id).ok_or_else(|| {
                if n.to_string().bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                    out_of_range(format!("experiment_id {n} is out of range (ids are 64-bit integers)"))
                } else {
                    unprocessable("experiment_id must be an integer")
                }
            }),
            (Some(Value::String(s)), None) => no_nul("experiment_id", s).map(|_| Experiment::Name(s.clone())),
            (None, Some(Value::String(s))) => no_nul("experiment_name", s).map(|_| Experiment::Name(s.clone())),
            (Some(_), Some(_)) => Err(unprocessable("give experiment_id or experiment_name, not both")),
            (None, None) => Err(unprocessable("experiment_id (or experiment_name) is required")),
            _ => Err(unprocessable("experiment_id must be an integer or a name")),
        }
    }

    /// The SQL argument `$1` cast to pick the function's overload.
    fn arg(&self) -> &'static str {
        match self {
            Experiment::Id(_) => "$1::bigint",
            Experiment::Name(_) => "$1::text",
        }
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Experiment::Id(id) => id,
            Experiment::Name(name) => name,
        }
    }
}

/// Runs one statement as the request's role and returns its single row.
async fn run(
    app: &App,
    role: &Role,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<tokio_postgres::Row, ApiError> {
    let client = app.pool(role).get().await?;
    let statement = client.prepare_cached(sql).await?;
    // The role is set again after the statement, in the same round trip: whatever the code this
    // request ran did to the session's role does not carry over to the next request on this
    // connection, and a connection whose role cannot be set again is closed, never reused.
    let (row, reset) = tokio::join!(biased; client.query_one(&statement, params), client.batch_execute(&role.set));
    if reset.is_err() {
        drop(deadpool_postgres::Object::take(client));
    }
    Ok(row?)
}

/// Runs one statement and returns its single jsonb value.
async fn call(app: &App, role: &Role, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Value, ApiError> {
    Ok(run(app, role, sql, params).await?.get::<_, Option<Value>>(0).unwrap_or(Value::Null))
}

/// PostgreSQL text cannot hold a NUL: refuse it here rather than as an encoding error.
fn no_nul(name: &str, s: &str) -> Result<(), ApiError> {
    if s.contains('\0') {
        return Err(unprocessable(format!("{name} must not contain a NUL character")));
    }
    Ok(())
}

/// A JSON number as a float8, refused where float8 would not hold it: beyond its range
/// (1e400) or so small that it would read as 0 (1e-400), as PostgreSQL's float8in refuses them.
/// -0 is read as 0.
fn float8(name: &str, n: &Number) -> Result<f64, ApiError> {
    let text = n.to_string();
    let out_of_range_error = || out_of_range(format!("{name} {text} is out of range for type double precision"));
    let value: f64 = text.parse().map_err(|_| unprocessable(format!("{name} must be a number")))?;
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    if value.is_infinite() || (value == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b))) {
        return Err(out_of_range_error());
    }
    Ok(value + 0.0)
}

fn parse_body(bytes: &Bytes) -> Result<Value, ApiError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| unprocessable(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(unprocessable("request body must be a JSON object"));
    }
    Ok(value)
}

fn text_field<'a>(body: &'a Value, name: &str, required: bool) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) => no_nul(name, s).map(|_| Some(s.as_str())),
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(unprocessable(format!("{name} is required"))),
        Some(_) => Err(unprocessable(format!("{name} must be a string"))),
    }
}

async fn create_experiment(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| unprocessable("request body is not UTF-8"))?;
    // ab_get_experiment cannot be part of the same statement: it would not see the new row.
    let created = call(
        &app,
        &role,
        "SELECT jsonb_build_object('id', ab_create_experiment($1::text::jsonb), 'status', 'draft')",
        &[&text],
    )
    .await?;
    let location = format!("/api/v1/experiments/{}", created["id"]);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

async fn list_experiments(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let status = query.get("status").map(String::as_str);
    if let Some(s) = status {
        if !STATUSES.contains(&s) {
            return Err(unprocessable_with_hint(
                format!("status must be draft, running or stopped, got \"{s}\""),
                None,
            ));
        }
    }
    let list = call(
        &app,
        &role,
        "SELECT coalesce(jsonb_agg(to_jsonb(o) ORDER BY o.id), '[]') FROM ab_experiment_overview o \
         WHERE $1::text IS NULL OR o.status = $1",
        &[&status],
    )
    .await?;
    Ok(Json(list))
}

async fn get_experiment(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    Ok(Json(call(&app, &role, &format!("SELECT ab_get_experiment({})", e.arg()), &[e.param()]).await?))
}

async fn delete_experiment(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    run(&app, &role, &format!("SELECT ab_delete_experiment({})", e.arg()), &[e.param()]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_experiment(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    run(&app, &role, &format!("SELECT ab_start_experiment({})", e.arg()), &[e.param()]).await?;
    Ok(Json(json!({"status": "running"})))
}

async fn stop_experiment(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let declare_winner = match query.get("declare_winner").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => return Err(unprocessable(format!("declare_winner must be true or false, got \"{other}\""))),
    };
    let e = Experiment::from_path(id, &query)?;
    let sql = format!("SELECT ab_stop_experiment({}, $2)", e.arg());
    Ok(Json(call(&app, &role, &sql, &[e.param(), &declare_winner]).await?))
}

async fn get_variant(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    known_fields(&body, &["experiment_id", "experiment_name", "user_id", "user_attributes", "session_id"])?;
    let e = Experiment::from_body(&body)?;
    let user_id = text_field(&body, "user_id", true)?;
    let session_id = text_field(&body, "session_id", false)?;
    let attributes = match body.get("user_attributes") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => return Err(unprocessable("user_attributes must be a JSON object")),
    };
    let sql = format!("SELECT coalesce(ab_get_variant({}, $2, $3, $4), '{{\"variant\": null}}')", e.arg());
    Ok(Json(call(&app, &role, &sql, &[e.param(), &user_id, &attributes, &session_id]).await?))
}

async fn record_result(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    known_fields(&body, &["experiment_id", "experiment_name", "user_id", "metric_name", "metric_value", "session_id"])?;
    let e = Experiment::from_body(&body)?;
    let user_id = text_field(&body, "user_id", true)?;
    let metric_name = text_field(&body, "metric_name", true)?;
    let session_id = text_field(&body, "session_id", false)?;
    let metric_value = match body.get("metric_value") {
        Some(Value::Number(n)) => float8("metric_value", n)?,
        None | Some(Value::Null) => return Err(unprocessable("metric_value is required")),
        Some(_) => return Err(unprocessable("metric_value must be a number")),
    };
    let sql = format!("SELECT jsonb_build_object('recorded', ab_record_result({}, $2, $3, $4, $5))", e.arg());
    Ok(Json(call(&app, &role, &sql, &[e.param(), &metric_name, &metric_value, &user_id, &session_id]).await?))
}

async fn analyze(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let sql = format!("SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM ab_analyze({}) a", e.arg());
    Ok(Json(call(&app, &role, &sql, &[e.param()]).await?))
}

async fn summary(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let sql = format!("SELECT jsonb_build_object('summary', ab_summary({}))", e.arg());
    Ok(Json(call(&app, &role, &sql, &[e.param()]).await?))
}

const PAGE_CSP: &str =
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// A failed page: the API's error, shown as HTML with the same status.
fn html_error(e: ApiError) -> Response {
    let detail = e.body.get("detail").and_then(Value::as_str).unwrap_or("error").to_string();
    html(e.status, pages::error(e.status.as_u16(), &detail))
}

fn json_value(row: tokio_postgres::Row) -> Value {
    row.get::<_, Option<Value>>(0).unwrap_or(Value::Null)
}

async fn list_page(State(app): State<App>, Extension(role): Extension<Role>) -> Response {
    list_page_inner(app, role).await.unwrap_or_else(html_error)
}

async fn list_page_inner(app: App, role: Role) -> Result<Response, ApiError> {
    let mut client = app.pool(&role).get().await?;
    client.batch_execute(&role.set).await?;
    let mut tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let rows = json_value(
        tx.query_one(
            "SELECT coalesce(jsonb_agg(jsonb_build_object( \
               'id', o.id, 'name', o.name, 'status', o.status, 'type', o.experiment_type, \
               'primary_metric', o.primary_metric, 'users', o.users_assigned, 'winner', o.winner_variant, \
               'days_running', h.days_running, 'progress', h.sample_progress, 'srm_p', h.srm_p_value, \
               'layer', (SELECT l.name FROM ab_layer_experiments m JOIN ab_layers l ON l.id = m.layer_id \
                         WHERE m.experiment_id = o.id)) \
               ORDER BY o.id DESC), '[]') \
             FROM ab_experiment_overview o LEFT JOIN ab_experiment_health h ON h.id = o.id",
            &[],
        )
        .await?,
    );
    let mut rows = match rows {
        Value::Array(rows) => rows,
        _ => Vec::new(),
    };
    // Only the recommendation is shown: the summary need not look for interactions.
    tx.batch_execute("SET LOCAL ab_testing.summary_interactions = off").await?;
    // Each running experiment's recommendation, as ab_summary words it, in a savepoint of its
    // own: an experiment whose analysis fails (a source the role cannot read, a dropped table,
    // a value out of range, the statement timeout) shows its error; the others show as usual.
    for row in rows.iter_mut().filter(|r| r.get("status").and_then(Value::as_str) == Some("running")) {
        let id = row.get("id").and_then(Value::as_i64).unwrap_or(0);
        let sp = tx.savepoint("experiment").await?;
        match sp.query_one("SELECT substring(ab_summary($1::bigint) FROM 'Recommendation: ([^\n]*)')", &[&id]).await {
            Ok(r) => {
                row["recommendation"] = r.get::<_, Option<String>>(0).into();
                sp.commit().await?;
            }
            Err(e) => {
                let e = ApiError::from(e);
                if e.status == StatusCode::SERVICE_UNAVAILABLE {
                    return Err(e);
                }
                row["error"] = json!({"status": e.status.as_u16(), "detail": e.body.get("detail")});
                sp.rollback().await?;
            }
        }
    }
    // Nothing the analyses stored persists: the page writes nothing.
    tx.rollback().await?;
    Ok(html(StatusCode::OK, pages::list(&rows)))
}

async fn experiment_page(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    experiment_page_inner(app, role, id, query).await.unwrap_or_else(html_error)
}

async fn experiment_page_inner(
    app: App,
    role: Role,
    id: String,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let mut client = app.pool(&role).get().await?;
    client.batch_execute(&role.set).await?;
    // One read-only snapshot for every part of the page (it works on a standby too): the page
    // writes nothing.
    let mut tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let value = json_value;
    let definition = value(tx.query_one(&format!("SELECT ab_get_experiment({})", e.arg()), &[e.param()]).await?);
    let id = definition.get("id").and_then(Value::as_i64).unwrap_or(0);
    let health = match tx.query_opt("SELECT to_jsonb(h) FROM ab_experiment_health h WHERE h.id = $1", &[&id]).await? {
        Some(row) => value(row),
        None => Value::Null,
    };
    let analysis = value(
        tx.query_one("SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM ab_analyze($1::bigint) a", &[&id]).await?,
    );
    let summary: String = tx.query_one("SELECT ab_summary($1::bigint)", &[&id]).await?.get(0);
    // Funnel and retention metrics' own figures, asked for only where the experiment has such
    // metrics (an installation before 0.14.0 has neither the metrics nor the functions).
    let has = |key: &str| {
        definition.get("metrics").and_then(Value::as_object).is_some_and(|m| m.values().any(|d| d.get(key).is_some()))
    };
    let funnel = if has("funnel") {
        value(
            tx.query_one(
                "SELECT coalesce(jsonb_agg(to_jsonb(f) ORDER BY f.metric_name, f.step, NOT f.is_control, f.variant), '[]') \
                 FROM ab_funnel($1::bigint) f",
                &[&id],
            )
            .await?,
        )
    } else {
        Value::Array(vec![])
    };
    let retention = if has("retention") {
        value(
            tx.query_one(
                "SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.metric_name, NOT r.is_control, r.variant), '[]') \
                 FROM ab_retention($1::bigint) r",
                &[&id],
            )
            .await?,
        )
    } else {
        Value::Array(vec![])
    };
    let adjusted = adjusted_rows(&mut tx, &definition, id).await?;
    let primary = definition.get("primary_metric").and_then(Value::as_str).unwrap_or("").to_string();
    // The stored analyses are a panel of their own: where the role may not read them (on
    // Citus, a view over a reference table is checked against the role on the shard), the
    // page shows the rest.
    let history = {
        let sp = tx.savepoint("history").await?;
        let found = sp
            .query_one(
                "SELECT coalesce(jsonb_agg(jsonb_build_object('at', to_char(i.computed_at, 'YYYY-MM-DD HH24:MI:SS TZ'), \
               'variant', i.variant, 'diff', i.diff, 'ci_lower', i.ci_lower, 'ci_upper', i.ci_upper, \
               'p_value_adjusted', i.p_value_adjusted) ORDER BY i.computed_at, i.id), '[]') \
             FROM ab_insight_history i WHERE i.experiment_id = $1 AND i.metric_name = $2 AND NOT i.is_control \
             AND i.computed_at IN (SELECT DISTINCT computed_at FROM ab_insight_history \
                                   WHERE experiment_id = $1 ORDER BY computed_at DESC LIMIT 30)",
                &[&id, &primary],
            )
            .await;
        sp.rollback().await?;
        match found {
            Ok(row) => value(row),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
                Value::Array(vec![])
            }
            Err(e) => return Err(e.into()),
        }
    };
    // Interactions with other experiments and segments whose effect differs: panels of their
    // own, left out where the experiment has none to show (a bandit, no breakdowns).
    let mut findings = Vec::new();
    for function in ["ab_interactions", "ab_differential_impact"] {
        let sp = tx.savepoint("findings").await?;
        let found = sp
            .query_one(&format!("SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM {function}($1::bigint) a"), &[&id])
            .await;
        sp.rollback().await?;
        findings.push(match found {
            Ok(row) => Some(value(row)),
            Err(e)
                if matches!(
                    e.code(),
                    Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
                        | Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
                        | Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
                ) =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        });
    }
    tx.rollback().await?;
    let empty = Vec::new();
    let page = pages::experiment(&pages::Experiment {
        definition: &definition,
        health: &health,
        analysis: analysis.as_array().unwrap_or(&empty),
        summary: &summary,
        history: history.as_array().unwrap_or(&empty),
        interactions: findings[0].as_ref().and_then(Value::as_array).map(Vec::as_slice),
        segments: findings[1].as_ref().and_then(Value::as_array).map(Vec::as_slice),
        funnel: funnel.as_array().unwrap_or(&empty),
        retention: retention.as_array().unwrap_or(&empty),
        adjusted: adjusted.as_ref().and_then(Value::as_array).map(Vec::as_slice),
    });
    Ok(html(StatusCode::OK, page))
}

/// ab_adjusted's rows for the experiment page, asked for only where the experiment has
/// covariates or is cluster-randomized; None where they cannot be computed (too many strata)
/// or the role may not run it.
async fn adjusted_rows(
    tx: &mut tokio_postgres::Transaction<'_>,
    definition: &Value,
    id: i64,
) -> Result<Option<Value>, ApiError> {
    let clustered = definition.get("randomization_unit").is_some_and(|u| !u.is_null());
    let covariates = definition
        .get("metrics")
        .and_then(Value::as_object)
        .is_some_and(|m| m.values().any(|d| d.get("covariates").is_some()));
    if !clustered && !covariates {
        return Ok(None);
    }
    let sp = tx.savepoint("adjusted").await?;
    let found = sp
        .query_one(
            "SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.metric_name, NOT a.is_control, a.variant), '[]') \
             FROM ab_adjusted($1::bigint) a",
            &[&id],
        )
        .await;
    sp.rollback().await?;
    match found {
        Ok(row) => Ok(Some(json_value(row))),
        Err(e)
            if matches!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
                    | Some(&tokio_postgres::error::SqlState::PROGRAM_LIMIT_EXCEEDED)
                    | Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

async fn plot_svg(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let svg: String = run(&app, &role, &format!("SELECT ab_plot({})", e.arg()), &[e.param()]).await?.get(0);
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        svg,
    )
        .into_response())
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// `SELECT 1` on the health connection, as the login role (it reads nothing).
async fn health(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let client = app.0.health.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(Json(json!({"status": "ok"})))
}

/// `GET /login` shows the form; `GET /login?token=...` (a URL an operator opens once) logs in
/// as the form does.
async fn login(State(app): State<App>, headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    match query.get("token") {
        None => html(StatusCode::OK, pages::login(None)),
        Some(token) => log_in(&app, &headers, token),
    }
}

/// `POST /login` from the form (form-encoded: the only body that is not JSON; the guard lets
/// it through from the gateway's own origin only).
async fn login_form(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let form_type = header_str(&headers, header::CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if !form_type {
        return html(StatusCode::UNSUPPORTED_MEDIA_TYPE, pages::login(Some("Log in with the form.")));
    }
    let fields: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    match fields.get("token") {
        Some(token) => log_in(&app, &headers, token),
        None => html(StatusCode::UNPROCESSABLE_ENTITY, pages::login(Some("Give a token."))),
    }
}

/// Sets the browser's cookie and goes to the list. Only from the gateway's own pages or typed
/// in, never from another site (that would log the browser in as someone else).
fn log_in(app: &App, headers: &HeaderMap, token: &str) -> Response {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if !matches!(site, None | Some("none") | Some("same-origin")) {
        return html(StatusCode::FORBIDDEN, pages::login(Some("Log in from this gateway's own login page.")));
    }
    if app.0.tokens.role_for(token).is_none() {
        let mut r = html(StatusCode::UNAUTHORIZED, pages::login(Some("That token is not valid.")));
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(WWW_AUTHENTICATE_INVALID));
        return r;
    }
    let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200", auth::COOKIE);
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("token characters are checked"));
    r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const WWW_AUTHENTICATE: &str = "Bearer realm=\"ab-gateway\"";
const WWW_AUTHENTICATE_INVALID: &str = "Bearer realm=\"ab-gateway\", error=\"invalid_token\"";

/// Paths anyone may call: a load balancer's probe, the API's description, the login form.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/api/v1/openapi.json" | "/login")
}

/// The HTML pages (their refusals are pages too).
fn is_page(path: &str) -> bool {
    path == "/" || (path.starts_with("/experiments/") && !path.ends_with(".svg"))
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a request may use the cookie: only to read (GET), and only from the gateway's own
/// pages, typed in, or as a top-level navigation to a page from elsewhere (a link); never a
/// script's or a form's request from another origin, even a same-site one (another port).
fn cookie_usable(method: &Method, headers: &HeaderMap, path: &str) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    match header_str(headers, "sec-fetch-site") {
        None | Some("none") | Some("same-origin") => true,
        Some(_) => {
            is_page(path)
                && header_str(headers, "sec-fetch-mode") == Some("navigate")
                && header_str(headers, "sec-fetch-dest") == Some("document")
        }
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || header_str(headers, header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0")
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
}

/// Every request passes here before its handler: the Host allow-list (DNS rebinding), the
/// same-origin rule for requests that change something (cross-site requests), the token and
/// its role, and JSON-only bodies.
async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = header_str(headers, header::HOST)
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !auth::host_allowed(&app.0.allowed_hosts, &host) {
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "22023",
            format!("this gateway does not serve the host \"{}\"", host.escape_debug()),
            Some("add it to AB_GATEWAY_ALLOWED_HOSTS if it is a name of this gateway"),
        )
        .into_response();
    }
    let origin = header_str(headers, header::ORIGIN).map(str::to_string);
    let cors = origin.as_ref().filter(|o| app.0.cors_origins.contains(o)).cloned();
    let method = req.method().clone();
    if method == Method::OPTIONS {
        if let Some(origin) = cors {
            return (
                StatusCode::NO_CONTENT,
                [
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.as_str()),
                    (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"),
                    (header::ACCESS_CONTROL_ALLOW_HEADERS, "authorization, content-type"),
                    (header::ACCESS_CONTROL_MAX_AGE, "600"),
                    (header::VARY, "Origin"),
                ],
            )
                .into_response();
        }
    }
    let path = req.uri().path().to_string();
    let safe = method == Method::GET || method == Method::HEAD || method == Method::OPTIONS;
    if !safe && cors.is_none() {
        let cross = match &origin {
            Some(o) => !auth::same_origin(o, &host),
            None => matches!(header_str(headers, "sec-fetch-site"), Some("cross-site") | Some("same-site")),
        };
        if cross {
            return refusal(
                StatusCode::FORBIDDEN,
                "42501",
                format!("a {method} from another origin ({}) is refused", origin.as_deref().unwrap_or("unknown")),
                Some("only the gateway's own origin and AB_GATEWAY_CORS_ORIGINS may change anything"),
            )
            .into_response();
        }
    }
    if !is_public(&path) {
        let presented = header_str(headers, header::AUTHORIZATION);
        let token = match presented {
            Some(h) => auth::bearer(h),
            None if cookie_usable(&method, headers, &path) => {
                header_str(headers, header::COOKIE).and_then(auth::cookie_token)
            }
            None => None,
        };
        let role = token.and_then(|t| app.0.tokens.role_for(t));
        let Some(role) = role else {
            let challenge = if token.is_some() { WWW_AUTHENTICATE_INVALID } else { WWW_AUTHENTICATE };
            let detail = if token.is_some() { "the token is not valid" } else { "a token is required" };
            let mut r = if is_page(&path) {
                html(StatusCode::UNAUTHORIZED, pages::login(Some("Log in to see the results.")))
            } else {
                refusal(
                    StatusCode::UNAUTHORIZED,
                    "28000",
                    detail,
                    Some("send Authorization: Bearer <token>, a token of AB_GATEWAY_TOKENS_FILE"),
                )
                .into_response()
            };
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            return r;
        };
        let role = Role::new(role);
        if has_body(headers) && !is_json(header_str(headers, header::CONTENT_TYPE)) {
            let got = header_str(headers, header::CONTENT_TYPE).unwrap_or("none").to_string();
            return refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "22023",
                format!("request bodies must be application/json, not {}", got.escape_debug()),
                None,
            )
            .into_response();
        }
        req.extensions_mut().insert(role);
    }
    let mut response = next.run(req).await;
    if let Some(origin) = cors {
        if let Ok(v) = HeaderValue::from_str(&origin) {
            response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            response.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    response
}

fn router(app: App) -> Router {
    let experiments = "/api/v1/experiments/";
    Router::new()
        .route(experiments, post(create_experiment).get(list_experiments))
        .route("/api/v1/experiments", post(create_experiment).get(list_experiments))
        .route("/api/v1/experiments/get-variant", post(get_variant))
        .route("/api/v1/experiments/record-result", post(record_result))
        .route("/api/v1/experiments/{id}", get(get_experiment).delete(delete_experiment))
        .route("/api/v1/experiments/{id}/start", post(start_experiment))
        .route("/api/v1/experiments/{id}/stop", post(stop_experiment))
        .route("/api/v1/experiments/{id}/analyze", get(analyze))
        .route("/api/v1/experiments/{id}/summary", get(summary))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/login", get(login).post(login_form))
        .route("/", get(list_page))
        .route("/experiments/{id}", get(experiment_page))
        .route("/experiments/{id}/plot.svg", get(plot_svg))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// A pool of connections; with a role, each connection switches to it (`SET ROLE`) when it is
/// made (and `run` sets it again after each statement).
fn pool(config: tokio_postgres::Config, role: Option<&str>, size: usize, timeout: Duration) -> Result<Pool, String> {
    let manager =
        Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let mut builder = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout));
    if let Some(role) = role {
        let set: Arc<str> = format!("SET ROLE {}", auth::quote_ident(role)).into();
        builder = builder.post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
            let set = set.clone();
            Box::pin(async move { client.batch_execute(&set).await.map_err(deadpool_postgres::HookError::Backend) })
        }));
    }
    builder.build().map_err(|e| e.to_string())
}

/// A connection configuration with the gateway's session settings added to what the URL set.
fn with_timeouts(mut config: tokio_postgres::Config, statement_ms: u64) -> tokio_postgres::Config {
    let options = format!(
        "{} -c statement_timeout={statement_ms} -c idle_in_transaction_session_timeout={}",
        config.get_options().unwrap_or(""),
        statement_ms.max(1000) * 2
    );
    config.options(options.trim());
    if config.get_application_name().is_none() {
        config.application_name("ab-gateway");
    }
    config
}

/// Refuses to serve with a login role that could act without a token's role: a superuser,
/// or one that inherits a mapped role's privileges; and checks that it may switch to each.
async fn check_roles(pool: &Pool, roles: &[&str]) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| format!("cannot connect to the database: {e}"))?;
    let me = client
        .query_one("SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map_err(|e| e.to_string())?;
    let login: String = me.get(0);
    if me.get::<_, bool>(1) {
        return Err(format!(
            "the gateway logs in as \"{login}\", a superuser: log in as a NOINHERIT role that is a member of the mapped roles"
        ));
    }
    for role in roles {
        let row = client
            .query_opt(
                "SELECT rolsuper, pg_has_role(current_user, oid, 'MEMBER'), pg_has_role(current_user, oid, 'USAGE') \
                 FROM pg_roles WHERE rolname = $1",
                &[role],
            )
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = row else {
            return Err(format!("role \"{role}\" of a token does not exist"));
        };
        if row.get::<_, bool>(0) {
            return Err(format!(
                "role \"{role}\" of a token is a superuser: map tokens to roles with the ab_grant_* rights"
            ));
        }
        if !row.get::<_, bool>(1) {
            return Err(format!("\"{login}\" is not a member of role \"{role}\": GRANT \"{role}\" TO \"{login}\""));
        }
        if *role != login && row.get::<_, bool>(2) {
            return Err(format!(
                "\"{login}\" inherits the privileges of \"{role}\", so it could act without a token: ALTER ROLE \"{login}\" NOINHERIT \
                 (and grant the membership again on PostgreSQL 16 and later)"
            ));
        }
    }
    Ok(())
}

/// The tokens of AB_GATEWAY_TOKENS_FILE (which only its owner may read) and AB_GATEWAY_TOKENS.
fn load_tokens() -> Result<auth::Tokens, String> {
    let mut pairs = Vec::new();
    if let Ok(path) = std::env::var("AB_GATEWAY_TOKENS_FILE") {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&path).map_err(|e| format!("AB_GATEWAY_TOKENS_FILE {path}: {e}"))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!("AB_GATEWAY_TOKENS_FILE {path} may be read by other users: chmod 600 it"));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("AB_GATEWAY_TOKENS_FILE {path}: {e}"))?;
        pairs.extend(auth::Tokens::parse(&text, &path)?);
    }
    if let Ok(text) = std::env::var("AB_GATEWAY_TOKENS") {
        pairs.extend(auth::Tokens::parse(&text, "AB_GATEWAY_TOKENS")?);
    }
    let tokens = auth::Tokens::new(&pairs)?;
    if tokens.is_empty() {
        return Err(
            "no tokens: set AB_GATEWAY_TOKENS_FILE to a file of \"ROLE TOKEN\" lines (scripts/gateway.sh makes one)"
                .into(),
        );
    }
    Ok(tokens)
}

fn list_setting(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

#[tokio::main]
async fn main() {
    let fail = |e: String| -> ! {
        eprintln!("ab-gateway: {e}");
        std::process::exit(2)
    };
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let number = |name: &str, default: &str| -> u64 {
        env(name, default).parse().unwrap_or_else(|_| fail(format!("{name} must be a whole number")))
    };
    let url = env("AB_GATEWAY_DATABASE_URL", "host=/var/run/postgresql dbname=postgres");
    let listen = env("AB_GATEWAY_LISTEN", "127.0.0.1:8000");
    let size = number("AB_GATEWAY_POOL_SIZE", "16") as usize;
    let statement_ms = number("AB_GATEWAY_STATEMENT_TIMEOUT_MS", "30000");
    let pool_timeout = Duration::from_millis(number("AB_GATEWAY_POOL_TIMEOUT_MS", "5000"));
    let health_ms = number("AB_GATEWAY_HEALTH_TIMEOUT_MS", "2000");
    let tokens = load_tokens().unwrap_or_else(|e| fail(e));
    let config: tokio_postgres::Config = url.parse().unwrap_or_else(|e| fail(format!("AB_GATEWAY_DATABASE_URL: {e}")));
    let health = pool(with_timeouts(config.clone(), health_ms), None, 1, Duration::from_millis(health_ms))
        .unwrap_or_else(|e| fail(e));
    check_roles(&health, &tokens.roles()).await.unwrap_or_else(|e| fail(e));
    let pools = tokens
        .roles()
        .into_iter()
        .map(|role| {
            let p = pool(with_timeouts(config.clone(), statement_ms), Some(role), size, pool_timeout);
            (role.to_string(), p.unwrap_or_else(|e| fail(e)))
        })
        .collect();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| fail(format!("cannot listen on {listen}: {e}")));
    let addr = listener.local_addr().unwrap();
    let allowed_hosts = list_setting("AB_GATEWAY_ALLOWED_HOSTS").unwrap_or_else(|| auth::default_hosts(addr));
    let cors_origins = list_setting("AB_GATEWAY_CORS_ORIGINS").unwrap_or_default();
    eprintln!(
        "ab-gateway: listening on http://{addr} for hosts {}; the tokens' roles: {}",
        allowed_hosts.join(", "),
        tokens.roles().join(", ")
    );
    let app = App(Arc::new(AppInner { pools, health, tokens, allowed_hosts, cors_origins }));
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
            .filter(|(m, _)| m != "parameters")
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn json_numbers_become_float8_or_are_refused_as_postgresql_would() {
        let n = |t: &str| serde_json::from_str::<Number>(t).unwrap();
        assert_eq!(float8("v", &n("0.85")).unwrap(), 0.85);
        let zero = float8("v", &n("-0")).unwrap();
        assert!(zero == 0.0 && zero.is_sign_positive());
        assert_eq!(float8("v", &n("4.9e-324")).unwrap(), 4.9e-324);
        assert_eq!(float8("v", &n("0e-400")).unwrap(), 0.0);
        assert_eq!(float8("v", &n("123456789012345678901234567890")).unwrap(), 1.2345678901234568e29);
        for t in ["1e400", "-1e400", "1e-400", "-2.5e-330"] {
            let e = float8("v", &n(t)).unwrap_err();
            assert_eq!(e.body["sqlstate"], "22003", "{t}");
            assert!(e.body["detail"].as_str().unwrap().contains("out of range for type double precision"));
        }
    }

    #[test]
    fn nul_characters_are_refused() {
        assert!(no_nul("user_id", "u1").is_ok());
        let e = no_nul("user_id", "u\01").unwrap_err();
        assert_eq!(e.body["detail"], "user_id must not contain a NUL character");
        assert!(Experiment::from_path("a\0b".into(), &HashMap::new()).is_err());
        let e = Experiment::from_path("99999999999999999999".into(), &HashMap::new()).err().unwrap();
        assert_eq!(e.body["sqlstate"], "22003");
        let by_name = HashMap::from([("by".to_string(), "name".to_string())]);
        assert!(matches!(Experiment::from_path("99999999999999999999".into(), &by_name), Ok(Experiment::Name(_))));
    }

    #[test]
    fn the_cookie_reads_only_and_only_from_the_gateway_s_own_pages() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(cookie_usable(&Method::GET, &h(&[]), "/api/v1/experiments/"));
        assert!(cookie_usable(&Method::GET, &h(&[("sec-fetch-site", "same-origin")]), "/"));
        assert!(cookie_usable(&Method::GET, &h(&[("sec-fetch-site", "none")]), "/experiments/1"));
        let link =
            h(&[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate"), ("sec-fetch-dest", "document")]);
        assert!(cookie_usable(&Method::GET, &link, "/experiments/1"));
        assert!(!cookie_usable(&Method::GET, &link, "/api/v1/experiments/1/analyze"));
        let script = h(&[("sec-fetch-site", "same-site"), ("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")]);
        assert!(!cookie_usable(&Method::GET, &script, "/"));
        assert!(!cookie_usable(&Method::POST, &h(&[("sec-fetch-site", "same-origin")]), "/api/v1/experiments/"));
        assert!(!cookie_usable(&Method::DELETE, &h(&[]), "/api/v1/experiments/1"));
    }

    #[test]
    fn bodies_must_be_json() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/x-www-form-urlencoded")));
        assert!(!is_json(Some("application/jsonx")));
        assert!(!is_json(None));
        let mut h = HeaderMap::new();
        assert!(!has_body(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!has_body(&h));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert!(has_body(&h));
    }

    #[test]
    fn sqlstates_map_to_statuses() {
        assert_eq!(status_for("42704"), StatusCode::NOT_FOUND);
        assert_eq!(status_for("22023"), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("22P02"), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("55000"), StatusCode::CONFLICT);
        assert_eq!(status_for("42501"), StatusCode::FORBIDDEN);
        assert_eq!(status_for("22P05"), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("57014"), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status_for("57P01"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_for("XX000"), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn experiments_by_id_or_name() {
        let by = |v: &str| HashMap::from([("by".to_string(), v.to_string())]);
        let none = HashMap::new();
        assert!(matches!(Experiment::from_path("42".into(), &none), Ok(Experiment::Id(42))));
        assert!(matches!(Experiment::from_path("Lead Qualification".into(), &none), Ok(Experiment::Name(_))));
        assert!(matches!(Experiment::from_path("2024".into(), &by("name")), Ok(Experiment::Name(n)) if n == "2024"));
        assert!(matches!(Experiment::from_path("42".into(), &by("id")), Ok(Experiment::Id(42))));
        assert!(Experiment::from_path("x".into(), &by("id")).is_err());
        assert!(Experiment::from_path("42".into(), &by("slug")).is_err());
        assert!(matches!(Experiment::from_body(&json!({"experiment_id": 7})).unwrap(), Experiment::Id(7)));
        assert!(matches!(Experiment::from_body(&json!({"experiment_id": "x"})).unwrap(), Experiment::Name(_)));
        assert!(matches!(Experiment::from_body(&json!({"experiment_name": "x"})).unwrap(), Experiment::Name(_)));
        assert!(Experiment::from_body(&json!({})).is_err());
        assert!(Experiment::from_body(&json!({"experiment_id": 1.5})).is_err());
        assert!(Experiment::from_body(&json!({"experiment_id": 1, "experiment_name": "x"})).is_err());
    }
}
