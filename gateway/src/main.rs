//! ab-gateway: the original A/B testing REST API, served over the ab_testing extension.
//!
//! Every endpoint is one call of one of the extension's SQL functions. The gateway adds no
//! logic of its own, only HTTP: it reads JSON, passes it on, returns what the function
//! returned, and maps SQLSTATEs to status codes (see `status_for`).
//!
//! It also serves the results pages (`pages.rs`): `/` lists the experiments and
//! `/experiments/{id}` shows one, as HTML, read-only.
//!
//! Settings (environment): AB_GATEWAY_DATABASE_URL (a libpq-style connection string, default
//! "host=/var/run/postgresql dbname=postgres"), AB_GATEWAY_LISTEN (default 127.0.0.1:8000),
//! AB_GATEWAY_POOL_SIZE (default 16 connections).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;

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

type Db = Pool;

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
        // (malformed JSON), null_value_not_allowed, check_violation, numeric_value_out_of_range
        "22023" | "22P02" | "22004" | "23514" | "22003" | "54000" => StatusCode::UNPROCESSABLE_ENTITY,
        // duplicate names, wrong lifecycle state, full layer, lost races
        "42710" | "23505" | "55000" | "55006" | "40001" | "40P01" => StatusCode::CONFLICT,
        "42501" => StatusCode::FORBIDDEN,
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
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({"detail": format!("database unavailable: {e}")}),
        }
    }
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
        match query.get("by").map(String::as_str) {
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
            (Some(Value::Number(n)), None) => {
                n.as_i64().map(Experiment::Id).ok_or_else(|| unprocessable("experiment_id must be an integer"))
            }
            (Some(Value::String(s)), None) | (None, Some(Value::String(s))) => Ok(Experiment::Name(s.clone())),
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

/// Runs one statement and returns its single row.
async fn run(db: &Db, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<tokio_postgres::Row, ApiError> {
    let client = db.get().await?;
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_one(&statement, params).await?)
}

/// Runs one statement and returns its single jsonb value.
async fn call(db: &Db, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Value, ApiError> {
    Ok(run(db, sql, params).await?.get::<_, Option<Value>>(0).unwrap_or(Value::Null))
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
        Some(Value::String(s)) => Ok(Some(s)),
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(unprocessable(format!("{name} is required"))),
        Some(_) => Err(unprocessable(format!("{name} must be a string"))),
    }
}

async fn create_experiment(State(db): State<Db>, body: Bytes) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body).map_err(|_| unprocessable("request body is not UTF-8"))?;
    // ab_get_experiment cannot be part of the same statement: it would not see the new row.
    let created = call(
        &db,
        "SELECT jsonb_build_object('id', ab_create_experiment($1::text::jsonb), 'status', 'draft')",
        &[&text],
    )
    .await?;
    let location = format!("/api/v1/experiments/{}", created["id"]);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

async fn list_experiments(
    State(db): State<Db>,
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
        &db,
        "SELECT coalesce(jsonb_agg(to_jsonb(o) ORDER BY o.id), '[]') FROM ab_experiment_overview o \
         WHERE $1::text IS NULL OR o.status = $1",
        &[&status],
    )
    .await?;
    Ok(Json(list))
}

async fn get_experiment(
    State(db): State<Db>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    Ok(Json(call(&db, &format!("SELECT ab_get_experiment({})", e.arg()), &[e.param()]).await?))
}

async fn delete_experiment(
    State(db): State<Db>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    run(&db, &format!("SELECT ab_delete_experiment({})", e.arg()), &[e.param()]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_experiment(
    State(db): State<Db>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    run(&db, &format!("SELECT ab_start_experiment({})", e.arg()), &[e.param()]).await?;
    Ok(Json(json!({"status": "running"})))
}

async fn stop_experiment(
    State(db): State<Db>,
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
    Ok(Json(call(&db, &sql, &[e.param(), &declare_winner]).await?))
}

async fn get_variant(State(db): State<Db>, body: Bytes) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(call(&db, &sql, &[e.param(), &user_id, &attributes, &session_id]).await?))
}

async fn record_result(State(db): State<Db>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = parse_body(&body)?;
    known_fields(&body, &["experiment_id", "experiment_name", "user_id", "metric_name", "metric_value", "session_id"])?;
    let e = Experiment::from_body(&body)?;
    let user_id = text_field(&body, "user_id", true)?;
    let metric_name = text_field(&body, "metric_name", true)?;
    let session_id = text_field(&body, "session_id", false)?;
    let metric_value = match body.get("metric_value") {
        Some(Value::Number(n)) => n.as_f64(),
        None | Some(Value::Null) => return Err(unprocessable("metric_value is required")),
        Some(_) => return Err(unprocessable("metric_value must be a number")),
    };
    let sql = format!("SELECT jsonb_build_object('recorded', ab_record_result({}, $2, $3, $4, $5))", e.arg());
    Ok(Json(call(&db, &sql, &[e.param(), &metric_name, &metric_value, &user_id, &session_id]).await?))
}

async fn analyze(
    State(db): State<Db>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let sql = format!("SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM ab_analyze({}) a", e.arg());
    Ok(Json(call(&db, &sql, &[e.param()]).await?))
}

