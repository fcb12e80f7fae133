//! An MLflow-like tracking server in memory, for `pfsync demo` on a machine without MLflow: the four
//! endpoints of MLflow's REST API that metric rules use (`runs/get`, `runs/search` by experiment,
//! `metrics/get-history`, `runs/set-tag`), answered as MLflow answers them. The tests use a real MLflow
//! server (`tests/it/mlflow_server.rs`); this stub only lets the demo show a rule firing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

#[derive(Default)]
struct Run {
    experiment_id: String,
    start_time: i64,
    tags: BTreeMap<String, String>,
    metrics: HashMap<String, Vec<(f64, i64, i64)>>,
}

#[derive(Default)]
struct Store {
    runs: BTreeMap<String, Run>,
    next: u64,
}

type Shared = Arc<Mutex<Store>>;

/// A running stub; stopped when dropped.
pub struct MlflowStub {
    pub url: String,
    store: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MlflowStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": what}))).into_response()
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_json(id: &str, r: &Run) -> Value {
    let tags: Vec<Value> = r.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    json!({"info": {"run_id": id, "run_uuid": id, "experiment_id": r.experiment_id, "status": "FINISHED",
                    "lifecycle_stage": "active", "start_time": r.start_time},
           "data": {"tags": tags}})
}

async fn runs_get(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let id = q.get("run_id").cloned().unwrap_or_default();
    let store = lock(&s);
    match store.runs.get(&id) {
        Some(r) => Json(json!({ "run": run_json(&id, r) })).into_response(),
        None => not_found(&format!("Run with id={id} not found")),
    }
}

async fn history(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let id = q.get("run_id").cloned().unwrap_or_default();
    let key = q.get("metric_key").cloned().unwrap_or_default();
    let store = lock(&s);
    let Some(r) = store.runs.get(&id) else { return not_found(&format!("Run with id={id} not found")) };
    let points: Vec<Value> = r
        .metrics
        .get(&key)
        .into_iter()
        .flatten()
        .map(|(v, step, ts)| json!({"key": key, "value": v, "step": step, "timestamp": ts}))
        .collect();
    Json(json!({ "metrics": points })).into_response()
}

async fn search(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    // The one clause pfsync adds to every search (runs started since); any other filter is refused.
    let filter = body["filter"].as_str().unwrap_or("").trim();
    let since = match filter.strip_prefix("attributes.start_time >= ").map(|n| n.trim().parse::<i64>()) {
        _ if filter.is_empty() => i64::MIN,
        Some(Ok(ms)) => ms,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "the demo stub takes no filter"})),
            )
                .into_response();
        }
    };
    let ids: Vec<String> = body["experiment_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let store = lock(&s);
    let runs: Vec<Value> = store
        .runs
        .iter()
        .filter(|(_, r)| ids.contains(&r.experiment_id) && r.start_time >= since)
        .map(|(id, r)| run_json(id, r))
        .collect();
    Json(json!({ "runs": runs })).into_response()
}

async fn set_tag(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let id = body["run_id"].as_str().unwrap_or_default().to_string();
    let (Some(k), Some(v)) = (body["key"].as_str(), body["value"].as_str()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "key, value"})),
        )
            .into_response();
    };
    let mut store = lock(&s);
    match store.runs.get_mut(&id) {
        Some(r) => {
            r.tags.insert(k.to_string(), v.to_string());
            Json(json!({})).into_response()
        }
        None => not_found(&format!("Run with id={id} not found")),
    }
}

impl MlflowStub {
    /// Serve on 127.0.0.1, a free port.
    pub async fn start() -> std::io::Result<MlflowStub> {
        let store: Shared = Arc::default();
        let app = Router::new()
            .route("/api/2.0/mlflow/runs/get", get(runs_get))
            .route("/api/2.0/mlflow/metrics/get-history", get(history))
            .route("/api/2.0/mlflow/runs/search", post(search))
            .route("/api/2.0/mlflow/runs/set-tag", post(set_tag))
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MlflowStub { url, store, task })
    }

    /// A new run in `experiment_id` with `values` logged for `key` at steps 0, 1, ... a second apart; its id.
    pub fn log_run(&self, experiment_id: &str, key: &str, values: &[f64]) -> String {
        let mut store = lock(&self.store);
        store.next += 1;
        let id = format!("{:032x}", 0xde40_0000_u64 + store.next);
        let t0 = chrono::Utc::now().timestamp_millis() - 60_000;
        let points = values.iter().enumerate().map(|(i, v)| (*v, i as i64, t0 + 1000 * i as i64)).collect();
        let run = Run {
            experiment_id: experiment_id.into(),
            start_time: t0,
            tags: BTreeMap::new(),
            metrics: HashMap::from([(key.to_string(), points)]),
        };
        store.runs.insert(id.clone(), run);
        id
    }

    /// A run's tags.
    pub fn tags(&self, run_id: &str) -> BTreeMap<String, String> {
        lock(&self.store).runs.get(run_id).map(|r| r.tags.clone()).unwrap_or_default()
    }
}
