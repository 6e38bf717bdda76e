//! The XDP drop list: source-address rules (addresses or CIDRs) in LPM tries pinned under
//! bpffs, edited by `collector blocklist …` whether or not the daemon runs, and enforced by the
//! `xdp_blocklist` program the daemon attaches to `--xdp-iface` interfaces.
//!
//! See docs/blocklist.md for the layout of the pinned maps and how `import --replace` is atomic.

pub mod attach;
pub mod autoblock;
mod batch;
pub mod cli;
mod clock;
mod edit;
mod layout;
mod link;
pub mod pins;
pub mod rules;
pub mod salvage;
pub mod store;
pub mod upkeep;

pub use ipnet::IpNet;

/// Rules the daemon's upkeep reads hits for by name (the exporter shows them; the rest are
/// summed as `rule="other"`).
pub const TOP_RULES: usize = 10;

pub use attach::{AttachedInterface, XdpAttachMode, XdpBlocklist, XdpModeUsed, XdpOptions};
pub use pins::{DEFAULT_PIN_DIR, PIN_DIR_ENV};
pub use store::{Blocklist, DropMetrics, ListedRule, Origin, Totals};

use rules::BadLine;

#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error(
        "the drop list in {pin_dir} is readable and writable only by root (or holders of \
         CAP_BPF): {detail}. Run the command as root (sudo collector blocklist …)"
    )]
    PermissionDenied { pin_dir: String, detail: String },
    #[error(
        "bpffs is not mounted at /sys/fs/bpf and mounting it failed ({0}); mount it with \
         `mount -t bpf bpf /sys/fs/bpf` (in a container, bind-mount the host's /sys/fs/bpf)"
    )]
    BpffsNotMounted(std::io::Error),
    #[error("{0} is not on a bpffs mount: pinned maps can only live in bpffs")]
    NotBpffs(String),
    #[error("{}", join_bad("bad line", "line", .0))]
    BadRules(Vec<BadLine>),
    #[error("{}", join_bad("bad argument", "argument", .0))]
    BadArguments(Vec<BadLine>),
    /// Every rule asked for that is already listed (not only the first).
    #[error("{} already listed; nothing was changed", join_nets(.0))]
    Duplicate(Vec<IpNet>),
    #[error("{0} is not listed; nothing was changed")]
    NotListed(String),
    #[error(
        "the drop list is full: {family} can hold {max} rules, it has {have} and {adding} more \
         were asked; nothing was changed"
    )]
    Full {
        family: &'static str,
        max: u32,
        have: usize,
        adding: usize,
    },
    #[error("comment is {0} bytes long; at most {max} fit", max = collector_common::xdp::COMMENT_BYTES)]
    CommentTooLong(usize),
    #[error(
        "pinned map {path} does not have the layout this collector expects ({detail}) and is \
         not one it can move to its own: it was left by another version. Save its rules with \
         `collector blocklist --pin-dir {dir} list > rules.txt` (list reads the rules of another \
         layout; their comments, TTLs and counters are not kept), detach it where a daemon \
         pinned it (`collector blocklist --pin-dir {dir} detach --all`, with no daemon running), \
         remove the directory with `rm -r {dir}`, and import them again with \
         `collector blocklist --pin-dir {dir} import rules.txt`",
        dir = pin_dir_of(path)
    )]
    Incompatible { path: String, detail: String },
    #[error(
        "TTL {}s is longer than the maximum of {} days (10 years); nothing was changed (a rule \
         meant to stay should have no TTL)",
        .asked.as_secs(),
        .max.as_secs() / 86_400
    )]
    TtlTooLong {
        asked: std::time::Duration,
        max: std::time::Duration,
    },
    #[error("the drop list in {0} is being edited by another process (it holds the edit lock)")]
    Busy(String),
    #[error("{0}")]
    Attach(String),
    #[error(transparent)]
    NoEbpfObject(#[from] crate::kernel::NoEbpfObject),
    #[error("{what}: {source}")]
    Map {
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
}

/// The directory of a pinned map's path, as the advice to save and re-import names it.
fn pin_dir_of(path: &str) -> String {
    std::path::Path::new(path)
        .parent()
        .map_or_else(|| path.to_string(), |dir| dir.display().to_string())
}

fn join_nets(nets: &[IpNet]) -> String {
    let names: Vec<String> = nets.iter().map(ToString::to_string).collect();
    format!(
        "{} {}",
        names.join(", "),
        if nets.len() == 1 { "is" } else { "are" }
    )
}

fn join_bad(what: &str, place: &str, bad: &[BadLine]) -> String {
    let lines: Vec<String> = bad
        .iter()
        .map(|b| format!("  {place} {}: {}", b.line, b.message))
        .collect();
    format!(
        "{} {what}{}; nothing was changed:\n{}",
        bad.len(),
        if bad.len() == 1 { "" } else { "s" },
        lines.join("\n")
    )
}

impl BlocklistError {
    pub(crate) fn map(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> Self {
        let what = what.into();
        move |source| Self::Map { what, source }
    }
}
