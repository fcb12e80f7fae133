//! MLflow's tracking REST API (`/api/2.0/mlflow/...`), as much of it as metric rules need: a run, a search
//! of an experiment's runs, a metric's history, and setting a tag. The same paths serve open-source MLflow
//! (`MLFLOW_TRACKING_URI`, optional `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME`/`PASSWORD`) and
//! Databricks-hosted MLflow (`DATABRICKS_HOST` + `DATABRICKS_TOKEN`). Tokens and passwords never reach a
//! message: `Debug` shows which kind of credential is set, not its text.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    #[error("MLflow is not configured: set MLFLOW_TRACKING_URI (or DATABRICKS_HOST and DATABRICKS_TOKEN)")]
    NotConfigured,
    #[error("MLflow tracking URI {0}")]
    BadUrl(String),
    #[error("MLflow {path}: {message}")]
    Request { path: String, message: String },
    /// The server answered that the thing asked for does not exist (a run id nobody logged).
    #[error("MLflow {path}: {message}")]
    NotFound { path: String, message: String },
    /// Any other 4xx: the request is wrong, not the moment (a bad filter string, no permission).
    #[error("MLflow {path} refused the request ({status}): {message}")]
    Refused { path: String, status: u16, message: String },
}

impl MlflowError {
    /// Is the rule at fault (a run that does not exist, a filter MLflow refuses) rather than the server?
    pub fn is_rule_error(&self) -> bool {
        matches!(self, MlflowError::NotFound { .. } | MlflowError::Refused { status: 400, .. })
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// Where the tracking server is and how to authenticate to it.
#[derive(Clone)]
pub struct MlflowConfig {
    /// Base URL; requests go to `<base>/api/2.0/mlflow/...`.
    pub base: Url,
    auth: Auth,
    pub timeout: Duration,
    /// `[http] proxy`: used for https to another machine only (see `http::outbound`).
    pub proxy: Option<Url>,
}

impl fmt::Debug for MlflowConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            Auth::None => "none",
            Auth::Bearer(_) => "token ***",
            Auth::Basic(..) => "basic ***",
        };
        f.debug_struct("MlflowConfig")
            .field("base", &self.base.as_str())
            .field("auth", &auth)
            .field("proxy", &self.proxy.as_ref().map(crate::http::shown))
            .finish()
    }
}

impl MlflowConfig {
    /// From the environment MLflow's own clients read: `MLFLOW_TRACKING_URI` first (with
    /// `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`), else
    /// `DATABRICKS_HOST` with `DATABRICKS_TOKEN`. A tracking URI of `databricks` means the latter too.
    pub fn from_env() -> Result<MlflowConfig, MlflowError> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<MlflowConfig, MlflowError> {
        let uri = var("MLFLOW_TRACKING_URI");
        let databricks = match uri.as_deref() {
            None => var("DATABRICKS_HOST").is_some(),
            Some(u) => u.trim() == "databricks",
        };
        if databricks {
            let host = var("DATABRICKS_HOST").ok_or(MlflowError::NotConfigured)?;
            let host = if host.contains("://") { host } else { format!("https://{host}") };
            let token = var("DATABRICKS_TOKEN")
                .ok_or_else(|| MlflowError::BadUrl("DATABRICKS_HOST is set but DATABRICKS_TOKEN is not".into()))?;
            return MlflowConfig::new(&host, Auth::Bearer(token.trim().to_string()));
        }
        let uri = uri.ok_or(MlflowError::NotConfigured)?;
        let auth = match (var("MLFLOW_TRACKING_TOKEN"), var("MLFLOW_TRACKING_USERNAME")) {
            (Some(t), _) => Auth::Bearer(t.trim().to_string()),
            (None, Some(u)) => Auth::Basic(u, var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default()),
            (None, None) => Auth::None,
        };
        MlflowConfig::new(&uri, auth)
    }

    fn new(base: &str, auth: Auth) -> Result<MlflowConfig, MlflowError> {
        let shown = crate::http::shown_text(base.trim());
        let mut url = Url::parse(base.trim()).map_err(|e| MlflowError::BadUrl(format!("{shown:?}: {e}")))?;
        crate::http::check_url(&url).map_err(|e| MlflowError::BadUrl(e.to_string()))?;
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(MlflowConfig { base: url, auth, timeout: Duration::from_secs(30), proxy: None })
    }
}

/// What pfsync reads of a run.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub tags: HashMap<String, String>,
    pub artifact_uri: Option<String>,
    /// `active` or `deleted` (a deleted run never counts toward a rule).
    pub lifecycle_stage: Option<String>,
    /// Milliseconds since the epoch, as the client that created the run said.
    pub start_time_ms: Option<i64>,
}

impl RunInfo {
    fn from_json(info: &Value, data: &Value) -> RunInfo {
        let mut tags = HashMap::new();
        for t in data["tags"].as_array().into_iter().flatten() {
            if let (Some(k), Some(val)) = (t["key"].as_str(), t["value"].as_str()) {
                tags.insert(k.to_string(), val.to_string());
            }
        }
        RunInfo {
            tags,
            artifact_uri: info["artifact_uri"].as_str().map(str::to_string),
            lifecycle_stage: info["lifecycle_stage"].as_str().map(str::to_string),
            start_time_ms: num(&info["start_time"]),
        }
    }

