//! `/metrics` under load: 10,000 scrapes, 32 at a time, on loopback, against a running daemon
//! with every signal attached; latency percentiles and errors.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;

use super::block::{start_collector, stop};

const REQUESTS: usize = 10_000;
const CONCURRENCY: usize = 32;

/// One scrape over a fresh connection, as Prometheus does at each interval; its latency, or
/// None on any error (connect, timeout, status other than 200, empty body).
fn scrape(address: &str) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let ok = response.starts_with(b"HTTP/1.1 200") && response.len() > 1000;
    ok.then(|| started.elapsed())
}

fn percentile(sorted: &[Duration], percent: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * percent / 100.0).round() as usize]
}

pub fn run() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let collector = start_collector(&["run", "--window", "1s", "--listen", &address])?;
    // Let a few windows land so /metrics carries every family (features, histograms).
    std::thread::sleep(Duration::from_secs(3));
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(REQUESTS)));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, latencies, errors, address) = (
                next.clone(),
                latencies.clone(),
                errors.clone(),
                address.clone(),
            );
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    match scrape(&address) {
                        Some(latency) => latencies.lock().unwrap().push(latency),
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = started.elapsed();
    stop(collector)?;
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let errors = errors.load(Ordering::Relaxed);
    if latencies.is_empty() {
        bail!("no scrape succeeded");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(format!(
        "## /metrics under load\n\n\
         `cargo xtask bench http`: {REQUESTS} scrapes of `/metrics`, {CONCURRENCY} concurrent, each \
         on a new loopback connection, against `collector run` with every signal attached \
         (the load generator shares the 2 CPUs with the daemon).\n\n\
         | requests | errors | p50 | p99 | max | throughput |\n|---|---|---|---|---|---|\n\
         | {} | {errors} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} scrapes/s |\n",
        latencies.len() + errors,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap()),
        (latencies.len() + errors) as f64 / elapsed.as_secs_f64(),
    ))
}
