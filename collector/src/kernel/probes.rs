//! Which hook each signal uses: the best one this kernel offers, tried in order, with the
//! result of every attempt kept for the start-up table and the metrics.

use std::collections::HashSet;

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{BtfTracePoint, KProbe, RawTracePoint, TracePoint},
};

use super::{
    report::{AttachReport, HookOutcome},
    tracefs::Tracefs,
};

/// One place a program can be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Tracepoint(&'static str, &'static str),
    /// A raw tracepoint: the program gets the tracepoint's arguments, no record is built.
    RawTracepoint(&'static str),
    /// A BTF tracepoint (`tp_btf`): a raw tracepoint whose pointer arguments the verifier
    /// types from the kernel's BTF, so the program reads through them with plain loads.
    BtfTracepoint(&'static str),
    /// A kprobe (or kretprobe: the program's type decides) on a kernel function.
    Kprobe(&'static str),
    /// No program of its own: counted by the raw syscall exit program (see `hook_config`).
    SyscallExit,
    /// No program of its own: the process-exit program reads exit codes from `task_struct`.
    ProcessExitTask,
}

impl Hook {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tracepoint(..) | Self::SyscallExit | Self::ProcessExitTask => "tracepoint",
            Self::RawTracepoint(_) => "raw_tracepoint",
            Self::BtfTracepoint(_) => "btf_tracepoint",
            Self::Kprobe(_) => "kprobe",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Tracepoint(category, name) => format!("tracepoint {category}:{name}"),
            Self::RawTracepoint(name) => format!("raw tracepoint {name}"),
            Self::BtfTracepoint(name) => format!("BTF tracepoint {name}"),
            Self::Kprobe(function) => format!("kprobe {function}"),
            Self::SyscallExit => "tracepoint raw_syscalls:sys_exit (open syscalls)".into(),
            Self::ProcessExitTask => {
                "tracepoint sched:sched_process_exit (task_struct exit_code, BTF)".into()
            }
        }
    }
}

/// The "program" of the opens fallback: no program of its own, the syscall exit program
/// counts open-family syscalls once the daemon switches it on.
pub const SYSCALL_EXIT_COUNTS: &str = "syscall exit program";

/// The "program" of the exit-code hook without a per-syscall tracepoint.
pub const PROCESS_EXIT_COUNTS: &str = "process exit program";

/// One way to get a signal: every (program, hook) pair must attach for it to count.
pub type Alternative = &'static [(&'static str, Hook)];

/// A signal and its alternatives, best first.
pub struct SignalPlan {
    /// Short name for `--signals` / `--disable-signals`.
    pub id: &'static str,
    pub signal: &'static str,
    pub alternatives: &'static [Alternative],
}

impl SignalPlan {
    /// The report of a signal turned off by configuration: its best hook, not tried.
    pub(super) fn disabled(&self) -> AttachReport {
        let (program, hook) = self.alternatives[0][0];
        AttachReport {
            signal: self.signal,
            program,
            hook: hook.describe(),
            kind: "none",
            outcome: HookOutcome::Disabled,
            tried: Vec::new(),
        }
    }
}

use Hook::{BtfTracepoint, Kprobe, ProcessExitTask, RawTracepoint, SyscallExit, Tracepoint};

/// The BTF scheduler programs, which need `task_struct.pid`'s offset from BTF.
pub const SCHED_SWITCH_BTF: &str = "sched_switch_btf";

