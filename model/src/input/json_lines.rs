//! The daemon's JSON Lines: one window record per line, its numeric top-level fields the
//! columns (in name order), its `timestamp` (or `unix_ms`) and `label` recognised.

use std::path::{Path, PathBuf};

use super::{NOT_FEATURES, Table, input_error, parse_label, parse_timestamp};
use crate::error::Result;

#[derive(Default)]
pub(super) struct JsonBuilder {
    table: Table,
    first_line: usize,
    labelled: bool,
}

impl JsonBuilder {
    pub(super) fn push(
        &mut self,
        value: &serde_json::Value,
        line: usize,
    ) -> std::result::Result<(), String> {
        let object = value
            .as_object()
            .ok_or("not a JSON object (one window record per line)")?;
        if self.table.lines.is_empty() {
            // serde_json's map is ordered by name: the columns are in name order.
            self.table.columns = object
                .iter()
                // A null is a value the daemon failed to read (a partial window): still a
                // column, or a partial first record would drop it from every row unseen.
                .filter(|(name, value)| {
                    (value.is_number() || value.is_null()) && !NOT_FEATURES.contains(&name.as_str())
                })
                .map(|(name, _)| name.clone())
                .collect();
            self.first_line = line;
            self.labelled = object.contains_key("label");
            if self.labelled {
                self.table.labels = Some(Vec::new());
            }
        }
        for column in &self.table.columns {
            let value = object.get(column).ok_or_else(|| {
                format!(
                    "field `{column}` (present on line {}) is missing: every record needs the \
                     same numeric fields",
                    self.first_line
                )
            })?;
            let number = match value {
                serde_json::Value::Null => {
                    return Err(format!(
                        "field `{column}` is null: the daemon could not read it for this window \
                         (a partial window, see `missing`); leave such windows out of the input"
                    ));
                }
                _ => value
                    .as_f64()
                    .ok_or_else(|| format!("field `{column}` is {value}, not a number"))?,
            };
            self.table.values.push(number);
        }
        let timestamp = match object.get("timestamp") {
            Some(serde_json::Value::String(text)) => Some(parse_timestamp(text)?),
            Some(value) => Some(
                value
                    .as_f64()
                    .ok_or_else(|| format!("timestamp {value} is not a time"))?,
            ),
            None => object
                .get("unix_ms")
                .and_then(serde_json::Value::as_f64)
                .map(|ms| ms / 1000.0),
        };
        self.table.timestamps.push(timestamp);
        if let Some(labels) = &mut self.table.labels {
            let label = object
                .get("label")
                .and_then(serde_json::Value::as_f64)
                .ok_or("`label` must be 0 or 1 on every record when the first has one")?;
            labels.push(parse_label(label)?);
        }
        self.table.lines.push(line);
        Ok(())
    }

    pub(super) fn finish(mut self, path: PathBuf) -> Result<Table> {
        let rows = self.table.len();
        self.table.files = vec![(path, 0..rows)];
        Ok(self.table)
    }
}

pub(super) fn read_json_lines(path: &Path, text: &str) -> Result<Table> {
    let mut builder = JsonBuilder::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|err| input_error(path, number, format!("not a JSON record: {err}")))?;
        builder
            .push(&value, number)
            .map_err(|message| input_error(path, number, message))?;
    }
    builder.finish(path.to_path_buf())
}
