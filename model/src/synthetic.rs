//! Seeded synthetic data for tests, benchmarks and the README's examples.
//!
//! [`server_metrics`] makes a small data set of the shape of the public multivariate
//! server-metric anomaly sets: a numeric CSV training part without labels (mostly normal,
//! with a little contamination, as real training parts have), and a test part with a 0/1
//! label per row. `model synth --out DIR` writes it; `tests/data/server-metrics/` holds the
//! output for seed 7, and a test checks that it still matches.
//!
//! [`window_records`] makes daemon-shaped window records (JSON objects with the window
//! record's field names and nested detail), for the baseline learner and the inference
//! benchmark.

use std::fmt::Write as _;

use rand_xoshiro::{
    Xoshiro256Plus,
    rand_core::{RngCore, SeedableRng},
};

/// Seeded normal and uniform draws (Box-Muller), so no distribution crate is needed.
pub struct Noise(Xoshiro256Plus);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256Plus::seed_from_u64(seed))
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// `center` with multiplicative (log-normal) noise of relative spread `spread`.
    pub fn around(&mut self, center: f64, spread: f64) -> f64 {
        center * (spread * self.normal()).exp()
    }
}

/// The columns of [`server_metrics`], in file order.
pub const SERVER_METRIC_COLUMNS: [&str; 10] = [
    "cpu_pct",
    "mem_pct",
    "load1",
    "disk_read_kbps",
    "disk_write_kbps",
    "disk_await_ms",
    "net_in_kbps",
    "net_out_kbps",
    "tcp_retrans",
    "http_5xx",
];

/// Kinds of fault in the test part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A stalled disk: await up 30×, writes down, load up.
    DiskStall,
    /// A failing backend: 5xx and retransmits up.
    ErrorBurst,
    /// CPU saturation: CPU near 100 %, load up 4×.
    CpuSaturation,
}

fn server_row(noise: &mut Noise, busy: bool, fault: Option<Fault>) -> [f64; 10] {
    let load = if busy { 1.0 } else { 0.25 };
    let mut cpu = (if busy { 55.0 } else { 15.0 } + 4.0 * noise.normal()).clamp(0.0, 100.0);
    let mem = (62.0 + 2.0 * noise.normal()).clamp(0.0, 100.0);
    let mut load1 = noise.around(4.0 * load, 0.15);
    let read = noise.around(2000.0 * load, 0.3);
    let mut write = noise.around(800.0 * load, 0.3);
    let mut await_ms = noise.around(2.0, 0.25);
    let net_in = noise.around(5000.0 * load, 0.2);
    let net_out = noise.around(12000.0 * load, 0.2);
    // Rare events: mostly 0, sometimes 1 or 2.
    let mut retrans = (noise.uniform() * 1.3).floor().max(0.0) * (noise.uniform() * 3.0).floor();
    let mut errors = if noise.uniform() < 0.05 { 1.0 } else { 0.0 };
    match fault {
        Some(Fault::DiskStall) => {
            await_ms *= 30.0;
            write *= 0.3;
            load1 *= 2.5;
        }
        Some(Fault::ErrorBurst) => {
            errors = noise.around(40.0, 0.3).round();
            retrans = noise.around(30.0, 0.3).round();
        }
        Some(Fault::CpuSaturation) => {
            cpu = (97.0 + noise.normal()).clamp(0.0, 100.0);
            load1 *= 4.0;
        }
        None => {}
    }
    [
        cpu, mem, load1, read, write, await_ms, net_in, net_out, retrans, errors,
    ]
}

/// Busy and quiet periods alternate every 40 rows (a day/night or batch/idle rhythm).
fn busy(row: usize) -> bool {
    (row / 40).is_multiple_of(2)
}

/// A train CSV, a test CSV and the test's labels CSV (text), for `seed`.
pub struct ServerMetrics {
    pub train_csv: String,
    pub test_csv: String,
    /// One `label` per test row.
    pub test_labels_csv: String,
    /// The same faults as `start`,`end` timestamp segments.
    pub test_segments_csv: String,
}

/// Training rows, test rows, and the 5 s interval between rows.
pub const SERVER_TRAIN_ROWS: usize = 320;
pub const SERVER_TEST_ROWS: usize = 240;
const START_S: u64 = 1_795_564_800; // 2026-11-25T00:00:00Z
const STEP_S: u64 = 5;