/// Every signal the collector knows, in the order of the start-up table.
pub const SIGNALS: &[SignalPlan] = &[
    SignalPlan {
        id: "block-issue",
        signal: "block I/O issue",
        alternatives: &[&[("block_rq_issue", Tracepoint("block", "block_rq_issue"))]],
    },
    SignalPlan {
        id: "block-complete",
        signal: "block I/O completion",
        alternatives: &[&[(
            "block_rq_complete",
            Tracepoint("block", "block_rq_complete"),
        )]],
    },
    SignalPlan {
        id: "sched",
        signal: "context switches, run-queue latency",
        // BTF tracepoints first: the kernel builds no trace record for them (two task names
        // copied per switch) and they read `pid` with a plain load.
        alternatives: &[
            &[
                (SCHED_SWITCH_BTF, BtfTracepoint("sched_switch")),
                ("sched_wakeup_btf", BtfTracepoint("sched_wakeup")),
                ("sched_wakeup_new_btf", BtfTracepoint("sched_wakeup_new")),
            ],
            &[
                ("sched_switch", Tracepoint("sched", "sched_switch")),
                ("sched_wakeup", Tracepoint("sched", "sched_wakeup")),
                ("sched_wakeup", Tracepoint("sched", "sched_wakeup_new")),
            ],
        ],
    },
    SignalPlan {
        id: "fork",
        signal: "process creation",
        alternatives: &[&[(
            "sched_process_fork",
            Tracepoint("sched", "sched_process_fork"),
        )]],
    },
    SignalPlan {
        id: "exit",
        signal: "process exits",
        alternatives: &[&[(
            "sched_process_exit",
            Tracepoint("sched", "sched_process_exit"),
        )]],
    },
    SignalPlan {
        id: "exit-code",
        signal: "non-zero exit codes",
        // The per-syscall tracepoint slows every syscall of the node (~70 ns here): only when
        // the kernel's BTF does not say where task_struct keeps the exit code.
        alternatives: &[
            &[(PROCESS_EXIT_COUNTS, ProcessExitTask)],
            &[(
                "sys_enter_exit_group",
                Tracepoint("syscalls", "sys_enter_exit_group"),
            )],
        ],
    },
    SignalPlan {
        id: "fatal-signal",
        signal: "fatal signals (crashes)",
        alternatives: &[&[("signal_generate", Tracepoint("signal", "signal_generate"))]],
    },
    SignalPlan {
        id: "oom",
        signal: "OOM kills",
        alternatives: &[&[("oom_mark_victim", Tracepoint("oom", "mark_victim"))]],
    },
    SignalPlan {
        id: "reclaim",
        signal: "memory reclaim stalls",
        alternatives: &[
            &[
                (
                    "reclaim_begin",
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_begin"),
                ),
                (
                    "reclaim_end",
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_end"),
                ),
                (
                    "reclaim_begin",
                    Tracepoint("vmscan", "mm_vmscan_memcg_reclaim_begin"),
                ),
                (
                    "reclaim_end",
                    Tracepoint("vmscan", "mm_vmscan_memcg_reclaim_end"),
                ),
            ],
            &[
                (
                    "reclaim_begin",
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_begin"),
                ),
                (
                    "reclaim_end",
                    Tracepoint("vmscan", "mm_vmscan_direct_reclaim_end"),
                ),
            ],
        ],
    },
    SignalPlan {
        id: "syscalls",
        signal: "syscalls and errors by errno",
        alternatives: &[
            &[("sys_exit_btf", BtfTracepoint("sys_exit"))],
            &[("sys_exit_raw", RawTracepoint("sys_exit"))],
            &[("sys_exit", Tracepoint("raw_syscalls", "sys_exit"))],
        ],
    },
    SignalPlan {
        id: "opens",
        signal: "file opens",
        alternatives: &[
            &[("do_sys_openat2_return", Kprobe("do_sys_openat2"))],
            &[(SYSCALL_EXIT_COUNTS, SyscallExit)],
        ],
    },
    SignalPlan {
        id: "fsync",
        signal: "fsync latency",
        alternatives: &[
            &[
                ("vfs_fsync_range", Kprobe("vfs_fsync_range")),
                ("vfs_fsync_range_return", Kprobe("vfs_fsync_range")),
            ],
            // ext4's own tracepoints cost nothing to other syscalls; per-syscall tracepoints
            // put every syscall of the node on the slower traced path (~70 ns each here), so
            // they are the last resort.
            &[
                ("fsync_enter", Tracepoint("ext4", "ext4_sync_file_enter")),
                ("fsync_exit", Tracepoint("ext4", "ext4_sync_file_exit")),
            ],
            &[
                ("fsync_enter", Tracepoint("syscalls", "sys_enter_fsync")),
                ("fsync_exit", Tracepoint("syscalls", "sys_exit_fsync")),
                ("fsync_enter", Tracepoint("syscalls", "sys_enter_fdatasync")),
                ("fsync_exit", Tracepoint("syscalls", "sys_exit_fdatasync")),
            ],
        ],
    },
    SignalPlan {
        id: "net-rx",
        signal: "packets received",
        alternatives: &[&[("netif_receive_skb", Tracepoint("net", "netif_receive_skb"))]],
    },
    SignalPlan {
        id: "net-tx",
        signal: "packets sent",
        alternatives: &[&[("net_dev_xmit", Tracepoint("net", "net_dev_xmit"))]],
    },
    SignalPlan {
        id: "net-drops",
        signal: "packet drops by reason",
        alternatives: &[&[("kfree_skb", Tracepoint("skb", "kfree_skb"))]],
    },
    SignalPlan {
        id: "tcp-retransmits",
        signal: "TCP retransmits",
        alternatives: &[&[(
            "tcp_retransmit_skb",
            Tracepoint("tcp", "tcp_retransmit_skb"),
        )]],
    },
    SignalPlan {
        id: "tcp-states",
        signal: "TCP connects, accepts, failures",
        alternatives: &[&[(
            "inet_sock_set_state",
            Tracepoint("sock", "inet_sock_set_state"),
        )]],
    },
    SignalPlan {
        id: "tcp-resets",
        signal: "TCP resets",
        alternatives: &[&[
            ("tcp_receive_reset", Tracepoint("tcp", "tcp_receive_reset")),
            ("tcp_send_reset", Tracepoint("tcp", "tcp_send_reset")),
        ]],
    },
    // Per-cgroup attribution only (see `kernel::cgroups`).
    SignalPlan {
        id: "cgroup-moves",
        signal: "cgroup moves of tasks (attribution)",
        alternatives: &[&[(
            collector_common::names::CGROUP_ATTACH_TASK,
            Tracepoint("cgroup", "cgroup_attach_task"),
        )]],
    },
    SignalPlan {
        id: "block-submit",
        signal: "block I/O submitters (attribution)",
        alternatives: &[&[(
            collector_common::names::BLOCK_BIO_QUEUE,
            Tracepoint("block", "block_bio_queue"),
        )]],
    },
];

