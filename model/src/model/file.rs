//! The model file: JSON written atomically, read back with its format, version and
//! consistency checked, so a damaged or foreign file is an error naming it, not a bad model.

use std::path::{Path, PathBuf};

use super::{HealthState, MODEL_FORMAT, MODEL_FORMAT_VERSION, Model};
use crate::error::{ModelError, Result};

impl Model {
    /// The model file's text (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model always serializes") + "\n"
    }

    /// Writes the model file; through a temporary file (`PATH.tmp`) and a rename, so a reader
    /// (the daemon) never sees half a model. On failure the temporary file is removed: a
    /// failed `model train` leaves nothing behind.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomically(path, self.to_json().as_bytes())
    }

    /// Reads and checks a model file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and checks a model file's bytes; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let corrupt = |line: usize, message: String| ModelError::CorruptModel {
            path: origin.to_path_buf(),
            line,
            message,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
            let what = if err.is_eof() {
                "the file ends early (truncated?)".to_string()
            } else {
                format!("not JSON: {err}")
            };
            corrupt(err.line(), what)
        })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(MODEL_FORMAT) => {}
            other => {
                return Err(corrupt(
                    1,
                    format!("`format` is {other:?}, expected \"{MODEL_FORMAT}\""),
                ));
            }
        }
        let version = value
            .get("version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(1, "no `version`".into()))?;
        if version != u64::from(MODEL_FORMAT_VERSION) {
            return Err(ModelError::UnsupportedVersion {
                path: origin.to_path_buf(),
                found: version,
                supported: MODEL_FORMAT_VERSION,
            });
        }
        let mut model: Self =
            serde_json::from_value(value).map_err(|err| corrupt(1, err.to_string()))?;
        model.validate().map_err(|message| corrupt(1, message))?;
        model.prepare();
        Ok(model)
    }

    /// The consistency a hand-edited or damaged (but still parseable) file may lack.
    fn validate(&self) -> std::result::Result<(), String> {
        let width = self.schema.features.len();
        if width == 0 || self.clusters.is_empty() {
            return Err("no features or no clusters".into());
        }
        let mut names: Vec<&str> = self.schema.names().collect();
        names.sort_unstable();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err("two features have the same name".into());
        }
        if self.scaler.mean.len() != width
            || self.scaler.std.len() != width
            || self.clusters.iter().any(|c| c.centroid.len() != width)
        {
            return Err(format!(
                "{width} features, but the scaler or a centroid has another length"
            ));
        }
        let numbers = self
            .scaler
            .mean
            .iter()
            .chain(&self.scaler.std)
            .chain(self.clusters.iter().flat_map(|c| &c.centroid));
        if numbers.clone().any(|v| !v.is_finite()) {
            return Err("non-finite number in the scaler or a centroid".into());
        }
        if self
            .clusters
            .iter()
            .filter_map(|c| c.spread.as_ref())
            .any(|spread| {
                spread.len() != width || spread.iter().any(|s| !(s.is_finite() && *s > 0.0))
            })
        {
            return Err(format!(
                "a cluster's spread does not have {width} positive numbers"
            ));
        }
        if self.scaler.std.iter().any(|s| *s <= 0.0) {
            return Err("a standard deviation is not positive".into());
        }
        if !(self.threshold.value.is_finite() && self.threshold.value > 0.0) {
            return Err("the threshold is not a positive number".into());
        }
        if !self
            .clusters
            .iter()
            .any(|c| c.state == HealthState::Healthy)
        {
            return Err("no healthy cluster to measure from".into());
        }
        Ok(())
    }
}

/// Writes a file through a temporary file (`PATH.tmp`) and a rename, so a reader never sees
/// half of it. On failure the temporary file is removed: a failed write leaves nothing behind.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        std::io::Write::write_all(&mut file, bytes)?;
        // On disk before the rename makes it the file: a crash then leaves the old one or
        // the new one, never an empty file.
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}
