//! The `xdp_blocklist` program: loaded against the pinned maps and attached to interfaces,
//! native mode first.

use std::{
    fmt,
    os::{fd::AsFd as _, unix::fs::DirBuilderExt as _},
    path::{Path, PathBuf},
};

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuHashMap},
    programs::{
        TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use collector_common::xdp::{SourceConfig, SourceKey, SourceTraffic, names};
use ipnet::IpNet;

use super::{
    Blocklist, BlocklistError,
    clock::boot_ns,
    layout::load_current,
    link,
    pins::{EditLock, PinDir, lock_dir, lock_holders},
    upkeep::Upkeep,
};

/// Under the pin directory, one directory per interface holding its pinned link, named for
/// the mode it was attached in. The link keeps the program attached when the daemon dies
/// (`kill -9`, OOM, a crash), so the list keeps dropping until a daemon adopts the link again
/// or `collector blocklist detach` removes it. A running daemon holds a flock on its
/// interface's directory, so a second daemon is told off instead of taking the link over.
pub const LINKS_DIR: &str = "links";
const LINK_PIN_NAMES: [(&str, XdpModeUsed); 2] = [
    ("native", XdpModeUsed::Native),
    ("generic", XdpModeUsed::Generic),
];

/// The directory of `interface`'s pinned link.
pub fn link_dir(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(LINKS_DIR).join(interface)
}

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

/// How to attach (`--xdp-mode`), as xdp-filter's `--mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpAttachMode {
    /// Native, or generic where the driver cannot.
    #[default]
    Auto,
    /// In the driver only: an error where it has no XDP.
    Native,
    /// Generic (SKB) mode only.
    Skb,
}