/// Checks a list of signal ids against the table, naming the unknown ones.
pub fn validate_signal_ids(ids: &[String]) -> Result<(), String> {
    let unknown: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| !SIGNALS.iter().any(|plan| plan.id == *id))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        let known: Vec<&str> = SIGNALS.iter().map(|plan| plan.id).collect();
        Err(format!(
            "unknown signal(s) {}; known: {}",
            unknown.join(", "),
            known.join(", ")
        ))
    }
}

/// Attaches programs, loading each at most once (one program may serve several hooks).
pub struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    tracefs: &'a Tracefs,
    loaded: HashSet<&'static str>,
    /// Signals to skip whatever the kernel offers (their record layout could not be read).
    disabled_programs: HashSet<&'static str>,
    /// Whether the raw syscall exit program is attached (the opens fallback needs it).
    pub sys_exit_attached: bool,
    /// Whether the process-exit program is attached and BTF gave `task_struct.exit_code`.
    process_exit_attached: bool,
    task_exit_code_known: bool,
    /// Every link made with its hook, so the daemon can detach them all at once on exit and
    /// the sampler can take some off and put them back.
    links: Vec<(&'static str, Hook, Link)>,
    /// The kernel's BTF for the BTF tracepoints, read on first use.
    btf: Option<Result<aya::Btf, String>>,
}

