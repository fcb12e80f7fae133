//! Databricks-hosted MLflow, as its documentation describes it, in front of the real MLflow server: a
//! workspace URL (`DATABRICKS_HOST`) that answers the MLflow REST API 2.0 under `/api/2.0/mlflow/` only to a
//! personal access token sent as `Authorization: Bearer` (`DATABRICKS_TOKEN`), 401 otherwise; runs whose
//! artifacts live in DBFS (`dbfs:/databricks/mlflow-tracking/...`), with no `mlflow-artifacts` proxy
//! (404 `ENDPOINT_NOT_FOUND`). Everything else is the real server's answer, forwarded unchanged.
//!
//! No Databricks workspace can be reached from here; this stands for the documented behaviour (README,
//! "What is tested where").

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request the workspace saw: method, path, whether it carried the token.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorized: bool,
}

#[derive(Clone)]
struct Workspace {
    upstream: String,
    token: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    http: reqwest::Client,
}

pub struct DatabricksMlflow {
    /// `http://127.0.0.1:PORT`: what `DATABRICKS_HOST` is set to.
    pub host: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl DatabricksMlflow {
    /// A workspace on a free loopback port that accepts `token`, in front of the MLflow server at `upstream`.
    pub async fn start(upstream: &str, token: &str) -> DatabricksMlflow {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Workspace {
            upstream: upstream.trim_end_matches('/').to_string(),
            token: token.to_string(),
            seen: seen.clone(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        DatabricksMlflow { host, seen, _server: server }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error_code": code, "message": message }))).into_response()
}

async fn handle(State(w): State<Workspace>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", w.token));
    w.seen.lock().unwrap().push(Seen { method: method.to_string(), path: path.clone(), authorized });
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Credential was not sent or was of an unsupported type for this API.",
        );
    }
    if !path.starts_with("/api/2.0/mlflow/") {
        return error(StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND", &format!("No API found for '{method} {path}'"));
    }
    let url = format!("{}{}", w.upstream, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut req = w.http.request(method, &url).body(body);
    if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
        req = req.header(reqwest::header::CONTENT_TYPE, ct.as_bytes());
    }
    let Ok(resp) = req.send().await else {
        return error(StatusCode::BAD_GATEWAY, "TEMPORARILY_UNAVAILABLE", "the tracking store did not answer");
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = resp.bytes().await.unwrap_or_default();
    // Runs of a workspace keep their artifacts in DBFS, which a REST client cannot write through MLflow.
    if path.ends_with("/runs/get")
        && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        let info = &mut v["run"]["info"];
        let (exp, run) = (info["experiment_id"].as_str().unwrap_or("0"), info["run_id"].as_str().unwrap_or(""));
        let dbfs = format!("dbfs:/databricks/mlflow-tracking/{exp}/{run}/artifacts");
        info["artifact_uri"] = serde_json::Value::String(dbfs);
        return (status, axum::Json(v)).into_response();
    }
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}