fn timestamp(row: usize) -> String {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(START_S + STEP_S * row as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn csv_line(text: &mut String, stamp: &str, values: &[f64]) {
    text.push_str(stamp);
    for value in values {
        let _ = write!(text, ",{value:.3}");
    }
    text.push('\n');
}

/// The synthetic server-metric set: 320 training rows (three of them faulty and unlabelled:
/// contamination), 240 test rows with three labelled faults of different kinds.
pub fn server_metrics(seed: u64) -> ServerMetrics {
    let mut noise = Noise::new(seed);
    let header = format!("timestamp,{}\n", SERVER_METRIC_COLUMNS.join(","));
    let mut train_csv = header.clone();
    for row in 0..SERVER_TRAIN_ROWS {
        let fault = match row {
            100 | 101 => Some(Fault::ErrorBurst),
            250 => Some(Fault::DiskStall),
            _ => None,
        };
        csv_line(
            &mut train_csv,
            &timestamp(row),
            &server_row(&mut noise, busy(row), fault),
        );
    }
    let faults = [
        (30..45, Fault::DiskStall),
        (110..120, Fault::ErrorBurst),
        (170..182, Fault::CpuSaturation),
    ];
    let mut test_csv = header;
    let mut test_labels_csv = String::from("label\n");
    let mut test_segments_csv = String::from("start,end\n");
    for row in 0..SERVER_TEST_ROWS {
        let at = SERVER_TRAIN_ROWS + row;
        let fault = faults
            .iter()
            .find(|(rows, _)| rows.contains(&row))
            .map(|(_, f)| *f);
        csv_line(
            &mut test_csv,
            &timestamp(at),
            &server_row(&mut noise, busy(at), fault),
        );
        test_labels_csv.push_str(if fault.is_some() { "1\n" } else { "0\n" });
    }
    for (rows, _) in &faults {
        let _ = writeln!(
            test_segments_csv,
            "{},{}",
            timestamp(SERVER_TRAIN_ROWS + rows.start),
            timestamp(SERVER_TRAIN_ROWS + rows.end - 1)
        );
    }
    ServerMetrics {
        train_csv,
        test_csv,
        test_labels_csv,
        test_segments_csv,
    }
}

/// Daemon-shaped window records: `count` windows of a node alternating between two load
/// levels every 20 windows; rows in `fault` have a slow, erroring disk.
pub fn window_records(
    seed: u64,
    count: usize,
    fault: std::ops::Range<usize>,
) -> Vec<serde_json::Value> {
    let mut noise = Noise::new(seed);
    (0..count)
        .map(|row| {
            let load = if (row / 20).is_multiple_of(2) { 1.0 } else { 0.3 };
            let faulty = fault.contains(&row);
            let slow = if faulty { 40.0 } else { 1.0 };
            let reads = noise.around(120.0 * load, 0.2);
            let writes = noise.around(300.0 * load, 0.2);
            let p50 = noise.around(400.0, 0.15) * slow;
            let mut record = serde_json::json!({
                "timestamp": timestamp(row),
                "unix_ms": (START_S + STEP_S * row as u64) * 1000,
                "window_s": 5.0,
                "schema": 1,
                "node": "synthetic",
                "block_read_ops_per_s": reads,
                "block_write_ops_per_s": writes,
                "block_discard_ops_per_s": 0.0,
                "block_flush_ops_per_s": noise.around(20.0 * load, 0.3),
                "block_read_bytes_per_s": reads * 16384.0,
                "block_write_bytes_per_s": writes * 8192.0,
                "block_errors_per_s": if faulty { noise.around(3.0, 0.3) } else { 0.0 },
                "block_inflight": noise.around(2.0 * load, 0.4).round(),
                "block_latency_mean_us": p50 * 1.3,
                "block_latency_p50_us": p50,
                "block_latency_p90_us": p50 * 2.5,
                "block_latency_p99_us": p50 * noise.around(6.0, 0.2),
                "block_slow_io_events": if faulty { 25.0 } else { 0.0 },
                "events_lost": 0,
                "psi_cpu_some_pct": noise.around(3.0 * load, 0.3),
                "psi_io_some_pct": noise.around(1.0, 0.3) * if faulty { 20.0 } else { 1.0 },
                "psi_io_full_pct": noise.around(0.3, 0.3),
                "psi_memory_some_pct": 0.0,
                "psi_memory_full_pct": 0.0,
                "block_devices": {"vda": {"reads": (reads * 5.0).round(), "writes": (writes * 5.0).round()}},
                "syscall_errors_by_errno": {"ENOENT": 12},
            });
            // Signals that are present on a real node and quiet here, named like the daemon's
            // (so the record is as wide as a real one: about 60 numbers).
            let object = record.as_object_mut().expect("an object");
            for (name, center) in [
                ("sched_context_switches_per_s", 20000.0),
                ("sched_runqueue_latency_p50_us", 8.0),
                ("sched_runqueue_latency_p99_us", 90.0),
                ("proc_forks_per_s", 4.0),
                ("proc_exits_per_s", 4.0),
                ("proc_exits_nonzero_per_s", 0.1),
                ("proc_fatal_signals_per_s", 0.0),
                ("mem_oom_kills", 0.0),
                ("mem_reclaims_per_s", 0.0),
                ("mem_reclaim_stall_ms_per_s", 0.0),
                ("mem_major_faults_per_s", 1.0),
                ("syscalls_per_s", 90000.0),
                ("syscall_errors_per_s", 300.0),
                ("syscall_enospc_per_s", 0.0),
                ("syscall_emfile_per_s", 0.0),
                ("syscall_eagain_per_s", 40.0),
                ("syscall_etimedout_per_s", 0.0),
                ("syscall_econnrefused_per_s", 0.0),
                ("syscall_eio_per_s", 0.0),
                ("syscall_eaddrnotavail_per_s", 0.0),
                ("file_opens_per_s", 500.0),
                ("file_open_errors_per_s", 50.0),
                ("fsyncs_per_s", 10.0),
                ("fsync_latency_p99_us", 3000.0),
                ("net_rx_packets_per_s", 3000.0),
                ("net_rx_bytes_per_s", 2e6),
                ("net_tx_packets_per_s", 2500.0),
                ("net_tx_bytes_per_s", 1e6),
                ("net_tx_errors_per_s", 0.0),
                ("net_drops_per_s", 2.0),
                ("tcp_retransmits_per_s", 1.0),
                ("tcp_connects_per_s", 20.0),
                ("tcp_accepts_per_s", 30.0),
                ("tcp_connect_failures_per_s", 0.0),
                ("tcp_resets_per_s", 1.0),
                ("cpu_throttled_periods_per_s", 0.0),
                ("cpu_throttled_ms_per_s", 0.0),
                ("cpu_throttled_cgroups", 0.0),
                ("conntrack_fill_pct", 2.0),
            ] {
                object.insert(
                    name.to_string(),
                    serde_json::json!(noise.around(center * load.max(0.5), 0.1)),
                );
            }
            record
        })
        .collect()
}

/// Blobs for the training benchmark: `rows` × `dims` values around `centers` random centres
/// that overlap (so k-means needs tens of iterations, as on real data, not two),
/// as CSV text (header `f0..`).
pub fn blobs_csv(seed: u64, rows: usize, dims: usize, centers: usize) -> String {
    let mut noise = Noise::new(seed);
    let centres: Vec<Vec<f64>> = (0..centers)
        .map(|_| (0..dims).map(|_| 2.0 * noise.normal()).collect())
        .collect();
    let mut text = (0..dims)
        .map(|d| format!("f{d}"))
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    for row in 0..rows {
        let centre = &centres[row % centers];
        let values: Vec<String> = centre
            .iter()
            .map(|c| format!("{:.5}", c + 1.5 * noise.normal()))
            .collect();
        text.push_str(&values.join(","));
        text.push('\n');
    }
    text
}

/// The named synthetic sets of `model synth --set`: what real data has and the default set
/// lacks. Each is a train part without labels and a test part with eight labelled faults,
/// half of them strong and half subtle (so that where the threshold sits matters), in the
/// same four files as [`server_metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticSet {
    /// Heavy-tailed features: Pareto latencies and queue depths, log-normal rates with a wide
    /// spread, bursty sparse error counts.
    HeavyTails,
    /// The server-metric machine with 4 % unlabelled incidents inside the training part (12
    /// episodes of 10 windows), as real "healthy" training data has.
    Contaminated,
    /// The server-metric machine under slow drift: load, memory and latency grow all along
    /// the train and the test parts (the test part is beyond anything trained on).
    Drift,
    /// A machine of another shape: 24 features in four correlated groups, scales from 1e-3
    /// to 1e5, sparse counters and a constant; faults include a broken correlation.
    Shapes,
}

impl SyntheticSet {
    pub const ALL: [Self; 4] = [
        Self::HeavyTails,
        Self::Contaminated,
        Self::Drift,
        Self::Shapes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::HeavyTails => "heavy-tails",
            Self::Contaminated => "contaminated",
            Self::Drift => "drift",
            Self::Shapes => "shapes",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|set| set.name() == name)
    }

    /// One line for people (EVALUATION.md, `model synth --help`).
    pub fn describe(self) -> &'static str {
        match self {
            Self::HeavyTails => {
                "Pareto latencies (shape 2.5) and queue depths, log-normal rates (spread 0.5), \
                 bursty sparse errors"
            }
            Self::Contaminated => {
                "server metrics with 4% unlabelled incidents in the training part"
            }
            Self::Drift => {
                "server metrics whose load, memory and latency grow slowly through train and test"
            }
            Self::Shapes => {
                "24 features in 4 correlated groups, scales 1e-3 to 1e5, sparse counters, a \
                 constant; one fault breaks a correlation"
            }
        }
    }
}

