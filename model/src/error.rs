//! The library's errors. Each names the file (and the line, where there is one) so that a
//! caller can print it as it is; each is a variant of its own so that a caller can match.

use std::path::PathBuf;

/// Everything that can go wrong reading inputs, reading models, training and scoring.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of an input file that cannot be read as a row (bad JSON, bad number, bad header).
    #[error("{}:{line}: {message}", path.display())]
    Input {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A CSV row with a different number of fields than the header.
    #[error("{}:{line}: {found} fields, but the header has {expected}", path.display())]
    Ragged {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },
    /// NaN or an infinity in an input (CSV can spell them; a model can do nothing with them).
    #[error("{}:{line}: `{column}` is {value}, not a finite number", path.display())]
    NonFinite {
        path: PathBuf,
        line: usize,
        column: String,
        value: String,
    },
    /// An input file without a single data row, or without a numeric column.
    #[error("{}: {what}", path.display())]
    Empty { path: PathBuf, what: String },
    /// A model file that is truncated, not JSON, or inconsistent.
    #[error("{}:{line}: not a usable nodestate model: {message}", path.display())]
    CorruptModel {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A model file written by a build with another format version.
    #[error(
        "{}: model format version {found}, but this build reads version {supported}: retrain \
         the model with this build",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    /// The input lacks fields the model was trained on.
    #[error(
        "{}:{line}: the model needs {} that the input lacks: {} (was the model trained on other \
         data? retrain it, or score input with the same columns)",
        path.display(),
        if missing.len() == 1 { "a field" } else { "fields" },
        missing.join(", ")
    )]
    FeatureMismatch {
        path: PathBuf,
        line: usize,
        missing: Vec<String>,
    },
    /// A record handed to the library (not read from a file) that cannot be scored.
    #[error("window record: {0}")]
    InvalidRecord(String),
    /// Labels that do not fit the rows they label.
    #[error("{}: {message}", path.display())]
    Labels { path: PathBuf, message: String },
    /// Prometheus could not be asked, refused the query, or answered something else.
    #[error("Prometheus {url}: {message}")]
    Prometheus { url: String, message: String },
    /// A saved learned baseline that cannot be restored (damaged, or saved by another layout,
    /// window length or set of fields).
    #[error("{}: the saved baseline is refused: {message}", path.display())]
    BaselineState { path: PathBuf, message: String },
    /// k-means or calibration failed (too few rows, degenerate data).
    #[error("training: {0}")]
    Training(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
