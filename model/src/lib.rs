//! nodestate's model: a window record becomes a named feature vector (log-scaled where
//! heavy-tailed, standardized by a scaler fitted at training time), k-means clusters of
//! training windows get a state each, and a window's anomaly score is its distance to the
//! nearest healthy centroid, against a threshold calibrated on the training windows.
//!
//! The model never depends on the collector: it reads JSON Lines or CSV and exposes [`Model`],
//! [`Hysteresis`] and [`BaselineLearner`] for the daemon.

pub mod baseline;
pub mod error;
pub mod eval;
pub mod hysteresis;
pub mod input;
pub mod model;

pub use baseline::{BaselineLearner, BaselineOptions};
pub use error::{ModelError, Result};
pub use hysteresis::Hysteresis;
pub use model::{Assessment, Contribution, HealthState, Model, TrainOptions};
