//! Fixtures the model's integration tests share (each test file is a crate of its own and
//! includes this module with `mod common;`).

#![allow(
    dead_code,
    reason = "every test file uses only some of the shared fixtures"
)]

use std::path::{Path, PathBuf};

use model::{Table, synthetic::Noise};

/// A table built in memory: `columns`, then one row of values per entry of `rows`, as if read
/// from a file `<test>` with a header line (so row `i` is line `i + 2`).
pub fn table<Row: AsRef<[f64]>>(columns: &[&str], rows: &[Row]) -> Table {
    Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        values: rows
            .iter()
            .flat_map(|row| row.as_ref().iter().copied())
            .collect(),
        lines: (2..rows.len() + 2).collect(),
        timestamps: vec![None; rows.len()],
        labels: None,
        files: vec![(PathBuf::from("<test>"), 0..rows.len())],
    }
}

/// `count` rows around `center` (relative noise 5 %).
pub fn blob(noise: &mut Noise, count: usize, center: &[f64]) -> Vec<Vec<f64>> {
    (0..count)
        .map(|_| center.iter().map(|c| noise.around(*c, 0.05)).collect())
        .collect()
}

pub const COLUMNS: [&str; 3] = ["ops_per_s", "latency_p99_us", "psi_io_some_pct"];

/// `healthy` windows of a quiet disk, then `faulty` ones of a slow, pressured one ([`COLUMNS`]).
pub fn two_blobs(healthy: usize, faulty: usize) -> Table {
    let mut noise = Noise::new(11);
    let mut rows = blob(&mut noise, healthy, &[100.0, 500.0, 2.0]);
    rows.extend(blob(&mut noise, faulty, &[100.0, 20_000.0, 30.0]));
    table(&COLUMNS, &rows)
}

/// Writes `text` to `dir/name`; its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