impl<'a> Attacher<'a> {
    pub fn new(ebpf: &'a mut Ebpf, tracefs: &'a Tracefs, task_exit_code_known: bool) -> Self {
        Self {
            ebpf,
            tracefs,
            loaded: HashSet::new(),
            disabled_programs: HashSet::new(),
            sys_exit_attached: false,
            process_exit_attached: false,
            task_exit_code_known,
            links: Vec::new(),
            btf: None,
        }
    }

    /// The links made, as owned values with their program's name: dropping one detaches it.
    pub fn into_owned_links(self) -> Vec<(&'static str, Hook, OwnedLink)> {
        let Self { ebpf, links, .. } = self;
        links
            .into_iter()
            .filter_map(|(program, hook, link)| {
                let prog = ebpf.program_mut(program)?;
                let owned = match link {
                    Link::Tracepoint(id) => <&mut TracePoint>::try_from(prog)
                        .ok()?
                        .take_link(id)
                        .ok()
                        .map(OwnedLink::Tracepoint),
                    Link::Kprobe(id) => <&mut KProbe>::try_from(prog)
                        .ok()?
                        .take_link(id)
                        .ok()
                        .map(OwnedLink::Kprobe),
                    Link::RawTracepoint(id) => <&mut RawTracePoint>::try_from(prog)
                        .ok()?
                        .take_link(id)
                        .ok()
                        .map(OwnedLink::RawTracepoint),
                    Link::BtfTracepoint(id) => <&mut BtfTracePoint>::try_from(prog)
                        .ok()?
                        .take_link(id)
                        .ok()
                        .map(OwnedLink::BtfTracepoint),
                    Link::None => None,
                };
                owned.map(|link| (program, hook, link))
            })
            .collect()
    }

    /// Never attach `program` (its tracepoint's record layout is unusable here).
    pub fn disable(&mut self, program: &'static str) {
        self.disabled_programs.insert(program);
    }

    /// Tries each alternative of `plan` in order and reports what it got.
    pub fn attach(&mut self, plan: &SignalPlan) -> AttachReport {
        let mut tried = Vec::new();
        for alternative in plan.alternatives {
            match self.attach_alternative(alternative) {
                Ok(()) => {
                    let (program, hook) = alternative[0];
                    return AttachReport {
                        signal: plan.signal,
                        program,
                        hook: hook.describe(),
                        kind: hook.kind(),
                        outcome: HookOutcome::Attached,
                        tried,
                    };
                }
                Err(outcome) => {
                    let (_, hook) = alternative[0];
                    tried.push(format!("{}: {outcome}", hook.describe()));
                }
            }
        }
        let (program, hook) = plan.alternatives[0][0];
        let outcome = if tried.iter().all(|attempt| attempt.contains("missing")) {
            HookOutcome::Missing
        } else {
            HookOutcome::Failed(tried.join("; "))
        };
        AttachReport {
            signal: plan.signal,
            program,
            hook: hook.describe(),
            kind: "none",
            outcome,
            tried,
        }
    }

    fn attach_alternative(&mut self, alternative: Alternative) -> Result<(), HookOutcome> {
        // Check every hook before attaching any, so a half-attached alternative never counts.
        for &(program, hook) in alternative {
            if self.disabled_programs.contains(program) {
                return Err(HookOutcome::Missing);
            }
            match hook {
                Tracepoint(category, name) if !self.tracefs.has_event(category, name) => {
                    return Err(HookOutcome::Missing);
                }
                SyscallExit if !self.sys_exit_attached => return Err(HookOutcome::Missing),
                ProcessExitTask if !(self.process_exit_attached && self.task_exit_code_known) => {
                    return Err(HookOutcome::Missing);
                }
                _ => {}
            }
        }
        let mut links = Vec::new();
        for &(program, hook) in alternative {
            match self.attach_one(program, hook) {
                Ok(link) => links.push((program, hook, link)),
                Err(err) => {
                    for (program, _, link) in links {
                        self.detach(program, link);
                    }
                    return Err(HookOutcome::Failed(format!("{err:#}")));
                }
            }
        }
        self.links.extend(links);
        if alternative
            .iter()
            .any(|(program, _)| matches!(*program, "sys_exit" | "sys_exit_raw" | "sys_exit_btf"))
        {
            self.sys_exit_attached = true;
        }
        if alternative
            .iter()
            .any(|(program, _)| *program == "sched_process_exit")
        {
            self.process_exit_attached = true;
        }
        Ok(())
    }

