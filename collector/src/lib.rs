//! nodestate's node daemon, as a library so that tests and tools call what `main` calls.
//!
//! The folders are the pipeline, and data flows one way through them:
//! [`kernel`] (load and attach the programs, read their maps, sample the costly hooks) →
//! [`window`] (cut time into windows: counter arithmetic, `/proc` and PSI readers, the window
//! record) → [`judge`] (model or learned baseline, hysteresis: the node's state) →
//! [`export`] (the exporter's state and the HTTP server). [`xdp`] is the drop list and
//! automatic flood blocking beside them. [`daemon`] is the loop that wires the stages;
//! [`cli`], [`config`] and [`output`] are the command line; [`build_info`] says which build
//! this is.

pub mod build_info;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod export;
pub mod judge;
pub mod kernel;
pub mod output;
pub mod top;
pub mod window;
pub mod workload;
pub mod xdp;
