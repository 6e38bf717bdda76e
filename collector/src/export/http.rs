//! The daemon's HTTP endpoints: `/` (a page for people), `/metrics` (OpenMetrics when the
//! scraper asks for it, else the classic text format 0.0.4), `/healthz`, `/readyz`, `/state`,
//! `/rank` (JSON: node, rank, state, score, threshold; `/rank?format=text` is the bare number),
//! `/workloads` (the last window per workload), `/debug/cgroups` (the per-cgroup table of the
//! last window and the totals since load, by cgroup id: the raw view under attribution, for
//! tests and debugging).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use std::fmt::Write as _;

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::{
    export::{Health, ModelInfo, SharedState, liveness::Heartbeat},
    window::record::WindowRecord,
};

#[derive(Clone)]
struct AppState {
    shared: SharedState,
    registry: Arc<Registry>,
    heartbeat: Arc<Heartbeat>,
}

/// How long a client has to send a request's headers, from its first byte (or, on a new
/// connection, from the accept): 5 s is far beyond what any scraper or probe needs on a
/// cluster network, and short enough that a client trickling a header byte by byte (slowloris)
/// holds a connection slot for 5 s, not forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a keep-alive connection may sit idle between requests: longer than Prometheus'
/// usual scrape intervals (15–60 s) so a scraper reuses its connection, and bounded so idle
/// clients give their slots and descriptors back.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// At most this many connections at once, whatever the descriptor limit: a node's scrapers,
/// probes and a person with curl need a handful.
pub const MAX_CONNECTIONS: usize = 64;
/// Descriptors kept for the daemon's own work beyond those open at start-up (/proc and sysfs
/// reads, the cgroup walk, re-opens, pins, the blocklist's files): the HTTP server may use at
/// most half of what is left after these.
pub const DESCRIPTOR_RESERVE: u64 = 64;

/// The HTTP server's limits, so idle or slow clients cannot use up the daemon's descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The cap from the descriptor limit: half of what is left of the soft `RLIMIT_NOFILE`
    /// after the descriptors open now and [`DESCRIPTOR_RESERVE`], at most
    /// [`MAX_CONNECTIONS`], at least 2 (one scrape and one probe).
    pub fn for_this_process() -> Self {
        let open_now = std::fs::read_dir("/proc/self/fd").map_or(32, |dir| dir.count() as u64);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
        let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            1024
        };
        Self {
            max_connections: connection_cap(soft, open_now),
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// See [`ConnectionLimits::for_this_process`].
pub fn connection_cap(nofile_soft: u64, open_now: u64) -> usize {
    let spare = nofile_soft.saturating_sub(open_now + DESCRIPTOR_RESERVE) / 2;
    (spare.min(MAX_CONNECTIONS as u64) as usize).max(2)
}

/// Binds `listen` (failing with a clear error if the address is taken) and returns the server
/// future and the address actually bound (port 0 picks a free one). Connections are capped and
/// timed out by [`ConnectionLimits::for_this_process`].
pub async fn bind(
    listen: SocketAddr,
    shared: SharedState,
    registry: Registry,
    heartbeat: Arc<Heartbeat>,
) -> anyhow::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (is another exporter using it? set --listen)")
        })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/state", get(state))
        .route("/rank", get(rank))
        .route("/workloads", get(workloads))
        .route("/debug/cgroups", get(debug_cgroups))
        .with_state(AppState {
            shared: shared.clone(),
            registry: Arc::new(registry),
            heartbeat,
        });
    let limits = ConnectionLimits::for_this_process();
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout_s = limits.header_read_timeout.as_secs_f64(),
        idle_timeout_s = limits.idle_timeout.as_secs_f64(),
        "HTTP connection limits"
    );
    Ok((bound, serve(listener, app, limits, shared)))
}

/// Accepts connections while a slot is free; over the cap a connection is accepted and closed
/// at once (counted in `nodestate_http_connections_refused_total`), so a client learns at
/// once and the daemon holds no descriptor for it. A `tower` concurrency limit would not do:
/// it bounds requests in progress, not idle keep-alive connections.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shared: SharedState,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut accept_failing = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                accept_failing = false;
                stream
            }
            Err(err) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept: the
                // listener stays readable, so wait a little rather than spin.
                if !accept_failing {
                    tracing::warn!("HTTP accept failed: {err}; retrying every 100 ms");
                    accept_failing = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            if let Ok(mut state) = shared.write() {
                state.http_connections_refused_total += 1;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Mutex::new(Activity::default()));
        let io = hyper_util::rt::TokioIo::new(Tracked {
            stream,
            activity: activity.clone(),
        });
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(ConnTimer { activity, limits })
            .header_read_timeout(limits.header_read_timeout);
        tokio::spawn(async move {
            // Errors here are the client's (a reset, a timeout): nothing for the node's log.
            let _ = builder.serve_connection(io, service).await;
            drop(permit);
        });
    }
}

