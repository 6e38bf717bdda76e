//! The extender's HTTP side: admission (body size, concurrency, read timeout), the cached
//! reading of Prometheus, the handlers, its own metrics, and the allocator settings that give
//! large bodies' memory back. What it answers is decided in the parent module.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context as _;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest as _, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tracing::{debug, info, warn};

use super::{
    BODY_READ_TIMEOUT, ExtenderArgs, ExtenderFilterResult, ExtenderOptions, Fleet,
    TRIM_AFTER_BYTES, fetch_fleet, filter, prioritize,
};

#[derive(Default)]
struct Metrics {
    requests: Family<Vec<(String, String)>, Counter>,
    bad_requests: Counter,
    filtered_nodes: Counter,
    prometheus_queries: Counter,
    prometheus_errors: Counter,
    stale_readings: Counter,
    fleet_nodes: Gauge,
    rejected: Family<Vec<(String, String)>, Counter>,
}

struct Extender {
    options: ExtenderOptions,
    /// One permit per request whose body is being read or answered.
    permits: Arc<tokio::sync::Semaphore>,
    cache: tokio::sync::Mutex<Cache>,
    metrics: Metrics,
    registry: Registry,
}

impl Extender {
    /// The fleet, from the cache while it is fresh. One refresh at a time: concurrent requests
    /// wait for it instead of each asking Prometheus.
    async fn fleet(&self) -> Reading {
        let mut cache = self.cache.lock().await;
        if let Some((at, fleet)) = cache.fresh.as_ref()
            && at.elapsed() < self.options.cache_ttl
        {
            return fleet.clone();
        }
        let options = self.options.clone();
        self.metrics.prometheus_queries.inc();
        let fetched = tokio::task::spawn_blocking(move || fetch_fleet(&options))
            .await
            .map_err(|err| format!("query task failed: {err}"))
            .and_then(|fetched| fetched.map_err(|err| format!("{err:#}")));
        let reading = match fetched {
            Ok(fleet) => {
                debug!(nodes = fleet.len(), "node states read from Prometheus");
                self.metrics.fleet_nodes.set(fleet.len() as i64);
                let reading: Reading = Arc::new(Ok(fleet));
                cache.last_good = Some((Instant::now(), reading.clone()));
                reading
            }
            Err(err) => {
                self.metrics.prometheus_errors.inc();
                match &cache.last_good {
                    Some((at, good)) if at.elapsed() < self.options.keep_last_for => {
                        self.metrics.stale_readings.inc();
                        warn!(
                            "cannot read node states from Prometheus, answering from the last \
                             reading ({:.0?} old): {err}",
                            at.elapsed()
                        );
                        good.clone()
                    }
                    _ => {
                        warn!(
                            on_error = ?self.options.on_error,
                            "cannot read node states from Prometheus: {err}"
                        );
                        Arc::new(Err(err))
                    }
                }
            }
        };
        cache.fresh = Some((Instant::now(), reading.clone()));
        reading
    }

    fn count(&self, verb: &str) {
        self.metrics
            .requests
            .get_or_create(&vec![("verb".into(), verb.into())])
            .inc();
    }

    fn reject(&self, reason: &str) {
        self.metrics
            .rejected
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// Reads `request`'s body under the limits: a free request slot (else 503 at once), a
    /// declared length within the cap (else 413 before reading anything), the whole body
    /// within the cap (else 413) and within [`BODY_READ_TIMEOUT`] (else 408). The permit is
    /// held until the answer is built.
    async fn admit(
        &self,
        request: Request,
    ) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), Response> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.reject("busy");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                format!(
                    "nodestate extender: {} requests are being answered \
                     (--max-concurrent-requests); try again\n",
                    self.options.max_concurrent_requests
                ),
            )
                .into_response());
        };
        let max = self.options.max_body_bytes;
        let too_large = |extender: &Self, size: String| {
            extender.reject("too_large");
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "nodestate extender: request body of {size} is over the {max} bytes \
                     accepted (--max-body-bytes); set nodeCacheCapable: true in the scheduler \
                     configuration so only node names are sent\n"
                ),
            )
                .into_response()
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if let Some(declared) = declared
            && declared > max as u64
        {
            return Err(too_large(self, format!("{declared} bytes")));
        }
        match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, &())).await {
            Ok(Ok(body)) => Ok((body, permit)),
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(too_large(self, "more bytes".into()))
            }
            Ok(Err(rejection)) => {
                self.reject("unreadable");
                Err(rejection.into_response())
            }
            Err(_) => {
                self.reject("slow_body");
                Err((
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "nodestate extender: the request body did not arrive within {}s\n",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                )
                    .into_response())
            }
        }
    }
}

