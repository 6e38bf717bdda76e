//! Featurization and k-means clustering of window records into healthy and degraded states.