impl XdpAttachMode {
    /// Whether a link attached in `used` mode is one this mode asks for.
    fn accepts(self, used: XdpModeUsed) -> bool {
        match self {
            Self::Auto => true,
            Self::Native => used == XdpModeUsed::Native,
            Self::Skb => used == XdpModeUsed::Generic,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AttachedInterface {
    pub interface: String,
    pub mode: XdpModeUsed,
    /// Why native mode was not used, when it was not.
    pub native_error: Option<String>,
    /// Taken over from a link an earlier daemon pinned (it kept dropping meanwhile).
    pub adopted: bool,
    /// Where the link is pinned; `None` where the kernel's XDP attachment is not a BPF link
    /// (before 5.9), which then ends with this process.
    pub pin: Option<PathBuf>,
}

/// The loaded program, its links, and the list it reads. Dropping it detaches everything;
/// the pinned maps (and so the rules) stay.
pub struct XdpBlocklist {
    /// Owns the program; its unpinned links go with it.
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
    /// Descriptors of the pinned links this daemon made (adopted ones the program holds).
    pinned: Vec<FdLink>,
    /// One flock per attached interface's link directory, held while the daemon runs.
    interface_locks: Vec<EditLock>,
    pub blocklist: Blocklist,
    /// The per-window sweep and counters ([`Upkeep`]).
    pub upkeep: Upkeep,
    pub attached: Vec<AttachedInterface>,
    /// This load's own (unpinned) per-source table of passed traffic and its switch.
    sources: PerCpuHashMap<MapData, SourceKey, SourceTraffic>,
    source_config: Array<MapData, SourceConfig>,
}

/// Passed traffic from one source prefix, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceCount {
    pub prefix: IpNet,
    pub packets: u64,
    pub bytes: u64,
}

impl XdpBlocklist {
    /// Loads the program (through the verifier) against the maps pinned in `pin_dir`,
    /// creating them if this is the first run. Attaches nothing.
    pub fn load(pin_dir: &Path) -> Result<Self, BlocklistError> {
        let pins = PinDir::open(pin_dir)?;
        let lock = pins.lock()?;
        let (mut ebpf, legacy) = load_current(&pins, collector_common::xdp::SOURCE_PREFIXES)?;
        let program: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .expect("xdp_blocklist is in the object")
            .try_into()?;
        program.load()?;
        let mut blocklist = Blocklist::from_ebpf(pins, &mut ebpf)?;
        blocklist.restore(&legacy)?;
        drop(lock);
        let map = |name: &str| BlocklistError::map(format!("map {name}"));
        let sources = PerCpuHashMap::try_from(
            ebpf.take_map(names::SOURCE_TRAFFIC)
                .expect("SOURCE_TRAFFIC is in the object"),
        )
        .map_err(map(names::SOURCE_TRAFFIC))?;
        let source_config = Array::try_from(
            ebpf.take_map(names::SOURCE_CONFIG)
                .expect("SOURCE_CONFIG is in the object"),
        )
        .map_err(map(names::SOURCE_CONFIG))?;
        Ok(Self {
            ebpf,
            links: Vec::new(),
            pinned: Vec::new(),
            interface_locks: Vec::new(),
            blocklist,
            upkeep: Upkeep::default(),
            attached: Vec::new(),
            sources,
            source_config,
        })
    }

    /// Starts counting passed traffic per source prefix of these lengths (IPv4 1..=32,
    /// IPv6 1..=128); off until called.
    pub fn count_sources(
        &mut self,
        v4_prefix_len: u8,
        v6_prefix_len: u8,
    ) -> Result<(), BlocklistError> {
        let config = SourceConfig {
            enabled: 1,
            v4_prefix_len: u32::from(v4_prefix_len.clamp(1, 32)),
            v6_prefix_len: u32::from(v6_prefix_len.clamp(1, 128)),
            _pad: 0,
        };
        self.source_config
            .set(0, config, 0)
            .map_err(BlocklistError::map("enabling the per-source counters"))
    }

    /// Passed traffic per source prefix since counting started (prefixes the LRU table
    /// evicted start again from zero).
    pub fn source_counts(&self) -> Result<Vec<SourceCount>, BlocklistError> {
        let mut counts = Vec::new();
        for entry in self.sources.iter() {
            let (key, per_cpu) = match entry {
                Ok(entry) => entry,
                // Evicted between listing its key and reading it: nothing to count.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(err) => {
                    return Err(BlocklistError::Map {
                        what: "reading the per-source counters".into(),
                        source: err,
                    });
                }
            };
            let Some(prefix) = source_prefix(&key) else {
                continue;
            };
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0u64, 0u64), |(p, b), t| (p + t.packets, b + t.bytes));
            counts.push(SourceCount {
                prefix,
                packets,
                bytes,
            });
        }
        Ok(counts)
    }

    fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(names::PROGRAM)
            .and_then(|program| program.try_into().ok())
            .expect("loaded in XdpBlocklist::load")
    }

    /// Attaches to `interface`: adopts the link an earlier daemon pinned there if there is
    /// one (swapping in this load's program, atomically), else attaches in native mode, or in
    /// generic mode where the driver cannot, and pins the new link.
    pub fn attach(&mut self, interface: &str) -> Result<&AttachedInterface, BlocklistError> {
        self.attach_in(interface, XdpAttachMode::Auto)
    }

    /// [`XdpBlocklist::attach`] in the given mode: `Native` or `Skb` only, or `Auto`. A link
    /// pinned earlier in the other mode is not adopted: attaching then fails, saying how to
    /// detach it.
    pub fn attach_in(
        &mut self,
        interface: &str,
        mode: XdpAttachMode,
    ) -> Result<&AttachedInterface, BlocklistError> {
        let dir = link_dir(&self.blocklist.pins.path, interface);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| BlocklistError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
        let Some(lock) = lock_dir(&dir, true)? else {
            let holders = lock_holders(&dir);
            return Err(BlocklistError::Attach(format!(
                "another nodestate daemon already serves the XDP drop list on {interface} ({}); \
                 run one daemon per node, or stop that one first",
                if holders.is_empty() {
                    "it holds the lock on its link directory".to_string()
                } else {
                    holders.join(", ")
                }
            )));
        };
        let attached = match self.adopt(interface, &dir, mode)? {
            Some(attached) => attached,
            None => self.attach_new(interface, &dir, mode)?,
        };
        self.interface_locks.push(lock);
        self.attached.push(attached);
        Ok(self.attached.last().expect("just pushed"))
    }

    /// Takes over the link pinned for `interface`, if one is there and still attached to it.
    fn adopt(
        &mut self,
        interface: &str,
        dir: &Path,
        wanted: XdpAttachMode,
    ) -> Result<Option<AttachedInterface>, BlocklistError> {
        for (name, mode) in LINK_PIN_NAMES {
            let path = dir.join(name);
            if !path.exists() || !wanted.accepts(mode) {
                continue;
            }
            let stale = |why: String| {
                tracing::warn!(interface, pin = %path.display(), "removing a stale pinned XDP link: {why}");
                let _ = std::fs::remove_file(&path);
            };
            let index = match link::open_pin(&path).and_then(|fd| link::link_info(fd.as_fd())) {
                Ok((_, _, _, index)) => index,
                Err(err) => {
                    stale(format!("cannot read it ({err})"));
                    continue;
                }
            };
            if index == 0 || Some(index) != link::ifindex(interface) {
                // The interface it was attached to went away (or is another one now).
                stale(format!("attached to ifindex {index}, not to {interface}"));
                continue;
            }
            let fd_link = FdLink::from(PinnedLink::from_pin(&path).map_err(|err| {
                BlocklistError::Attach(format!("opening {}: {err}", path.display()))
            })?);
            let xdp_link = XdpLink::try_from(fd_link).map_err(|err| {
                BlocklistError::Attach(format!("{} is not an XDP link: {err}", path.display()))
            })?;
            let id = self.program().attach_to_link(xdp_link)?;
            self.links.push((interface.to_string(), id));
            return Ok(Some(AttachedInterface {
                interface: interface.to_string(),
                mode,
                native_error: None,
                adopted: true,
                pin: Some(path),
            }));
        }
        Ok(None)
    }

    fn attach_new(
        &mut self,
        interface: &str,
        dir: &Path,
        wanted: XdpAttachMode,
    ) -> Result<AttachedInterface, BlocklistError> {
        let busy = |err: &aya::programs::ProgramError| {
            let text = format!("{err:?}");
            text.contains("File exists") || text.contains("Device or resource busy")
        };
        let first = match wanted {
            XdpAttachMode::Skb => XdpMode::Skb,
            XdpAttachMode::Auto | XdpAttachMode::Native => XdpMode::Driver,
        };
        let (id, mode, native_error) = match self.program().attach(interface, first) {
            Ok(id) if wanted == XdpAttachMode::Skb => (id, XdpModeUsed::Generic, None),
            Ok(id) => (id, XdpModeUsed::Native, None),
            Err(native) if busy(&native) => {
                return Err(BlocklistError::Attach(format!(
                    "cannot attach the XDP drop list to {interface}: {}. Detach it first (for \
                     one of ours: `collector blocklist detach --iface {interface}`)",
                    link::describe_holder(interface)
                )));
            }
            Err(err) if wanted != XdpAttachMode::Auto => {
                return Err(BlocklistError::Attach(format!(
                    "cannot attach the XDP drop list to {interface} in {} mode (--xdp-mode): \
                     {err}{}",
                    if wanted == XdpAttachMode::Native {
                        "native"
                    } else {
                        "generic (SKB)"
                    },
                    if wanted == XdpAttachMode::Native {
                        "; the driver may have no XDP: --xdp-mode skb works on every interface"
                    } else {
                        ""
                    }
                )));
            }
            Err(native) => {
                let id = self.program().attach(interface, XdpMode::Skb)?;
                (id, XdpModeUsed::Generic, Some(native.to_string()))
            }
        };
        let name = LINK_PIN_NAMES
            .iter()
            .find(|(_, m)| *m == mode)
            .map(|(name, _)| *name)
            .expect("every mode has a pin name");
        let path = dir.join(name);
        let link = self.program().take_link(id)?;
        let pin = match FdLink::try_from(link) {
            Ok(fd_link) => match fd_link.pin(&path) {
                Ok(pinned) => {
                    self.pinned.push(FdLink::from(pinned));
                    Some(path)
                }
                Err(err) => {
                    return Err(BlocklistError::Attach(format!(
                        "pinning the XDP link of {interface} at {}: {err}",
                        path.display()
                    )));
                }
            },
            // A netlink attachment (kernels before 5.9): converting consumed and detached
            // it, so attach again, unpinned; it ends with this process.
            Err(_) => {
                tracing::warn!(
                    interface,
                    "this kernel attaches XDP without BPF links: the drop list stops if the daemon dies"
                );
                let mode_flag = match mode {
                    XdpModeUsed::Native => XdpMode::Driver,
                    XdpModeUsed::Generic => XdpMode::Skb,
                };
                let id = self.program().attach(interface, mode_flag)?;
                self.links.push((interface.to_string(), id));
                None
            }
        };
        Ok(AttachedInterface {
            interface: interface.to_string(),
            mode,
            native_error,
            adopted: false,
            pin,
        })
    }

    /// Detaches from every interface and removes the pinned links (a deliberate stop:
    /// SIGTERM or SIGINT). A crash skips this, so the pins keep the list enforced.
    pub fn detach_all(&mut self) {
        for attached in std::mem::take(&mut self.attached) {
            if let Some(pin) = &attached.pin
                && let Err(err) = detach_pinned(pin)
            {
                tracing::warn!(
                    interface = attached.interface,
                    "detaching the pinned XDP link: {err}"
                );
            }
        }
        self.pinned.clear();
        for (_, link) in std::mem::take(&mut self.links) {
            let _ = self.program().detach(link);
        }
        self.interface_locks.clear();
    }

    /// Adds rules without waiting for the edit lock and, usually, without walking the list
    /// ([`Upkeep::add`]).
    pub fn add_nowait(
        &mut self,
        nets: &[IpNet],
        comment: Option<&str>,
        ttl: Option<std::time::Duration>,
        origin: super::Origin,
    ) -> Result<(), BlocklistError> {
        self.upkeep
            .add(&mut self.blocklist, nets, comment, ttl, origin)
    }

    /// The live rules as (prefix, added automatically), from the upkeep's cache (read again
    /// first if the list changed since).
    pub fn listed_rules(&mut self) -> Result<Vec<(IpNet, bool)>, BlocklistError> {
        self.upkeep.listed(&self.blocklist)
    }

    /// One window's upkeep (see [`Upkeep`]): expired rules removed unless another process
    /// holds the edit lock, then the drop metrics.
    pub fn window_upkeep(
        &mut self,
        top: usize,
    ) -> Result<super::store::DropMetrics, BlocklistError> {
        self.upkeep.window(&mut self.blocklist, top)
    }

    /// Removes expired rules now; returns them.
    pub fn expire(&mut self) -> Result<Vec<ipnet::IpNet>, BlocklistError> {
        self.blocklist.expire(boot_ns())
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
    /// Native, generic (SKB), or native with generic where native fails.
    pub mode: XdpAttachMode,
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
            .attach_in(interface, options.mode)
            .with_context(|| format!("attaching the XDP drop list to {interface}"))?;
        match &attached.native_error {
            None if attached.adopted => tracing::info!(
                interface,
                mode = %attached.mode,
                "XDP drop list attached: adopted the link an earlier daemon pinned (it kept dropping meanwhile)"
            ),
            None => tracing::info!(interface, mode = %attached.mode, "XDP drop list attached"),
            Some(why) => tracing::warn!(
                interface,
                mode = %attached.mode,
                "XDP drop list attached in generic mode: native mode failed ({why})"
            ),
        }
    }
    // Also the first read of the rules into the upkeep's cache.
    let rules = xdp
        .window_upkeep(crate::xdp::TOP_RULES)
        .map(|metrics| metrics.rules)
        .unwrap_or(0);
    tracing::info!(
        rules,
        pin_dir = %options.pin_dir.display(),
        "XDP drop list enforced"
    );
    Ok(Some(xdp))
}