    /// Deleted runs (MLflow's trash) never count; a server that does not say is taken at its word that
    /// the run is there.
    pub fn is_active(&self) -> bool {
        self.lifecycle_stage.as_deref().is_none_or(|s| s == "active")
    }
}

/// One run of a search: its id and what decides whether it counts.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: String,
    pub info: RunInfo,
}

/// One page of a listing, and the token of the next one (`None`: the last page).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// One logged value of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub value: f64,
    pub step: i64,
    /// Milliseconds since the epoch, as the client logged it.
    pub timestamp_ms: i64,
}

/// A tracking-server client. Requests that fail on the way (connection, 5xx, 429) are tried a few times.
#[derive(Clone)]
pub struct MlflowClient {
    http: reqwest::Client,
    cfg: MlflowConfig,
}

impl fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cfg.fmt(f)
    }
}

const ATTEMPTS: u32 = 4;

impl MlflowClient {
    pub fn new(cfg: MlflowConfig) -> Result<MlflowClient, MlflowError> {
        // No proxy from the environment, no redirects: either could carry the token elsewhere.
        let http = crate::http::client_builder(&cfg.base, cfg.proxy.as_ref(), cfg.timeout, Duration::from_secs(10))
            .and_then(|b| b.build().map_err(|e| crate::http::HttpError::BadSetting(e.to_string())))
            .map_err(|e| MlflowError::BadUrl(format!("cannot build the HTTP client: {e}")))?;
        Ok(MlflowClient { http, cfg })
    }

    pub fn base(&self) -> &Url {
        &self.cfg.base
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, MlflowError> {
        let body = body.map(|b| (b.to_string(), "application/json"));
        self.request(method, &format!("api/2.0/mlflow/{path}"), path, query, body).await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        rel: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<(String, &str)>,
    ) -> Result<Value, MlflowError> {
        let url = self.cfg.base.join(rel).map_err(|e| MlflowError::BadUrl(e.to_string()))?;
        let fail = |message: String| MlflowError::Request { path: path.to_string(), message };
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = self.http.request(method.clone(), url.clone()).query(query);
            req = match &self.cfg.auth {
                Auth::None => req,
                Auth::Bearer(t) => req.bearer_auth(t),
                Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            };
            if let Some((b, content_type)) = &body {
                req = req.header(reqwest::header::CONTENT_TYPE, *content_type).body(b.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    // reqwest's error text names the URL, which holds no credential (checked at start).
                    last = format!("request failed: {e}");
                    continue;
                }
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_str(&text).map_err(|e| fail(format!("answer is not JSON: {e}")));
            }
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = v["error_code"].as_str().unwrap_or("").to_string();
            let message: String =
                v["message"].as_str().map(str::to_string).unwrap_or_else(|| text.chars().take(300).collect());
            if status.as_u16() == 404 || code == "RESOURCE_DOES_NOT_EXIST" {
                return Err(MlflowError::NotFound { path: path.into(), message });
            }
            if status.is_client_error() && status.as_u16() != 429 {
                return Err(MlflowError::Refused {
                    path: path.into(),
                    status: status.as_u16(),
                    message: format!("{code} {message}"),
                });
            }
            last = format!("{status}: {code} {message}");
        }
        Err(fail(format!("{last} (after {ATTEMPTS} attempts)")))
    }

    /// A run's tags, artifact location, lifecycle stage and start time (`runs/get`).
    pub async fn run(&self, run_id: &str) -> Result<RunInfo, MlflowError> {
        let v = self.call(reqwest::Method::GET, "runs/get", &[("run_id", run_id.to_string())], None).await?;
        Ok(RunInfo::from_json(&v["run"]["info"], &v["run"]["data"]))
    }

    /// Write a small text artifact into a run, where the server serves artifacts itself (an artifact URI
    /// `mlflow-artifacts:/...`, the tracking server's proxy). Elsewhere (a bucket or DBFS the client would
    /// write to directly) nothing is written: returns false.
    pub async fn put_artifact(&self, run: &RunInfo, name: &str, text: String) -> Result<bool, MlflowError> {
        let Some(uri) = run.artifact_uri.as_deref().and_then(|u| u.strip_prefix("mlflow-artifacts:")) else {
            return Ok(false);
        };
        // `mlflow-artifacts:/1/<run>/artifacts` or `mlflow-artifacts://host:port/1/<run>/artifacts`.
        let path = match uri.strip_prefix("//") {
            Some(rest) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
            None => uri.trim_start_matches('/'),
        };
        if path.is_empty() || path.split('/').any(|p| p == ".." || p.is_empty()) || name.contains('/') {
            return Ok(false);
        }
        let rel = format!("api/2.0/mlflow-artifacts/artifacts/{path}/{name}");
        self.request(reqwest::Method::PUT, &rel, "mlflow-artifacts", &[], Some((text, "application/json")))
            .await
            .map(|_| true)
    }

