//! The `xdp_blocklist` program: loaded against the pinned maps and attached to interfaces,
//! native mode first.

use std::{fmt, path::Path};

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuHashMap},
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use collector_common::xdp::{SourceConfig, SourceKey, SourceTraffic, names};
use ipnet::IpNet;

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
        let mut ebpf = load_object(&pins, collector_common::xdp::SOURCE_PREFIXES)?;
        drop(lock);
        let program: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .expect("xdp_blocklist is in the object")
            .try_into()?;
        program.load()?;
        let blocklist = Blocklist::from_ebpf(pins, &mut ebpf)?;
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
            blocklist,
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
