//! Switching the sampled hooks off and on for the hook sampler, and how long each group was
//! on: the busiest hooks' links, kept apart from the others so they can be dropped and remade.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{Array, MapData};

use super::KernelCollector;

impl KernelCollector {
    /// Whether the syscall exit program counts opens, so that the opens rate is sampled with
    /// the syscalls.
    pub fn opens_from_syscall_exit(&self) -> bool {
        self.opens_from_syscall_exit
    }

    /// Takes the sampled hooks off until [`Self::resume_sampled_hooks`]: while they are off,
    /// no task takes the syscall tracing slow path and no switch or block request runs a
    /// program. The kernel waits for an RCU grace period before it lets go of a link (tens of
    /// ms), so the links are dropped on threads of their own; the programs stop running when
    /// the drops start.
    pub fn pause_sampled_hooks(&mut self) {
        self.pause_hook_groups(crate::kernel::sampler::HookGroups::ALL);
    }

    /// Takes the sampled hooks of `groups` off (see [`Self::pause_sampled_hooks`]).
    pub fn pause_hook_groups(&mut self, groups: crate::kernel::sampler::HookGroups) {
        let hooks = &mut self.sampled;
        let links: Vec<_> = hooks
            .links
            .iter_mut()
            .filter(|sampled| groups.contains(sampled.group))
            .filter_map(|sampled| sampled.link.take())
            .collect();
        if links.is_empty() {
            return;
        }
        for group in crate::kernel::sampler::HookGroup::ALL {
            if groups.contains(group)
                && let Some(since) = hooks.on_since[group as usize].take()
            {
                hooks.on_for[group as usize] += since.elapsed();
            }
        }
        // "Off": the exit hook, which is not sampled, charges on-CPU time since the last
        // switch-in; one made before the pause is not the start of a stretch watched since.
        // `resume_sampled_hooks` writes the real time. (The block and syscall groups' slots are
        // read by their own programs only, which are off.)
        let scheduler = crate::kernel::sampler::HookGroup::Scheduler;
        if groups.contains(scheduler)
            && let Err(err) = hooks.sampled_since.set(scheduler as u32, u64::MAX, 0)
        {
            tracing::warn!("marking the scheduler hooks off: {err}");
        }
        std::thread::spawn(move || {
            std::thread::scope(|scope| {
                for link in links {
                    scope.spawn(move || drop(link));
                }
            })
        });
    }

    /// Whether any signal has a hook the sampler can take off and put back.
    pub fn has_sampled_hooks(&self) -> bool {
        !self.sampled.links.is_empty()
    }

    /// The groups that have sampled hooks.
    pub fn sampled_groups(&self) -> crate::kernel::sampler::HookGroups {
        let mut groups = crate::kernel::sampler::HookGroups::default();
        for sampled in &self.sampled.links {
            groups.insert(sampled.group);
        }
        groups
    }

    /// Whether any of `programs` is attached as one of the sampled hooks.
    fn samples(&self, programs: &[&str]) -> bool {
        self.sampled
            .links
            .iter()
            .any(|sampled| programs.contains(&sampled.program))
    }

    /// Whether the block programs are among the sampled hooks, so that block counts are per
    /// second of the time they were on.
    pub fn samples_block_io(&self) -> bool {
        self.samples(&crate::kernel::probes::BLOCK_PROGRAMS)
    }

    /// The events on the sampled hooks so far, each from where it is exact, for the sampler's
    /// cost estimate; a hook that is not attached counts none.
    pub fn sampled_event_counts(&self) -> anyhow::Result<crate::kernel::sampler::EventCounts> {
        let mut counts = crate::kernel::sampler::EventCounts::default();
        if self.samples(&crate::kernel::probes::SYSCALL_EXIT_PROGRAMS) {
            counts.syscalls = self.syscalls_counted()?;
        }
        if self.samples(&crate::kernel::probes::SCHED_PROGRAMS) {
            // A failed read is no count: 0 here would read as a burst on the next look.
            counts.context_switches =
                super::exact::read_context_switches(std::path::Path::new("/proc/stat"))
                    .context("reading ctxt from /proc/stat")?;
        }
        if self.samples_block_io() {
            counts.block_requests = super::exact::block_requests_completed(
                std::path::Path::new("/proc/diskstats"),
                std::path::Path::new("/sys/block"),
            )
            .context("reading /proc/diskstats")?;
        }
        Ok(counts)
    }