/// Rows of the train and test parts of every named set (5 s windows: about 4 and 3 hours).
pub const SET_TRAIN_ROWS: usize = 3000;
pub const SET_TEST_ROWS: usize = 2000;

/// A fault in a test part: its kind (0-3, what it moves depends on the set) and strength
/// (1: strong, 0.5: subtle).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Planted {
    kind: usize,
    strength: f64,
}

/// The test part's faults: (first row, length), kinds cycling, strong and subtle alternating.
const TEST_FAULTS: [(usize, usize); 8] = [
    (120, 12),
    (350, 8),
    (600, 20),
    (820, 6),
    (1050, 15),
    (1300, 10),
    (1550, 18),
    (1800, 8),
];

fn pareto(noise: &mut Noise, shape: f64) -> f64 {
    noise.uniform().powf(-1.0 / shape)
}

/// One window of a set's machine at row `t` (counted from the start of the train part).
struct Machine {
    set: SyntheticSet,
    /// Slow latent factors of [`SyntheticSet::Shapes`] (AR(1)).
    factors: [f64; 4],
}

impl Machine {
    fn columns(&self) -> Vec<String> {
        match self.set {
            SyntheticSet::HeavyTails => [
                "cpu_pct",
                "requests_per_s",
                "latency_p99_ms",
                "gc_pause_ms",
                "disk_await_ms",
                "queue_depth",
                "net_kbps",
                "errors_per_s",
            ]
            .map(String::from)
            .to_vec(),
            SyntheticSet::Contaminated | SyntheticSet::Drift => {
                SERVER_METRIC_COLUMNS.map(String::from).to_vec()
            }
            SyntheticSet::Shapes => (0..24)
                .map(|j| match j {
                    20..=22 => format!("g{}_events_{j}", j % 4),
                    23 => "constant".to_string(),
                    _ if j % 5 == 4 => format!("g{}_share_{j}_pct", j % 4),
                    _ => format!("g{}_rate_{j}", j % 4),
                })
                .collect(),
        }
    }

