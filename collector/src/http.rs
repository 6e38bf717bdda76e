//! The daemon's HTTP endpoints: `/metrics` (OpenMetrics), `/healthz`, `/readyz`, `/state`,
//! `/rank` (JSON: node, rank, state, score, threshold; `/rank?format=text` is the bare number).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::{
    exporter::{Health, ModelInfo, SharedState},
    record::WindowRecord,
};

#[derive(Clone)]
struct AppState {
    shared: SharedState,
    registry: Arc<Registry>,
}

/// Binds `listen` (failing with a clear error if the address is taken) and returns the server
/// future and the address actually bound (port 0 picks a free one).
pub async fn bind(
    listen: SocketAddr,
    shared: SharedState,
    registry: Registry,
) -> anyhow::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (is another exporter using it? set --listen)")
        })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/state", get(state))
        .route("/rank", get(rank))
        .with_state(AppState {
            shared,
            registry: Arc::new(registry),
        });
    Ok((bound, async move { axum::serve(listener, app).await }))
}

async fn metrics(State(app): State<AppState>) -> Response {
    openmetrics_response(&app.registry)
}

pub(crate) use cluster::openmetrics_response;

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    let ready = app
        .shared
        .read()
        .map(|state| state.ready().map_err(str::to_string));
    match ready {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Ok(Err(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "state lock poisoned\n".to_string(),
        )
            .into_response(),
    }
}

#[derive(Serialize)]
struct StateView {
    node: String,
    #[serde(flatten)]
    health: Health,
    rank: f64,
    model: Option<ModelInfo>,
    windows: Vec<WindowRecord>,
}

async fn state(State(app): State<AppState>) -> Response {
    let Ok(state) = app.shared.read() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned\n").into_response();
    };
    Json(StateView {
        node: state.node.clone(),
        health: state.health.clone(),
        rank: state.health.rank(),
        model: state.model.clone(),
        windows: state.recent.iter().cloned().collect(),
    })
    .into_response()
}

/// What `/rank` returns (and `collector rank` reads).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RankView {
    pub node: String,
    /// 0–100, higher is healthier (see the `rank` module for the formula).
    pub rank: f64,
    pub state: String,
    pub score: f64,
    pub threshold: f64,
}

#[derive(Deserialize)]
struct RankQuery {
    format: Option<String>,
}

async fn rank(State(app): State<AppState>, Query(query): Query<RankQuery>) -> Response {
    let Ok(state) = app.shared.read() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned\n").into_response();
    };
    let view = RankView {
        node: state.node.clone(),
        rank: state.health.rank(),
        state: state.health.state.to_string(),
        score: state.health.score,
        threshold: state.health.threshold,
    };
    match query.format.as_deref() {
        None | Some("json") => Json(view).into_response(),
        Some("text") => format!("{:.1}\n", view.rank).into_response(),
        Some(other) => (
            StatusCode::BAD_REQUEST,
            format!("unknown format `{other}`: use json or text\n"),
        )
            .into_response(),
    }
}
