//! The `xdp_blocklist` program: loaded against the pinned maps and attached to interfaces,
//! native mode first.

use std::{fmt, path::Path};

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use collector_common::xdp::names;

use super::{
    Blocklist, BlocklistError,
    pins::PinDir,
    store::{load_object, unix_now},
};

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpModeUsed {
    /// In the driver, before any socket buffer is allocated.
    Native,
    /// Generic (SKB) mode: the driver has no XDP support; slower, same semantics.
    Generic,
}

impl fmt::Display for XdpModeUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic (SKB)",
        })
    }
}

#[derive(Debug, Clone)]
pub struct AttachedInterface {
    pub interface: String,
    pub mode: XdpModeUsed,
    /// Why native mode was not used, when it was not.
    pub native_error: Option<String>,
}

/// The loaded program, its links, and the list it reads. Dropping it detaches everything;
/// the pinned maps (and so the rules) stay.
pub struct XdpBlocklist {
    /// Owns the program; its links go with it.
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
    pub blocklist: Blocklist,
    pub attached: Vec<AttachedInterface>,
}

impl XdpBlocklist {
    /// Loads the program (through the verifier) against the maps pinned in `pin_dir`,
    /// creating them if this is the first run. Attaches nothing.
    pub fn load(pin_dir: &Path) -> Result<Self, BlocklistError> {
        let pins = PinDir::open(pin_dir)?;
        let lock = pins.lock()?;
        let mut ebpf = load_object(&pins)?;
        drop(lock);
        let program: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .expect("xdp_blocklist is in the object")
            .try_into()?;
        program.load()?;
        let blocklist = Blocklist::from_ebpf(pins, &mut ebpf)?;
        Ok(Self {
            ebpf,
            links: Vec::new(),
            blocklist,
            attached: Vec::new(),
        })
    }

    fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(names::PROGRAM)
            .and_then(|program| program.try_into().ok())
            .expect("loaded in XdpBlocklist::load")
    }

    /// Attaches to `interface` in native mode, or in generic mode where the driver cannot.
    pub fn attach(&mut self, interface: &str) -> Result<&AttachedInterface, BlocklistError> {
        let (link, attached) = match self.program().attach(interface, XdpMode::Driver) {
            Ok(link) => (
                link,
                AttachedInterface {
                    interface: interface.to_string(),
                    mode: XdpModeUsed::Native,
                    native_error: None,
                },
            ),
            Err(native) => {
                let link = self.program().attach(interface, XdpMode::Skb)?;
                (
                    link,
                    AttachedInterface {
                        interface: interface.to_string(),
                        mode: XdpModeUsed::Generic,
                        native_error: Some(native.to_string()),
                    },
                )
            }
        };
        self.links.push((interface.to_string(), link));
        self.attached.push(attached);
        Ok(self.attached.last().expect("just pushed"))
    }

    /// Detaches from every interface (dropping does the same).
    pub fn detach_all(&mut self) {
        for (_, link) in std::mem::take(&mut self.links) {
            let _ = self.program().detach(link);
        }
        self.attached.clear();
    }

    /// Removes expired rules now; returns them.
    pub fn expire(&mut self) -> Result<Vec<ipnet::IpNet>, BlocklistError> {
        self.blocklist.expire(unix_now())
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN and returns its verdict
    /// (`XDP_DROP` = 1, `XDP_PASS` = 2). Counters move as for a real packet.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32, BlocklistError> {
        let options = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::default()
        };
        Ok(self.program().test_run(options)?.return_value)
    }

    /// Runs the program `repeat` times on `frame` in the kernel; returns the mean time per
    /// run (for benchmarks).
    pub fn test_run_repeat(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<std::time::Duration, BlocklistError> {
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        Ok(self.program().test_run(options)?.duration)
    }
}

/// What the daemon is asked to do with the drop list.
#[derive(Debug, Clone, Default)]
pub struct XdpOptions {
    /// Interfaces to attach the program to; none: the daemon leaves XDP alone.
    pub interfaces: Vec<String>,
    pub pin_dir: std::path::PathBuf,
}

/// Loads the program and attaches it to every configured interface, logging the mode each
/// got. `None` when no interface is configured. Any failure is fatal: an operator who asked
/// for a drop list must not get a daemon that silently drops nothing.
pub fn start(options: &XdpOptions) -> anyhow::Result<Option<XdpBlocklist>> {
    use anyhow::Context as _;
    if options.interfaces.is_empty() {
        return Ok(None);
    }
    let mut xdp = XdpBlocklist::load(&options.pin_dir).with_context(|| {
        format!(
            "loading the XDP drop list (maps pinned in {})",
            options.pin_dir.display()
        )
    })?;
    for interface in &options.interfaces {
        let attached = xdp
            .attach(interface)
            .with_context(|| format!("attaching the XDP drop list to {interface}"))?;
        match &attached.native_error {
            None => tracing::info!(interface, mode = %attached.mode, "XDP drop list attached"),
            Some(why) => tracing::warn!(
                interface,
                mode = %attached.mode,
                "XDP drop list attached in generic mode: native mode failed ({why})"
            ),
        }
    }
    let rules = xdp.blocklist.list().map(|rules| rules.len()).unwrap_or(0);
    tracing::info!(
        rules,
        pin_dir = %options.pin_dir.display(),
        "XDP drop list enforced"
    );
    Ok(Some(xdp))
}

impl XdpBlocklist {
    /// The daemon's periodic TTL sweep: removes expired rules and logs them; a failure is
    /// logged, not fatal (the next sweep retries).
    pub fn sweep(&mut self) {
        match self.expire() {
            Ok(expired) => {
                for rule in expired {
                    tracing::info!(%rule, "drop-list rule expired and removed");
                }
            }
            Err(err) => tracing::warn!("drop-list TTL sweep failed: {err}"),
        }
    }
}