    fn row(&mut self, noise: &mut Noise, t: usize, fault: Option<Planted>) -> Vec<f64> {
        let busy = (t / 80).is_multiple_of(2);
        match self.set {
            SyntheticSet::HeavyTails => {
                let load = if busy { 1.0 } else { 0.4 };
                let mut cpu = (20.0 + 40.0 * load + 6.0 * noise.normal()).clamp(0.0, 100.0);
                let mut requests = noise.around(800.0 * load, 0.5);
                let mut latency = 20.0 * pareto(noise, 2.5);
                let gc = if noise.uniform() < 0.3 {
                    5.0 * pareto(noise, 1.8)
                } else {
                    0.0
                };
                let mut await_ms = noise.around(3.0, 0.6);
                let mut queue = (pareto(noise, 2.0) - 1.0).floor();
                let net = noise.around(4000.0 * load, 0.4);
                let mut errors = if noise.uniform() < 0.03 {
                    pareto(noise, 1.5).floor()
                } else {
                    0.0
                };
                if let Some(Planted { kind, strength: s }) = fault {
                    match kind {
                        0 => {
                            latency *= 1.0 + 9.0 * s;
                            cpu = (cpu + 30.0 * s).min(100.0);
                        }
                        1 => errors = noise.around(60.0 * s, 0.3).round(),
                        2 => {
                            await_ms *= 1.0 + 19.0 * s;
                            queue += (20.0 * s).round();
                        }
                        _ => {
                            cpu = (cpu + 60.0 * s).min(100.0);
                            requests *= 1.0 - 0.6 * s;
                            latency *= 1.0 + 2.0 * s;
                        }
                    }
                }
                vec![cpu, requests, latency, gc, await_ms, queue, net, errors]
            }
            SyntheticSet::Contaminated => {
                server_row(noise, busy, fault.map(|f| server_fault(f.kind))).to_vec()
            }
            SyntheticSet::Drift => {
                let total = (SET_TRAIN_ROWS + SET_TEST_ROWS) as f64;
                let d = t as f64 / total;
                let mut row = server_row(noise, busy, fault.map(|f| server_fault(f.kind)));
                // cpu, mem, load1, read, write, await, net in, net out grow; errors do not.
                row[0] = (row[0] * (1.0 + 0.4 * d)).min(100.0);
                row[1] = (row[1] - 12.0 + 25.0 * d).clamp(0.0, 100.0);
                for value in &mut row[2..8] {
                    *value *= 1.0 + 0.8 * d;
                }
                row.to_vec()
            }
            SyntheticSet::Shapes => {
                for (k, factor) in self.factors.iter_mut().enumerate() {
                    *factor = 0.97 * *factor
                        + 0.24 * noise.normal()
                        + if busy { 0.01 } else { -0.01 } * k as f64;
                }
                let mut row: Vec<f64> = (0..24)
                    .map(|j| {
                        let group = self.factors[j % 4];
                        let scale = 10f64.powi((j % 9) as i32 - 3);
                        match j {
                            20..=22 => {
                                if noise.uniform() < 0.02 {
                                    (1.0 + 3.0 * noise.uniform()).floor()
                                } else {
                                    0.0
                                }
                            }
                            23 => 42.0,
                            _ if j % 5 == 4 => {
                                (30.0 + 8.0 * group + 2.0 * noise.normal()).clamp(0.0, 100.0)
                            }
                            _ => scale * (0.4 * group + 0.1 * noise.normal()).exp(),
                        }
                    })
                    .collect();
                if let Some(Planted { kind, strength: s }) = fault {
                    match kind {
                        // One feature of group 1 leaves its group: a broken correlation.
                        0 => row[1] *= 1.0 + 3.0 * s,
                        // All of group 2 shifts.
                        1 => {
                            for j in (2..20).step_by(4) {
                                if j % 5 == 4 {
                                    row[j] = (row[j] + 25.0 * s).min(100.0);
                                } else {
                                    row[j] *= 1.0 + 2.0 * s;
                                }
                            }
                        }
                        // A sparse counter bursts.
                        2 => row[21] = (8.0 * s + 4.0 * noise.uniform()).round(),
                        // A share jumps.
                        _ => row[9] = (row[9] + 30.0 * s).min(100.0),
                    }
                }
                row
            }
        }
    }
}

