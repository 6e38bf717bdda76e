//! How a command prints what it reports. A module of its own so that every command's
//! arguments can name it without importing the top-level CLI.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    Table,
    /// One JSON document for scripts.
    Json,
}
