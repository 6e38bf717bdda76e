//! Fixtures the model's integration tests share (each test file is a crate of its own and
//! includes this module with `mod common;`).

use std::path::PathBuf;

use model::Table;

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