    /// Puts the sampled hooks back on (a no-op while they are on). The programs learn from
    /// `SAMPLED_SINCE` that starts recorded before now (waits, requests) may have ended
    /// unseen. A hook that fails to attach is reported and the others still go on.
    pub fn resume_sampled_hooks(&mut self) -> anyhow::Result<()> {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return Ok(());
        };
        let hooks = &mut self.sampled;
        let mut off = crate::kernel::sampler::HookGroups::default();
        for sampled in hooks.links.iter().filter(|sampled| sampled.link.is_none()) {
            off.insert(sampled.group);
        }
        if off.is_empty() {
            return Ok(());
        }
        // Written before a group's hooks are back, so every start its programs record from
        // here on is at or after it. A group that stayed on keeps its time: its waits and
        // requests in progress were watched from their start.
        let now_ns = monotonic_ns();
        for group in crate::kernel::sampler::HookGroup::ALL {
            if off.contains(group) {
                hooks.sampled_since.set(group as u32, now_ns, 0)?;
            }
        }
        let mut failed = Vec::new();
        for sampled in hooks
            .links
            .iter_mut()
            .filter(|sampled| sampled.link.is_none())
        {
            match crate::kernel::probes::reattach(ebpf, sampled.program, sampled.hook) {
                Ok(attached) => sampled.link = Some(attached),
                Err(err) => failed.push(format!("{}: {err:#}", sampled.program)),
            }
        }
        let now = Instant::now();
        for group in crate::kernel::sampler::HookGroup::ALL {
            if off.contains(group) {
                hooks.on_since[group as usize].get_or_insert(now);
            }
        }
        if !failed.is_empty() {
            anyhow::bail!("putting sampled hooks back on: {}", failed.join("; "));
        }
        Ok(())
    }

    /// How long each group of sampled hooks was on since the last call (or since load), up
    /// to `now`; `None` for a group without any (its signals are off or missing).
    pub fn take_sampled_time(&mut self, now: Instant) -> SampledTime {
        let hooks = &mut self.sampled;
        let mut time = SampledTime::default();
        for group in crate::kernel::sampler::HookGroup::ALL {
            let index = group as usize;
            let mut on = std::mem::take(&mut hooks.on_for[index]);
            if let Some(since) = hooks.on_since[index].as_mut() {
                on += now.saturating_duration_since(*since);
                *since = now;
            }
            if hooks.links.iter().any(|sampled| sampled.group == group) {
                time.0[index] = Some(on);
            }
        }
        time
    }
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// How long each group of sampled hooks was on over a stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampledTime([Option<Duration>; 3]);

impl SampledTime {
    /// `None`: the group has no hooks (its signals are off or missing).
    pub fn of(&self, group: crate::kernel::sampler::HookGroup) -> Option<Duration> {
        self.0[group as usize]
    }
}

/// One attachment of a sampled program.
pub(super) struct SampledLink {
    pub(super) program: &'static str,
    pub(super) hook: crate::kernel::probes::Hook,
    pub(super) group: crate::kernel::sampler::HookGroup,
    /// While it is on.
    pub(super) link: Option<crate::kernel::probes::OwnedLink>,
}

/// The attachments of the sampled programs (see `probes::sampled_group`), which the hook
/// sampler takes off and puts back a group at a time.
pub(super) struct SampledHooks {
    pub(super) links: Vec<SampledLink>,
    /// Per group ([`crate::kernel::sampler::HookGroup`] order): when its hooks last went on, while
    /// they are on.
    pub(super) on_since: [Option<Instant>; 3],
    /// Per group: time on since the last [`KernelCollector::take_sampled_time`], not counting
    /// the current stretch.
    pub(super) on_for: [Duration; 3],
    /// The programs' `SAMPLED_SINCE`.
    pub(super) sampled_since: Array<MapData, u64>,
}