/// What a connection has been doing, for its timer.
#[derive(Debug, Default)]
struct Activity {
    /// A response has been written: between requests the connection is idle, not slow.
    served: bool,
    /// When the first byte of the request being read arrived (cleared by each response).
    request_started: Option<Instant>,
}

/// A connection's stream, noting when requests start and responses go out.
struct Tracked {
    stream: tokio::net::TcpStream,
    activity: Arc<Mutex<Activity>>,
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut activity = self.activity.lock().expect("activity lock");
            activity.request_started.get_or_insert_with(Instant::now);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            let mut activity = self.activity.lock().expect("activity lock");
            activity.served = true;
            activity.request_started = None;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// hyper's header-read timer, which also runs while a keep-alive connection waits for its
/// next request, made to tell the two apart: [`ConnectionLimits::header_read_timeout`] from a
/// request's first byte (or a new connection's accept), [`ConnectionLimits::idle_timeout`]
/// between requests.
struct ConnTimer {
    activity: Arc<Mutex<Activity>>,
    limits: ConnectionLimits,
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // hyper asks for `now + header_read_timeout` as it starts waiting for a request.
        let waiting_since = deadline
            .checked_sub(self.limits.header_read_timeout)
            .unwrap_or(deadline);
        Box::pin(ConnSleep {
            waiting_since,
            activity: self.activity.clone(),
            limits: self.limits,
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }
}

struct PlainSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for PlainSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

struct ConnSleep {
    waiting_since: Instant,
    activity: Arc<Mutex<Activity>>,
    limits: ConnectionLimits,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for ConnSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this each time the connection wakes (a byte arrived, say): move the
        // deadline to what the connection is doing now.
        let deadline = {
            let activity = self.activity.lock().expect("activity lock");
            match activity.request_started {
                Some(started) => started.max(self.waiting_since) + self.limits.header_read_timeout,
                None if activity.served => self.waiting_since + self.limits.idle_timeout,
                None => self.waiting_since + self.limits.header_read_timeout,
            }
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for ConnSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_for_scrapers_that_ask() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text;q=0, text/plain"
        )));
    }

    #[test]
    fn the_text_format_names_counters_with_total_and_has_no_unit_or_eof() {
        let openmetrics = "# HELP a_total_thing Things with \"quotes\"\n# TYPE a_total_thing counter\n\
             a_total_thing_total{node=\"n\"} 3\n# HELP b_seconds Age\n# TYPE b_seconds gauge\n\
             # UNIT b_seconds seconds\nb_seconds{node=\"n\"} 1.5\n# TYPE c unknown\nc 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(openmetrics),
            "# HELP a_total_thing_total Things with \"quotes\"\n# TYPE a_total_thing_total counter\n\
             a_total_thing_total{node=\"n\"} 3\n# HELP b_seconds Age\n# TYPE b_seconds gauge\n\
             b_seconds{node=\"n\"} 1.5\n# TYPE c untyped\nc 1\n"
        );
    }

    #[test]
    fn the_connection_cap_leaves_descriptors_for_the_daemon() {
        // ulimit -n 256 with 60 open: (256 - 60 - 64) / 2 = 66, capped at 64.
        assert_eq!(connection_cap(256, 60), 64);
        // ulimit -n 200 with 60 open: (200 - 124) / 2 = 38; 200 - 60 - 38 = 102 left over.
        assert_eq!(connection_cap(200, 60), 38);
        // Hardly any room: still one scrape and one probe.
        assert_eq!(connection_cap(100, 90), 2);
        assert_eq!(connection_cap(1 << 20, 60), MAX_CONNECTIONS);
    }
}

async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    if wants_openmetrics(accept) {
        return openmetrics_response(&app.registry);
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &app.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, TEXT_FORMAT)],
            openmetrics_to_text(&body),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

pub(crate) use cluster::openmetrics_response;