/// Gives the allocator's free memory back to the system after a large body, so a burst of
/// large requests does not leave the extender holding their size.
fn release_memory(body_bytes: usize) {
    if body_bytes < TRIM_AFTER_BYTES {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// glibc raises its mmap threshold to the size of each mmapped block freed (up to 32 MiB), so
/// after one large body later ones come from the arenas, which keep the memory. A fixed
/// threshold keeps large buffers mmapped: freeing one unmaps it.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes an allocator setting; it has no memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

type Shared = Arc<Extender>;

/// What the last refresh read: the fleet, or why Prometheus could not be read.
type Reading = Arc<Result<Fleet, String>>;

#[derive(Default)]
struct Cache {
    /// The answer of the last refresh, served for `cache_ttl`.
    fresh: Option<(Instant, Reading)>,
    /// The last answer Prometheus gave, for `keep_last_for` after a failed refresh.
    last_good: Option<(Instant, Reading)>,
}

fn parse_args(body: &[u8]) -> Result<ExtenderArgs, String> {
    serde_json::from_slice(body).map_err(|err| format!("not ExtenderArgs JSON: {err}"))
}

async fn filter_handler(State(extender): State<Shared>, request: Request) -> Response {
    extender.count("filter");
    let (body, permit) = match extender.admit(request).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let size = body.len();
    let response = filter_response(&extender, &body).await;
    drop((body, permit));
    release_memory(size);
    response
}

async fn filter_response(extender: &Extender, body: &[u8]) -> Response {
    let args = match parse_args(body) {
        Ok(args) => args,
        Err(err) => {
            extender.metrics.bad_requests.inc();
            let result = ExtenderFilterResult {
                error: err,
                ..Default::default()
            };
            return (StatusCode::BAD_REQUEST, Json(result)).into_response();
        }
    };
    let fleet = extender.fleet().await;
    let result = filter(&args, &fleet, &extender.options);
    extender
        .metrics
        .filtered_nodes
        .inc_by(result.failed_and_unresolvable_nodes.len() as u64);
    if !result.failed_and_unresolvable_nodes.is_empty() {
        info!(
            pod = %args.pod_name(),
            filtered = ?result.failed_and_unresolvable_nodes.keys().collect::<Vec<_>>(),
            "filtered out degraded nodes"
        );
    }
    Json(result).into_response()
}

async fn prioritize_handler(State(extender): State<Shared>, request: Request) -> Response {
    extender.count("prioritize");
    let (body, permit) = match extender.admit(request).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let size = body.len();
    let response = prioritize_response(&extender, &body).await;
    drop((body, permit));
    release_memory(size);
    response
}

async fn prioritize_response(extender: &Extender, body: &[u8]) -> Response {
    let args = match parse_args(body) {
        Ok(args) => args,
        Err(err) => {
            extender.metrics.bad_requests.inc();
            return (StatusCode::BAD_REQUEST, err + "\n").into_response();
        }
    };
    let fleet = extender.fleet().await;
    match prioritize(&args, &fleet, &extender.options) {
        Some(list) => Json(list).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "nodestate extender: Prometheus: {}\n",
                fleet.as_ref().as_ref().err().map_or("", String::as_str)
            ),
        )
            .into_response(),
    }
}

async fn fleet_handler(State(extender): State<Shared>) -> Response {
    match extender.fleet().await.as_ref() {
        Ok(fleet) => Json(fleet).into_response(),
        Err(err) => (StatusCode::BAD_GATEWAY, format!("Prometheus: {err}\n")).into_response(),
    }
}

async fn metrics_handler(State(extender): State<Shared>) -> Response {
    crate::openmetrics_response(&extender.registry)
}

fn registry(metrics: &Metrics) -> Registry {
    let mut registry = Registry::with_prefix("nodestate_extender");
    registry.register(
        "requests",
        "Requests from kube-scheduler, by verb",
        metrics.requests.clone(),
    );
    registry.register(
        "bad_requests",
        "Requests whose body was not ExtenderArgs JSON",
        metrics.bad_requests.clone(),
    );
    registry.register(
        "filtered_nodes",
        "Nodes the filter kept pods off",
        metrics.filtered_nodes.clone(),
    );
    registry.register(
        "prometheus_queries",
        "Refreshes of the node states from Prometheus (two queries each)",
        metrics.prometheus_queries.clone(),
    );
    registry.register(
        "prometheus_errors",
        "Refreshes that failed: answered per --on-prometheus-error",
        metrics.prometheus_errors.clone(),
    );
    registry.register(
        "stale_readings",
        "Failed refreshes answered from the last good reading (see --keep-last-for)",
        metrics.stale_readings.clone(),
    );
    registry.register(
        "rejected_requests",
        "Requests refused before they were answered, by reason: busy (503, \
         --max-concurrent-requests), too_large (413, --max-body-bytes), slow_body (408), \
         unreadable",
        metrics.rejected.clone(),
    );
    registry.register(
        "fleet_nodes",
        "Nodes with a state in Prometheus at the last refresh",
        metrics.fleet_nodes.clone(),
    );
    registry
}

/// Binds `listen` and returns the bound address and the server future.
pub async fn bind(
    listen: SocketAddr,
    options: ExtenderOptions,
) -> anyhow::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (set --listen)"))?;
    let bound = listener.local_addr()?;
    let max_body_bytes = options.max_body_bytes;
    let metrics = Metrics::default();
    let registry = registry(&metrics);
    let extender = Arc::new(Extender {
        permits: Arc::new(tokio::sync::Semaphore::new(
            options.max_concurrent_requests.max(1),
        )),
        options,
        cache: tokio::sync::Mutex::new(Cache::default()),
        metrics,
        registry,
    });
    let app = Router::new()
        .route("/filter", post(filter_handler))
        .route("/prioritize", post(prioritize_handler))
        .route("/fleet", get(fleet_handler))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        // The handlers read their bodies themselves (Extender::admit), under this limit.
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(extender);
    Ok((bound, async move { axum::serve(listener, app).await }))
}

/// `collector extender`: serves until SIGTERM or SIGINT.
pub async fn run(listen: SocketAddr, options: ExtenderOptions) -> anyhow::Result<()> {
    let prometheus = options.prometheus.clone();
    fix_mmap_threshold();
    let (bound, server) = bind(listen, options).await?;
    info!(%bound, %prometheus, "kube-scheduler extender: POST /filter, /prioritize");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        served = server => served.context("extender HTTP server")?,
        _ = sigterm.recv() => info!("SIGTERM: exiting"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: exiting"),
    }
    Ok(())
}
