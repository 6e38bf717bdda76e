use std::path::PathBuf;

/// Everything that can go wrong reading inputs or models; each names the file and, where
/// there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Input {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no rows to {purpose}")]
    Empty {
        path: PathBuf,
        purpose: &'static str,
    },
    #[error("{path}: not a nodestate model: {message}")]
    BadModel { path: PathBuf, message: String },
    #[error(
        "{path}: the model expects features the input lacks: {missing} (the model was trained on \
         other data; retrain it or give matching input)"
    )]
    FeatureMismatch { path: PathBuf, missing: String },
    #[error("training failed: {0}")]
    Training(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
