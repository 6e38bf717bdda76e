//! Offline checks of `deploy/`: render each kustomize overlay with `kubectl kustomize`, read
//! every object into the Kubernetes API's own types (k8s-openapi, generated from the API
//! server's OpenAPI schema), refuse fields those types do not know, and check the rules the
//! DaemonSet must keep (least privilege, probes, resources, host paths).
//!
//! The rules are functions returning every violation found, so a test can also show that a
//! bad manifest is caught.
//!
//! One module, one job: `render` turns an overlay into typed objects, `objects` holds the
//! types they are read into, `policy` the rules those objects must keep.

mod objects;
mod policy;
mod render;

pub use objects::*;
pub use policy::*;
pub use render::*;

/// The namespace every namespaced object lives in.
pub const NAMESPACE: &str = "nodestate";
/// The label that selects the DaemonSet's pods (the scrape job and the Service use it).
pub const APP_LABEL: (&str, &str) = ("app.kubernetes.io/name", "nodestate");
/// The collector's metrics port and its name.
pub const METRICS_PORT: (&str, i32) = ("metrics", 9464);