    fn attach_one(&mut self, program: &'static str, hook: Hook) -> anyhow::Result<Link> {
        if matches!(hook, SyscallExit | ProcessExitTask) {
            return Ok(Link::None);
        }
        if matches!(hook, BtfTracepoint(_)) && self.btf.is_none() {
            self.btf = Some(aya::Btf::from_sys_fs().map_err(|err| format!("kernel BTF: {err}")));
        }
        let first_load = self.loaded.insert(program);
        let prog = self
            .ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the eBPF object"))?;
        match hook {
            Tracepoint(category, name) => {
                let tracepoint: &mut TracePoint = prog.try_into()?;
                if first_load {
                    tracepoint
                        .load()
                        .with_context(|| format!("verifier rejected {program}"))?;
                }
                let link = tracepoint
                    .attach(category, name)
                    .with_context(|| format!("attaching {program} to {category}:{name}"))?;
                Ok(Link::Tracepoint(link))
            }
            Kprobe(function) => {
                let kprobe: &mut KProbe = prog.try_into()?;
                if first_load {
                    kprobe
                        .load()
                        .with_context(|| format!("verifier rejected {program}"))?;
                }
                let link = kprobe
                    .attach(function, 0)
                    .with_context(|| format!("attaching {program} to {function}"))?;
                Ok(Link::Kprobe(link))
            }
            RawTracepoint(name) => {
                let raw: &mut RawTracePoint = prog.try_into()?;
                if first_load {
                    raw.load()
                        .with_context(|| format!("verifier rejected {program}"))?;
                }
                let link = raw
                    .attach(name)
                    .with_context(|| format!("attaching {program} to raw tracepoint {name}"))?;
                Ok(Link::RawTracepoint(link))
            }
            BtfTracepoint(name) => {
                let btf = match &self.btf {
                    Some(Ok(btf)) => btf,
                    Some(Err(err)) => anyhow::bail!("{err}"),
                    None => anyhow::bail!("kernel BTF not read"),
                };
                let tracepoint: &mut BtfTracePoint = prog.try_into()?;
                if first_load {
                    tracepoint
                        .load(name, btf)
                        .with_context(|| format!("verifier rejected {program}"))?;
                }
                let link = tracepoint
                    .attach()
                    .with_context(|| format!("attaching {program} to BTF tracepoint {name}"))?;
                Ok(Link::BtfTracepoint(link))
            }
            SyscallExit | ProcessExitTask => Ok(Link::None),
        }
    }

    fn detach(&mut self, program: &str, link: Link) {
        let Some(prog) = self.ebpf.program_mut(program) else {
            return;
        };
        match link {
            Link::Tracepoint(link) => {
                if let Ok(tracepoint) = <&mut TracePoint>::try_from(prog) {
                    let _ = tracepoint.detach(link);
                }
            }
            Link::Kprobe(link) => {
                if let Ok(kprobe) = <&mut KProbe>::try_from(prog) {
                    let _ = kprobe.detach(link);
                }
            }
            Link::RawTracepoint(link) => {
                if let Ok(raw) = <&mut RawTracePoint>::try_from(prog) {
                    let _ = raw.detach(link);
                }
            }
            Link::BtfTracepoint(link) => {
                if let Ok(tracepoint) = <&mut BtfTracePoint>::try_from(prog) {
                    let _ = tracepoint.detach(link);
                }
            }
            Link::None => {}
        }
    }
}