fn server_fault(kind: usize) -> Fault {
    match kind % 3 {
        0 => Fault::DiskStall,
        1 => Fault::ErrorBurst,
        _ => Fault::CpuSaturation,
    }
}

/// A named synthetic set (see [`SyntheticSet`]), for `seed`.
pub fn synthetic_set(set: SyntheticSet, seed: u64) -> ServerMetrics {
    let mut noise = Noise::new(seed);
    let mut machine = Machine {
        set,
        factors: [0.0; 4],
    };
    let header = format!("timestamp,{}\n", machine.columns().join(","));
    let mut train_csv = header.clone();
    // Contamination: 12 episodes of 10 windows, evenly spread, kinds cycling.
    let contaminated = |row: usize| -> Option<Planted> {
        (set == SyntheticSet::Contaminated && row % 250 >= 240).then_some(Planted {
            kind: row / 250,
            strength: 1.0,
        })
    };
    for row in 0..SET_TRAIN_ROWS {
        let values = machine.row(&mut noise, row, contaminated(row));
        csv_line(&mut train_csv, &timestamp(row), &values);
    }
    let mut test_csv = header;
    let mut test_labels_csv = String::from("label\n");
    let mut test_segments_csv = String::from("start,end\n");
    for row in 0..SET_TEST_ROWS {
        let at = SET_TRAIN_ROWS + row;
        let fault = TEST_FAULTS
            .iter()
            .enumerate()
            .find(|(_, (start, length))| (*start..start + length).contains(&row))
            .map(|(index, _)| Planted {
                kind: index % 4,
                strength: if (index / 4).is_multiple_of(2) {
                    1.0
                } else {
                    0.5
                },
            });
        let values = machine.row(&mut noise, at, fault);
        csv_line(&mut test_csv, &timestamp(at), &values);
        test_labels_csv.push_str(if fault.is_some() { "1\n" } else { "0\n" });
    }
    for (start, length) in TEST_FAULTS {
        let _ = writeln!(
            test_segments_csv,
            "{},{}",
            timestamp(SET_TRAIN_ROWS + start),
            timestamp(SET_TRAIN_ROWS + start + length - 1)
        );
    }
    ServerMetrics {
        train_csv,
        test_csv,
        test_labels_csv,
        test_segments_csv,
    }
}