/// The classic Prometheus text format's content type.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the `Accept` header asks for OpenMetrics (a media range
/// `application/openmetrics-text` with a non-zero q), as Prometheus itself does. Anything else
/// (curl's `*/*`, `text/plain`, no header) gets the classic text format, as node_exporter
/// answers: older parsers, such as Debian's `promtool check metrics`, refuse OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// An OpenMetrics exposition (as prometheus-client writes it) in the classic text format
/// 0.0.4: no `# UNIT` or `# EOF` lines, counters' HELP and TYPE name the `_total` series
/// (OpenMetrics names the family without it), `unknown` is `untyped`. Sample lines are the
/// same in both formats.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(previous) = help.replace(line) {
                out.push_str(previous);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), kind),
                "unknown" => (name.to_string(), "untyped"),
                _ => (name.to_string(), kind),
            };
            if let Some(help) = help.take() {
                let text = help
                    .strip_prefix("# HELP ")
                    .and_then(|rest| rest.split_once(' '))
                    .map_or("", |(_, text)| text);
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        if let Some(previous) = help.take() {
            out.push_str(previous);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(previous) = help {
        out.push_str(previous);
        out.push('\n');
    }
    out
}

/// `/`: the page for people ([`super::page`]), reloading itself every window (at least 5 s).
async fn page(State(app): State<AppState>) -> Response {
    let refresh_s = app.heartbeat.window().as_secs().max(5);
    let Ok(state) = app.shared.read() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned\n").into_response();
    };
    Html(super::page::render(&state, refresh_s)).into_response()
}

/// Alive while the window loop closes windows ([`Heartbeat`]); 503 once it has closed none
/// for three windows' time, so a liveness probe restarts a stuck daemon.
async fn healthz(State(app): State<AppState>) -> Response {
    match app.heartbeat.stalled() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(silent) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: no window closed for {:.1} s (window {:.1} s)\n",
                silent.as_secs_f64(),
                app.heartbeat.window().as_secs_f64()
            ),
        )
            .into_response(),
    }
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
    /// While degraded: who is to blame, best first, and who suffers (issue 20).
    culprits: Vec<crate::judge::culprits::Blame>,
    victims: Vec<crate::judge::culprits::Blame>,
    /// The culprits in a sentence each: `87% of I/O issued: shop/db-0 (postgres)`.
    culprits_text: Vec<String>,
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
        culprits: state.culprits.culprits.clone(),
        victims: state.culprits.victims.clone(),
        culprits_text: state
            .culprits
            .culprits
            .iter()
            .map(ToString::to_string)
            .collect(),
        windows: state.recent.iter().cloned().collect(),
    })
    .into_response()
}

/// The last window per workload (`collector top` reads it).
async fn workloads(State(app): State<AppState>) -> Response {
    let Ok(state) = app.shared.read() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned\n").into_response();
    };
    match &state.workloads {
        Some(view) => Json(view.clone()).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no per-workload window yet: attribution is off on this node, or no window has \
             closed since it started\n",
        )
            .into_response(),
    }
}

/// One cgroup's counters as JSON, by field name (errors by errno name).
pub fn cgroup_stats_json(stats: &collector_common::CgroupStats) -> serde_json::Value {
    let errors: serde_json::Map<String, serde_json::Value> = collector_common::cgroup_errno::NAMES
        .iter()
        .zip(stats.errors)
        .map(|(name, count)| ((*name).to_string(), count.into()))
        .collect();
    serde_json::json!({
        "oncpu_ns": stats.oncpu_ns,
        "runq_wait_ns": stats.runq_wait_ns,
        "io_ops": stats.io_ops,
        "io_bytes": stats.io_bytes,
        "io_latency_ns": stats.io_latency_ns,
        "errors": errors,
        "exits_nonzero": stats.exits_nonzero,
        "fatal_signals": stats.fatal_signals,
        "oom_victims": stats.oom_victims,
        "reclaim_stall_ns": stats.reclaim_stall_ns,
        "tcp_retransmits": stats.tcp_retransmits,
        "tcp_resets": stats.tcp_resets,
        "tcp_connect_failures": stats.tcp_connect_failures,
    })
}

async fn debug_cgroups(State(app): State<AppState>) -> Response {
    let Ok(state) = app.shared.read() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned\n").into_response();
    };
    let Some(view) = &state.attribution else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no window closed yet: the per-cgroup table comes with the first\n",
        )
            .into_response();
    };
    let rows = |rows: &mut dyn Iterator<Item = (u64, &collector_common::CgroupStats)>| {
        rows.map(|(id, stats)| {
            let mut row = cgroup_stats_json(stats);
            row["cgroup_id"] = id.into();
            row
        })
        .collect::<Vec<_>>()
    };
    Json(serde_json::json!({
        "mode": view.mode.label(),
        "attribution": view.describe,
        "window": {
            "window_s": view.window.window_s,
            "rows": rows(&mut view.window.rows.iter().map(|row| (row.cgroup_id, &row.delta))),
            "unattributed": cgroup_stats_json(&view.window.unattributed),
            "refused": cgroup_stats_json(&view.window.refused),
        },
        "totals": rows(&mut view.totals.iter().map(|(id, stats)| (*id, stats))),
        "refused_events": view.counters.refused_events,
        "unattributed_events": view.counters.unattributed_events,
        "task_table_full": view.counters.task_table_full,
        "entries": view.counters.entries,
        "entries_removed": view.counters.removed,
    }))
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
