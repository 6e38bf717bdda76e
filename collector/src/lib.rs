//! nodestate's node daemon, as a library so that tests and tools call what `main` calls.
//!
//! Data flows one way: kernel maps ([`kernel`]) → windows ([`window`], [`daemon`]) →
//! records ([`record`]).

pub mod assessor;
pub mod autoblock;
pub mod blocklist;
pub mod btf;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod devices;
pub mod exporter;
pub mod http;
pub mod kernel;
pub mod output;
pub mod pressure;
pub mod privileges;
pub mod probe_report;
pub mod probes;
pub mod procfile;
pub mod record;
pub mod sampler;
pub mod system;
pub mod tracefs;
pub mod window;
