//! Label files: a 0/1 per input row, or fault segments between timestamps.

use std::path::Path;

use super::{
    Table,
    csv_table::{all_numeric, parse_cell},
    input_error, parse_label, parse_timestamp, read_text,
};
use crate::error::{ModelError, Result};

/// Labels for evaluation or training.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// One 0/1 `label` per input row (1 = fault).
    PerRow(Vec<bool>),
    /// Fault segments, `start`,`end` timestamps (inclusive): rows inside are faults.
    Segments(Vec<(f64, f64)>),
}

impl Labels {
    /// Reads a CSV with a `label` column (other columns ignored), `start`,`end` columns, or
    /// no header and a single column of 0/1 (as public sets ship their test labels).
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut records = reader.records().peekable();
        let first = match records.peek() {
            Some(Ok(record)) => record.clone(),
            Some(Err(err)) => return Err(input_error(path, 1, err.to_string())),
            None => {
                return Err(ModelError::Labels {
                    path: path.to_path_buf(),
                    message: "empty labels file".into(),
                });
            }
        };
        let headerless = first.len() == 1 && all_numeric(&first);
        let headers: Vec<String> = if headerless {
            vec!["label".into()]
        } else {
            records.next();
            first.iter().map(str::to_string).collect()
        };
        let column = |name: &str| headers.iter().position(|h| h == name);
        let segment_columns = column("start").zip(column("end"));
        let label_column = column("label");
        if segment_columns.is_none() && label_column.is_none() {
            return Err(input_error(
                path,
                1,
                "labels need a `label` column (one 0/1 per input row), `start`,`end` columns \
                 (fault segments), or one headerless column of 0/1",
            ));
        }
        let mut per_row = Vec::new();
        let mut segments = Vec::new();
        for record in records {
            let record = record.map_err(|err| {
                input_error(
                    path,
                    err.position().map_or(0, |p| p.line() as usize),
                    err.to_string(),
                )
            })?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            let cell = |index: usize| -> Result<&str> {
                record.get(index).ok_or(ModelError::Ragged {
                    path: path.to_path_buf(),
                    line,
                    expected: headers.len(),
                    found: record.len(),
                })
            };
            if let Some((start, end)) = segment_columns {
                let start =
                    parse_timestamp(cell(start)?).map_err(|m| input_error(path, line, m))?;
                let end = parse_timestamp(cell(end)?).map_err(|m| input_error(path, line, m))?;
                if end < start {
                    return Err(input_error(path, line, "segment ends before it starts"));
                }
                segments.push((start, end));
            } else if let Some(label) = label_column {
                let value = parse_cell(path, line, "label", cell(label)?)?;
                per_row.push(parse_label(value).map_err(|m| input_error(path, line, m))?);
            }
        }
        if segment_columns.is_some() {
            Ok(Self::Segments(segments))
        } else {
            Ok(Self::PerRow(per_row))
        }
    }

    /// The label of each row of `table` (read from `labels_path`).
    pub fn per_row(&self, table: &Table, labels_path: &Path) -> Result<Vec<bool>> {
        match self {
            Self::PerRow(labels) => {
                if labels.len() != table.len() {
                    return Err(ModelError::Labels {
                        path: labels_path.to_path_buf(),
                        message: format!(
                            "{} labels for {} input rows (one label per row is needed)",
                            labels.len(),
                            table.len()
                        ),
                    });
                }
                Ok(labels.clone())
            }
            Self::Segments(segments) => (0..table.len())
                .map(|row| {
                    let time = table.timestamps[row].ok_or_else(|| {
                        let (path, line) = table.origin(row);
                        input_error(
                            path,
                            line,
                            "fault segments need a timestamp on every input row",
                        )
                    })?;
                    Ok(segments
                        .iter()
                        .any(|(start, end)| (*start..=*end).contains(&time)))
                })
                .collect(),
        }
    }
}
