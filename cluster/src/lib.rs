//! nodestate's cluster tools: what talks to a node's daemon or a cluster's Prometheus and
//! needs no eBPF. The `collector` binary's `detect`, `rank` and `extender` subcommands call
//! into [`detect`], [`rank`] and [`extender`]; `model train --prometheus` reads through
//! [`fleet`]. All of them ask through the one client in [`promql`].

pub mod conductor;
pub mod detect;
pub mod diagnose;
pub mod extender;
pub mod fleet;
mod http;
pub mod mcp;
pub mod promql;
pub mod rank;

pub use http::openmetrics_response;