/// Forces the pinned link at `pin` off its interface and removes the pin.
fn detach_pinned(pin: &Path) -> Result<(), BlocklistError> {
    let io = |what: &str, source: std::io::Error| BlocklistError::Io {
        what: format!("{what} {}", pin.display()),
        source,
    };
    let fd = link::open_pin(pin).map_err(|source| io("opening", source))?;
    link::force_detach(fd.as_fd()).map_err(|source| io("detaching", source))?;
    std::fs::remove_file(pin).map_err(|source| io("removing", source))
}

/// `collector blocklist detach`: removes the pinned XDP links of `interfaces` (all when
/// empty), which detaches the program even while no daemon runs. Refuses an interface a
/// running daemon serves (stop the daemon: SIGTERM detaches too). Returns the interfaces
/// detached.
pub fn detach_pinned_links(
    pin_dir: &Path,
    interfaces: &[String],
) -> Result<Vec<String>, BlocklistError> {
    let links = pin_dir.join(LINKS_DIR);
    let mut names: Vec<String> = interfaces.to_vec();
    if names.is_empty()
        && let Ok(entries) = std::fs::read_dir(&links)
    {
        names = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
    }
    let mut detached = Vec::new();
    for interface in names {
        let dir = link_dir(pin_dir, &interface);
        let pins: Vec<PathBuf> = LINK_PIN_NAMES
            .iter()
            .map(|(name, _)| dir.join(name))
            .filter(|path| path.exists())
            .collect();
        if pins.is_empty() {
            if !interfaces.is_empty() {
                return Err(BlocklistError::Attach(format!(
                    "no pinned XDP link for {interface} in {}",
                    links.display()
                )));
            }
            let _ = std::fs::remove_dir(&dir);
            continue;
        }
        let Some(lock) = lock_dir(&dir, true)? else {
            let holders = lock_holders(&dir);
            return Err(BlocklistError::Attach(format!(
                "a running daemon serves {interface} ({}): stop it (SIGTERM detaches) instead",
                holders.join(", ")
            )));
        };
        for pin in pins {
            detach_pinned(&pin)?;
        }
        drop(lock);
        let _ = std::fs::remove_dir(&dir);
        detached.push(interface);
    }
    Ok(detached)
}

