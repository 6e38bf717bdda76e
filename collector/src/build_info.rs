//! What this binary is: the workspace version every artifact carries (`--version`, the image
//! tag, the `.deb`, `nodestate_build_info`), the git revision and the compiler it was built
//! from (set by `build.rs`).

/// The workspace version (`[workspace.package] version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision built, 12 hex digits, or "unknown" (a build outside a git checkout without
/// `NODESTATE_REVISION` set).
pub const REVISION: &str = env!("NODESTATE_REVISION");

/// `rustc --version` of the compiler that built the daemon.
pub const RUSTC_VERSION: &str = env!("NODESTATE_RUSTC_VERSION");
