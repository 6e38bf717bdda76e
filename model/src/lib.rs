//! nodestate's model: a window record becomes a named feature vector (log-scaled where
//! heavy-tailed, standardized by a scaler fitted at training time), k-means clusters of
//! training windows get a state each, and a window's anomaly score is its distance to the
//! nearest healthy centroid, against a threshold calibrated on the training windows.
//!
//! The daemon uses:
//! - [`Model::load`] and [`Model::score`] (a window in, anything with named fields:
//!   [`WindowFields`], an [`Assessment`] out; [`Model::score_table`] scores many rows),
//! - [`Hysteresis`] to turn per-window judgements into the node's state,
//! - [`BaselineLearner`] when it has no model file: it learns the node's own baseline.
//!
//! The model never depends on the collector and knows nothing of HTTP: it reads JSON Lines or
//! CSV ([`input`]); the `cluster` crate reads the daemons' series from Prometheus into the same
//! [`Table`], and the `model` command (package `model-cli`) wraps it all.

pub mod baseline;
pub mod bench;
pub mod error;
pub mod eval;
pub mod features;
pub mod hysteresis;
pub mod input;
mod kmeans;
pub mod model;
pub mod rank;
pub mod report;
pub mod signals;
pub mod spot;
pub mod state;
pub mod synthetic;
pub mod tail;

pub use baseline::{BaselineLearner, BaselineOptions};
pub use error::{ModelError, Result};
pub use features::{Feature, FeatureSchema, Source, Transform};
pub use hysteresis::{Hysteresis, Step, Transition};
pub use input::{Labels, Row, Table, TrainingData, WindowFields, read_table, read_tables};
pub use model::{Assessment, Contribution, HealthState, MODEL_FORMAT_VERSION, Model, TrainOptions};