/// The prefix a per-source key stands for; `None` for a key no program of ours writes.
pub fn source_prefix(key: &SourceKey) -> Option<IpNet> {
    let addr = match key.family {
        4 => IpAddr::V4(Ipv4Addr::new(
            key.addr[0],
            key.addr[1],
            key.addr[2],
            key.addr[3],
        )),
        6 => IpAddr::V6(Ipv6Addr::from(key.addr)),
        _ => return None,
    };
    IpNet::new(addr, key.prefix_len).ok().map(|net| net.trunc())
}

/// Per-prefix differences between two readings of the cumulative counters: a prefix the
/// LRU table evicted and re-created counts from zero again, so a smaller reading is all new.
pub fn source_deltas(
    previous: &HashMap<IpNet, (u64, u64)>,
    current: &[SourceCount],
) -> Vec<SourceCount> {
    current
        .iter()
        .filter_map(|now| {
            let (packets_before, bytes_before) =
                previous.get(&now.prefix).copied().unwrap_or((0, 0));
            let (packets, bytes) = if now.packets >= packets_before {
                (
                    now.packets - packets_before,
                    now.bytes.saturating_sub(bytes_before),
                )
            } else {
                (now.packets, now.bytes)
            };
            (packets > 0).then_some(SourceCount {
                prefix: now.prefix,
                packets,
                bytes,
            })
        })
        .collect()
}