    /// One page of an experiment's active runs that match `filter` (`runs/search`), oldest first. Deleted
    /// runs are asked to be left out (`ACTIVE_ONLY`, also MLflow's default), and each run says its stage.
    pub async fn search_runs_page(
        &self,
        experiment_id: &str,
        filter: Option<&str>,
        page_token: Option<&str>,
    ) -> Result<Page<RunSummary>, MlflowError> {
        let mut body = json!({
            "experiment_ids": [experiment_id],
            "max_results": 1000,
            "order_by": ["attributes.start_time ASC"],
            "run_view_type": "ACTIVE_ONLY",
        });
        if let Some(f) = filter {
            body["filter"] = json!(f);
        }
        if let Some(t) = page_token {
            body["page_token"] = json!(t);
        }
        let v = self.call(reqwest::Method::POST, "runs/search", &[], Some(&body)).await?;
        let mut items = Vec::new();
        for r in v["runs"].as_array().into_iter().flatten() {
            if let Some(id) = r["info"]["run_id"].as_str().or_else(|| r["info"]["run_uuid"].as_str()) {
                items.push(RunSummary { run_id: id.to_string(), info: RunInfo::from_json(&r["info"], &r["data"]) });
            }
        }
        Ok(Page { items, next: next_token(&v) })
    }

    /// One page of the values logged for `key` in `run_id` (`metrics/get-history`).
    pub async fn metric_history_page(
        &self,
        run_id: &str,
        key: &str,
        page_token: Option<&str>,
    ) -> Result<Page<MetricPoint>, MlflowError> {
        let mut q =
            vec![("run_id", run_id.to_string()), ("metric_key", key.to_string()), ("max_results", "25000".into())];
        if let Some(t) = page_token {
            q.push(("page_token", t.to_string()));
        }
        let v = self.call(reqwest::Method::GET, "metrics/get-history", &q, None).await?;
        let mut items = Vec::new();
        for m in v["metrics"].as_array().into_iter().flatten() {
            let value = match &m["value"] {
                Value::Number(n) => n.as_f64(),
                // NaN and infinities come as strings from some servers.
                Value::String(s) => s.parse::<f64>().ok(),
                _ => None,
            };
            let (Some(value), Some(ts)) = (value, num(&m["timestamp"])) else { continue };
            items.push(MetricPoint { value, step: num(&m["step"]).unwrap_or(0), timestamp_ms: ts });
        }
        Ok(Page { items, next: next_token(&v) })
    }

    /// Set one tag on a run (`runs/set-tag`); setting the same value again changes nothing.
    pub async fn set_tag(&self, run_id: &str, key: &str, value: &str) -> Result<(), MlflowError> {
        let body = json!({ "run_id": run_id, "run_uuid": run_id, "key": key, "value": value });
        self.call(reqwest::Method::POST, "runs/set-tag", &[], Some(&body)).await.map(|_| ())
    }
}

fn next_token(v: &Value) -> Option<String> {
    v["next_page_token"].as_str().filter(|t| !t.is_empty()).map(str::to_string)
}

/// An integer MLflow sends as a number or as a string (int64 in proto3 JSON).
fn num(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn settings_come_from_mlflow_or_databricks_variables_and_never_show_a_token() {
        let c = MlflowConfig::from_vars(vars(&[("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")])).unwrap();
        assert_eq!(c.base.as_str(), "http://127.0.0.1:5000/");
        let c = MlflowConfig::from_vars(vars(&[
            ("MLFLOW_TRACKING_URI", "https://mlflow.example.com/prefix"),
            ("MLFLOW_TRACKING_TOKEN", "s3cr3t-token"),
        ]))
        .unwrap();
        assert_eq!(c.base.as_str(), "https://mlflow.example.com/prefix/");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let c = MlflowConfig::from_vars(vars(&[
            ("MLFLOW_TRACKING_URI", "https://mlflow.example.com"),
            ("MLFLOW_TRACKING_USERNAME", "me"),
            ("MLFLOW_TRACKING_PASSWORD", "pa55word"),
        ]))
        .unwrap();
        assert!(!format!("{c:?}").contains("pa55word"));
        let c = MlflowConfig::from_vars(vars(&[
            ("DATABRICKS_HOST", "adb-1.azuredatabricks.net"),
            ("DATABRICKS_TOKEN", "dapi123"),
        ]))
        .unwrap();
        assert_eq!(c.base.as_str(), "https://adb-1.azuredatabricks.net/");
        assert!(!format!("{c:?}").contains("dapi123"));
        assert!(matches!(MlflowConfig::from_vars(vars(&[])), Err(MlflowError::NotConfigured)));
        assert!(
            MlflowConfig::from_vars(vars(&[("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")])).is_err(),
            "plain http off loopback"
        );
        let e =
            MlflowConfig::from_vars(vars(&[("MLFLOW_TRACKING_URI", "https://u:hunter2@h.example.com")])).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(MlflowConfig::from_vars(vars(&[("DATABRICKS_HOST", "h.example.com")])).is_err(), "no token");
    }
}