async fn summary(
    State(db): State<Db>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let sql = format!("SELECT jsonb_build_object('summary', ab_summary({}))", e.arg());
    Ok(Json(call(&db, &sql, &[e.param()]).await?))
}

const PAGE_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'";

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
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

async fn list_page(State(db): State<Db>) -> Response {
    // For running experiments, the recommendation of the winner rule as ab_summary words it
    // (one analysis per running experiment).
    let rows = call(
        &db,
        "SELECT coalesce(jsonb_agg(jsonb_build_object( \
           'id', o.id, 'name', o.name, 'status', o.status, 'type', o.experiment_type, \
           'primary_metric', o.primary_metric, 'users', o.users_assigned, 'winner', o.winner_variant, \
           'days_running', h.days_running, 'progress', h.sample_progress, 'srm_p', h.srm_p_value, \
           'layer', (SELECT l.name FROM ab_layer_experiments m JOIN ab_layers l ON l.id = m.layer_id \
                     WHERE m.experiment_id = o.id), \
           'recommendation', CASE WHEN o.status = 'running' \
                             THEN substring(ab_summary(o.id) FROM 'Recommendation: ([^\n]*)') END) \
           ORDER BY o.id DESC), '[]') \
         FROM ab_experiment_overview o LEFT JOIN ab_experiment_health h ON h.id = o.id",
        &[],
    )
    .await;
    match rows {
        Ok(Value::Array(rows)) => html(StatusCode::OK, pages::list(&rows)),
        Ok(_) => html(StatusCode::OK, pages::list(&[])),
        Err(e) => html_error(e),
    }
}

async fn experiment_page(
    State(db): State<Db>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    experiment_page_inner(db, id, query).await.unwrap_or_else(html_error)
}

async fn experiment_page_inner(db: Db, id: String, query: HashMap<String, String>) -> Result<Response, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let mut client = db.get().await?;
    // One snapshot for every part of the page; rolled back, so that ab_analyze's stored rows
    // do not persist: the page writes nothing.
    let tx = client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
    let value = |row: tokio_postgres::Row| row.get::<_, Option<Value>>(0).unwrap_or(Value::Null);
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
    let primary = definition.get("primary_metric").and_then(Value::as_str).unwrap_or("").to_string();
    let history = value(
        tx.query_one(
            "SELECT coalesce(jsonb_agg(jsonb_build_object('at', to_char(i.computed_at, 'YYYY-MM-DD HH24:MI:SS TZ'), \
               'variant', i.variant, 'diff', i.diff, 'ci_lower', i.ci_lower, 'ci_upper', i.ci_upper, \
               'p_value_adjusted', i.p_value_adjusted) ORDER BY i.computed_at, i.id), '[]') \
             FROM ab_insights i WHERE i.experiment_id = $1 AND i.metric_name = $2 AND NOT i.is_control \
             AND i.computed_at IN (SELECT DISTINCT computed_at FROM ab_insights \
                                   WHERE experiment_id = $1 ORDER BY computed_at DESC LIMIT 30)",
            &[&id, &primary],
        )
        .await?,
    );
    tx.rollback().await?;
    let empty = Vec::new();
    let page = pages::experiment(&pages::Experiment {
        definition: &definition,
        health: &health,
        analysis: analysis.as_array().unwrap_or(&empty),
        summary: &summary,
        history: history.as_array().unwrap_or(&empty),
    });
    Ok(html(StatusCode::OK, page))
}

async fn plot_svg(
    State(db): State<Db>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let e = Experiment::from_path(id, &query)?;
    let svg: String = run(&db, &format!("SELECT ab_plot({})", e.arg()), &[e.param()]).await?.get(0);
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

async fn health(State(db): State<Db>) -> Result<Json<Value>, ApiError> {
    run(&db, "SELECT 1", &[]).await?;
    Ok(Json(json!({"status": "ok"})))
}

pub fn router(db: Db) -> Router {
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
        .route("/", get(list_page))
        .route("/experiments/{id}", get(experiment_page))
        .route("/experiments/{id}/plot.svg", get(plot_svg))
        .with_state(db)
}

fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| format!("AB_GATEWAY_DATABASE_URL: {e}"))?;
    let manager =
        Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager).max_size(size).build().map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let url = env("AB_GATEWAY_DATABASE_URL", "host=/var/run/postgresql dbname=postgres");
    let listen = env("AB_GATEWAY_LISTEN", "127.0.0.1:8000");
    let size = env("AB_GATEWAY_POOL_SIZE", "16").parse().unwrap_or_else(|_| {
        eprintln!("ab-gateway: AB_GATEWAY_POOL_SIZE must be a number");
        std::process::exit(2)
    });
    let db = pool(&url, size).unwrap_or_else(|e| {
        eprintln!("ab-gateway: {e}");
        std::process::exit(2)
    });
    let listener = tokio::net::TcpListener::bind(&listen).await.unwrap_or_else(|e| {
        eprintln!("ab-gateway: cannot listen on {listen}: {e}");
        std::process::exit(2)
    });
    eprintln!("ab-gateway: listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, router(db))
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
    fn sqlstates_map_to_statuses() {
        assert_eq!(status_for("42704"), StatusCode::NOT_FOUND);
        assert_eq!(status_for("22023"), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("22P02"), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_for("55000"), StatusCode::CONFLICT);
        assert_eq!(status_for("42501"), StatusCode::FORBIDDEN);
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