/// Which group of the node's busiest hooks `program` is on, if any: the hook sampler takes a
/// group off for part of a window when its events come faster than the budget pays for (see
/// `crate::kernel::sampler`): every syscall, every context switch and wake-up, every block request.
pub fn sampled_group(program: &str) -> Option<crate::kernel::sampler::HookGroup> {
    use crate::kernel::sampler::HookGroup;
    [
        (HookGroup::Syscalls, &SYSCALL_EXIT_PROGRAMS[..]),
        (HookGroup::Scheduler, &SCHED_PROGRAMS[..]),
        (HookGroup::Block, &BLOCK_PROGRAMS[..]),
    ]
    .into_iter()
    .find_map(|(group, programs)| programs.contains(&program).then_some(group))
}

/// The programs that can serve the `syscalls` signal.
pub const SYSCALL_EXIT_PROGRAMS: [&str; 3] = ["sys_exit_btf", "sys_exit_raw", "sys_exit"];

/// The programs of the `sched` signal, BTF and classic.
pub const SCHED_PROGRAMS: [&str; 5] = [
    SCHED_SWITCH_BTF,
    "sched_wakeup_btf",
    "sched_wakeup_new_btf",
    "sched_switch",
    "sched_wakeup",
];

/// The programs of the block signals, issue and completion.
pub const BLOCK_PROGRAMS: [&str; 3] = [
    collector_common::names::BLOCK_RQ_ISSUE,
    collector_common::names::BLOCK_RQ_COMPLETE,
    collector_common::names::BLOCK_BIO_QUEUE,
];

/// Ids of the signals that exist only for per-cgroup attribution: not attached when it is
/// off.
pub const ATTRIBUTION_SIGNALS: [&str; 2] = ["cgroup-moves", "block-submit"];

/// Attaches a program again at `hook` (it was loaded and attached once, then detached): the
/// hook sampler's way back on.
pub fn reattach(ebpf: &mut Ebpf, program: &str, hook: Hook) -> anyhow::Result<OwnedLink> {
    let prog = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?;
    Ok(match hook {
        BtfTracepoint(_) => {
            let tracepoint: &mut BtfTracePoint = prog.try_into()?;
            let id = tracepoint.attach()?;
            OwnedLink::BtfTracepoint(tracepoint.take_link(id)?)
        }
        RawTracepoint(name) => {
            let raw: &mut RawTracePoint = prog.try_into()?;
            let id = raw.attach(name)?;
            OwnedLink::RawTracepoint(raw.take_link(id)?)
        }
        Tracepoint(category, name) => {
            let tracepoint: &mut TracePoint = prog.try_into()?;
            let id = tracepoint.attach(category, name)?;
            OwnedLink::Tracepoint(tracepoint.take_link(id)?)
        }
        Kprobe(function) => {
            let kprobe: &mut KProbe = prog.try_into()?;
            let id = kprobe.attach(function, 0)?;
            OwnedLink::Kprobe(kprobe.take_link(id)?)
        }
        SyscallExit | ProcessExitTask => anyhow::bail!("{program} has no link of its own"),
    })
}

/// An attachment taken out of its program: dropping it detaches, on any thread.
pub enum OwnedLink {
    Tracepoint(aya::programs::trace_point::TracePointLink),
    Kprobe(aya::programs::kprobe::KProbeLink),
    RawTracepoint(aya::programs::raw_trace_point::RawTracePointLink),
    BtfTracepoint(aya::programs::tp_btf::BtfTracePointLink),
}

enum Link {
    RawTracepoint(aya::programs::raw_trace_point::RawTracePointLinkId),
    BtfTracepoint(aya::programs::tp_btf::BtfTracePointLinkId),
    Tracepoint(aya::programs::trace_point::TracePointLinkId),
    Kprobe(aya::programs::kprobe::KProbeLinkId),
    None,
}
