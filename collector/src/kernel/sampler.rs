//! The hook sampler: how much of each window the busiest hooks stay on.
//!
//! Three hooks fire on the hottest paths a node has: the syscall exit (every syscall), the
//! scheduler's switch and wake-up (every context switch), and block issue and completion
//! (every block request). Each event costs the task that causes it a little (a program on
//! `sys_exit` also puts every task on the kernel's syscall tracing slow path: an empty program
//! alone costs ~117 ns per syscall here; BENCHMARKS.md), and at millions of events a second
//! that is a large share of a CPU. So the daemon gives the three one budget, a share of one
//! CPU. Each window starts with them on; after a short probe ([`MIN_DUTY`] of the window) the
//! daemon counts the events the probe saw, and when their rates times their costs would spend
//! more than the budget's share of the window, the groups whose own events cost much go off
//! together for the rest of the window once they have been on for the share the budget pays
//! for (the rest of the window nobody pays); a group whose events are cheap stays on
//! ([`CHEAP_GROUP_SHARE`]), since taking a hook off and putting it back costs every CPU of the
//! node too. While hooks are on the daemon looks again every [`RECHECK_EVERY`], so a load that
//! starts after the probe is held to what is left of the budget as well. Rates from these
//! hooks are then per second of the time they were on, and the latencies they measure are a
//! sample. At the rates of an ordinary node (thousands a second) they are on all the time.

use collector_common::sampled_group;

/// What each event costs with its hook on, ns: measured on a 2-vCPU VM with one CPU doing
/// the work, rounded up so that the budget is kept. Syscalls and block requests from `cargo
/// xtask bench overhead`; context switches from the daemon's own per-program statistics
/// (`--program-stats always --metrics full`: `nodestate_program_run_seconds` over
/// `nodestate_program_runs`) under `perf bench sched pipe` on one CPU: `sched_switch_btf` ~310
/// ns a run and `sched_wakeup_btf` ~140 ns (those include the statistics' own ~90 ns a run,
/// which stand in for the tracepoint's dispatch that they do not see).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HookCosts {
    /// One syscall: the tracing slow path plus our program.
    pub syscall_ns: f64,
    /// One context switch with the wake-up before it (two programs, with per-cgroup
    /// attribution on).
    pub context_switch_ns: f64,
    /// One block request: issue and completion, each a classic tracepoint whose record the
    /// kernel builds before the program runs.
    pub block_request_ns: f64,
}

pub const HOOK_COSTS: HookCosts = HookCosts {
    syscall_ns: 140.0,
    context_switch_ns: 450.0,
    block_request_ns: 1000.0,
};

/// The three kinds of sampled hook; each goes off and on as one. The values are the groups'
/// slots in the programs' `SAMPLED_SINCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookGroup {
    Syscalls = sampled_group::SYSCALLS as isize,
    Scheduler = sampled_group::SCHEDULER as isize,
    Block = sampled_group::BLOCK as isize,
}

impl HookGroup {
    pub const ALL: [Self; 3] = [Self::Syscalls, Self::Scheduler, Self::Block];
}

/// A set of hook groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookGroups([bool; 3]);

impl HookGroups {
    pub const ALL: Self = Self([true; 3]);

    pub fn contains(&self, group: HookGroup) -> bool {
        self.0[group as usize]
    }

    pub fn insert(&mut self, group: HookGroup) {
        self.0[group as usize] = true;
    }

    pub fn is_empty(&self) -> bool {
        !self.0.contains(&true)
    }
}

/// Cumulative counts of the events on the sampled hooks, from wherever they are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Counted by the syscall exit program (0 without it).
    pub syscalls: u64,
    /// /proc/stat `ctxt` (0 without the scheduler programs).
    pub context_switches: u64,
    /// Block requests completed, from /proc/diskstats (0 without the block programs).
    pub block_requests: u64,
}

impl EventCounts {
    /// The share of one CPU each group's hooks cost over `seconds` for the events since
    /// `earlier`, indexed by [`HookGroup`].
    pub fn group_shares_since(&self, earlier: &Self, seconds: f64, costs: &HookCosts) -> [f64; 3] {
        if seconds <= 0.0 {
            return [0.0; 3];
        }
        let share =
            |now: u64, then: u64, ns: f64| now.saturating_sub(then) as f64 * ns * 1e-9 / seconds;
        [
            share(self.syscalls, earlier.syscalls, costs.syscall_ns),
            share(
                self.context_switches,
                earlier.context_switches,
                costs.context_switch_ns,
            ),
            share(
                self.block_requests,
                earlier.block_requests,
                costs.block_request_ns,
            ),
        ]
    }
}

/// The hooks are never on for less of a window than this: enough events are seen to give
/// rates, latencies and the errors a node in trouble makes (they come by the thousand).
pub const MIN_DUTY: f64 = 0.02;

/// Default budget: 0.5% of one CPU (36,000 syscalls, 11,000 context switches or 5,000 block
/// requests per second watched whole). Above that, a few per cent of each window still sees
/// thousands of events: enough for rates, errors and latency percentiles.
pub const DEFAULT_HOOK_BUDGET: f64 = 0.005;

/// How often the sampler looks again at the events of the hooks that are still on, after the
/// first probe: a load that starts later in the window is budgeted too, within this long
/// (each look reads a few counters: ~10 a second is nothing).
pub const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A group whose own events cost at most this share of the budget stays on even when the
/// others go off: taking a hook off and putting it back is not free (the kernel patches the
/// tracepoint's call sites and makes every other CPU wait for the patch, several times per
/// hook: about 100 interruptions a second of a busy CPU with all six hooks cycled once a
/// window, measured here), and a hook that costs next to nothing is cheaper left on.
pub const CHEAP_GROUP_SHARE: f64 = 1.0 / 3.0;

/// What the sampler knows of the current window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSoFar {
    start: std::time::Instant,
    /// The last look, and the counts then.
    looked_at: std::time::Instant,
    counts: EventCounts,
    /// CPU seconds each group's hooks have cost in this window, as of the last look.
    spent: [f64; 3],
    /// Groups off for the rest of the window.
    off: HookGroups,
}

impl WindowSoFar {
    /// When the window started.
    pub fn start(&self) -> std::time::Instant {
        self.start
    }
}

/// Where the sampler is within a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerStep {
    /// At `at`, count the events since the last look and decide (see [`look`]).
    Look {
        at: std::time::Instant,
        window: WindowSoFar,
    },
    /// At `at`, take the hooks of `groups` off until the next window (then see
    /// [`went_off`]).
    Off {
        at: std::time::Instant,
        groups: HookGroups,
        window: WindowSoFar,
    },
}

impl SamplerStep {
    pub fn at(&self) -> std::time::Instant {
        match *self {
            Self::Look { at, .. } | Self::Off { at, .. } => at,
        }
    }
}

/// A window starts (with the hooks on): the first look comes after [`MIN_DUTY`] of it, unless
/// there is no budget.
pub fn window_started(
    budget: f64,
    window: std::time::Duration,
    now: std::time::Instant,
    counts_so_far: EventCounts,
) -> Option<SamplerStep> {
    (budget > 0.0).then(|| SamplerStep::Look {
        at: now + window.mul_f64(MIN_DUTY),
        window: WindowSoFar {
            start: now,
            looked_at: now,
            counts: counts_so_far,
            spent: [0.0; 3],
            off: HookGroups::default(),
        },
    })
}

/// A look at `now`, with `counts_so_far`, at the groups in `hooked` (those with hooks) that
/// are still on. What each cost since the last look is added to what it spent in the window;
/// if, at the rates since the last look, the groups on would spend more than the budget's
/// share of the whole window before the next look, the groups whose events cost much go off
/// at the moment that keeps the window within it (`now` if it is already spent), and the
/// groups whose events are cheap stay on. Otherwise the next look comes [`RECHECK_EVERY`]
/// later; `None` when no look is left before the window ends.
pub fn look(
    budget: f64,
    window: std::time::Duration,
    mut so_far: WindowSoFar,
    now: std::time::Instant,
    counts_so_far: &EventCounts,
    hooked: HookGroups,
) -> Option<SamplerStep> {
    let since_look = now
        .saturating_duration_since(so_far.looked_at)
        .as_secs_f64();
    let window_s = window.as_secs_f64();
    let left_s = (window_s - now.saturating_duration_since(so_far.start).as_secs_f64()).max(0.0);
    let recent = if since_look > 0.0 {
        counts_so_far.group_shares_since(&so_far.counts, since_look, &HOOK_COSTS)
    } else {
        [0.0; 3]
    };
    so_far.looked_at = now;
    so_far.counts = *counts_so_far;
    let (mut kept, mut cycled) = (0.0, 0.0);
    let mut costly = HookGroups::default();
    for group in HookGroup::ALL {
        if !hooked.contains(group) || so_far.off.contains(group) {
            continue;
        }
        let share = recent[group as usize];
        so_far.spent[group as usize] += share * since_look;
        // At most a third of the budget each, so together at most the budget.
        if share <= budget * CHEAP_GROUP_SHARE {
            kept += share;
        } else {
            costly.insert(group);
            cycled += share;
        }
    }
    let allowed = budget * window_s;
    let left_to_spend = allowed - so_far.spent.iter().sum::<f64>() - kept * left_s;
    if costly.is_empty() || cycled * left_s <= left_to_spend {
        let next = now + RECHECK_EVERY;
        return (next < so_far.start + window).then_some(SamplerStep::Look {
            at: next,
            window: so_far,
        });
    }
    let on_for_s = (left_to_spend.max(0.0) / cycled).min(left_s);
    if on_for_s > RECHECK_EVERY.as_secs_f64() {
        // Not yet: the rates may still grow (a load that is starting), so look again first.
        return Some(SamplerStep::Look {
            at: now + RECHECK_EVERY,
            window: so_far,
        });
    }
    // What they will have spent by then, so that the groups that stay on are held to the rest.
    for group in HookGroup::ALL {
        if costly.contains(group) {
            so_far.spent[group as usize] += recent[group as usize] * on_for_s;
        }
    }
    Some(SamplerStep::Off {
        at: now + std::time::Duration::try_from_secs_f64(on_for_s).unwrap_or_default(),
        groups: costly,
        window: so_far,
    })
}

/// The hooks of `groups` went off at `now`: the sampler keeps looking at the groups of
/// `hooked` still on, if any, until the window ends.
pub fn went_off(
    window: std::time::Duration,
    mut so_far: WindowSoFar,
    groups: HookGroups,
    now: std::time::Instant,
    hooked: HookGroups,
) -> Option<SamplerStep> {
    for group in HookGroup::ALL {
        if groups.contains(group) {
            so_far.off.insert(group);
        }
    }
    let next = now + RECHECK_EVERY;
    let any_on = HookGroup::ALL
        .iter()
        .any(|&group| hooked.contains(group) && !so_far.off.contains(group));
    (any_on && next < so_far.start + window).then_some(SamplerStep::Look {
        at: next,
        window: so_far,
    })
}

/// Parses a budget: "1%", "0.5%", "0" (no budget), or a bare number of percent.
pub fn parse_budget(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%').trim();
    let percent: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage of one CPU (e.g. 1%, 0.5%, 0)"))?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(format!("{text:?}: a budget is 0% to 100% of one CPU"));
    }
    Ok(percent / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscalls(n: u64) -> EventCounts {
        EventCounts {
            syscalls: n,
            ..EventCounts::default()
        }
    }

    /// Counts after `seconds` of `rate` syscalls a second, from `base`.
    fn after(base: u64, rate: f64, seconds: f64) -> EventCounts {
        syscalls(base + (rate * seconds) as u64)
    }

    fn ms(n: u64) -> std::time::Duration {
        std::time::Duration::from_millis(n)
    }

    /// Looks through a window that starts at `start`, with `counts_at(t)` the counts `t`
    /// seconds in, until the sampler takes hooks off or the window ends; returns when it
    /// looked (ms from the start) and its last step.
    fn drive(
        budget: f64,
        window: std::time::Duration,
        start: std::time::Instant,
        counts_at: impl Fn(f64) -> EventCounts,
    ) -> (Vec<f64>, Option<SamplerStep>) {
        let mut step = window_started(budget, window, start, counts_at(0.0));
        let mut looks = Vec::new();
        while let Some(SamplerStep::Look { at, window: so_far }) = step {
            let t = at.duration_since(start).as_secs_f64();
            looks.push((t * 1000.0).round());
            step = look(budget, window, so_far, at, &counts_at(t), HookGroups::ALL);
        }
        (looks, step)
    }

    #[test]
    fn every_hooks_events_add_to_the_cost() {
        let start = EventCounts::default();
        // In one second: 50,000 syscalls (0.7%), 10,000 switches (0.45%), 5,000 requests
        // (0.5%).
        let after = EventCounts {
            syscalls: 50_000,
            context_switches: 10_000,
            block_requests: 5_000,
        };
        let shares = after.group_shares_since(&start, 1.0, &HOOK_COSTS);
        for (share, expected) in shares.iter().zip([0.007, 0.0045, 0.005]) {
            assert!((share - expected).abs() < 1e-9, "{shares:?}");
        }
        // Over two seconds, half the share.
        let halves = after.group_shares_since(&start, 2.0, &HOOK_COSTS);
        assert!((halves[0] - 0.0035).abs() < 1e-9);
        // A counter that went backwards (a device gone) adds nothing.
        assert_eq!(start.group_shares_since(&after, 1.0, &HOOK_COSTS), [0.0; 3]);
        assert_eq!(after.group_shares_since(&start, 0.0, &HOOK_COSTS), [0.0; 3]);
    }

    #[test]
    fn no_budget_means_always_on() {
        let now = std::time::Instant::now();
        assert_eq!(window_started(0.0, ms(1000), now, syscalls(0)), None);
        assert_eq!(window_started(f64::NAN, ms(1000), now, syscalls(0)), None);
        assert_eq!(window_started(-1.0, ms(1000), now, syscalls(0)), None);
    }

    #[test]
    fn a_window_probes_then_goes_off_at_the_share_its_rate_allows() {
        let window = ms(2000);
        let start = std::time::Instant::now();
        let Some(SamplerStep::Look { at, window: so_far }) =
            window_started(0.01, window, start, syscalls(500))
        else {
            panic!("a probe first");
        };
        assert_eq!(at, start + ms(40));
        // 700,000 syscalls a second (9.8% of a CPU): on for 10.2% of the window, the share a
        // 1% budget pays for, looked at once more on the way.
        let (looks, off) = drive(0.01, window, start, |t| after(500, 700_000.0, t));
        assert_eq!(looks, [40.0, 140.0]);
        let Some(SamplerStep::Off {
            at: off_at, groups, ..
        }) = off
        else {
            panic!("{off:?}");
        };
        let on_ms = off_at.duration_since(start).as_secs_f64() * 1000.0;
        assert!((on_ms - 204.0).abs() < 1.0, "{on_ms}");
        // Only the syscall hook cost anything: the others stay on.
        assert!(groups.contains(HookGroup::Syscalls));
        assert!(!groups.contains(HookGroup::Scheduler) && !groups.contains(HookGroup::Block));
        // An ordinary rate: on, and looked at again a little later.
        let ordinary = after(500, 5_000.0, 0.04);
        assert!(matches!(
            look(0.01, window, so_far, at, &ordinary, HookGroups::ALL),
            Some(SamplerStep::Look { at: next, .. }) if next == at + RECHECK_EVERY
        ));
        // A flood so heavy the probe already spent the window's budget: off at once.
        let off = look(
            0.01,
            window,
            so_far,
            at,
            &syscalls(u64::MAX),
            HookGroups::ALL,
        );
        assert!(
            matches!(off, Some(SamplerStep::Off { at: off_at, .. }) if off_at == at),
            "{off:?}"
        );
    }

    #[test]
    fn ordinary_rates_stay_on_to_the_window_end() {
        let window = ms(1000);
        let start = std::time::Instant::now();
        let mut step = window_started(0.005, window, start, syscalls(0));
        let mut looks = 0;
        while let Some(SamplerStep::Look { at, window: so_far }) = step {
            looks += 1;
            let seconds = at.duration_since(start).as_secs_f64();
            step = look(
                0.005,
                window,
                so_far,
                at,
                &after(0, 20_000.0, seconds),
                HookGroups::ALL,
            );
        }
        assert_eq!(step, None, "never off");
        // At 20 ms, then every 100 ms up to the window's end.
        assert_eq!(looks, 10);
    }

    #[test]
    fn a_load_that_starts_after_the_probe_is_held_to_what_is_left_of_the_budget() {
        let window = ms(5000);
        let start = std::time::Instant::now();
        // Quiet (100 syscalls a second) for the first 300 ms, then 700,000 a second.
        let counts_at = |t: f64| {
            let quiet = after(0, 100.0, t.min(0.3));
            after(quiet.syscalls, 700_000.0, (t - 0.3).max(0.0))
        };
        let (looks, step) = drive(0.01, window, start, counts_at);
        // The flood is seen from the look at 400 ms; each look puts off the decision while
        // more than a look's interval of the budget is left.
        assert_eq!(
            looks,
            [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0]
        );
        let Some(SamplerStep::Off { at, groups, .. }) = step else {
            panic!("{step:?}");
        };
        assert!(groups.contains(HookGroup::Syscalls));
        // 1% of 5 s is 50 ms of CPU: at 9.8% of a CPU, 510 ms of the flood, from 300 ms.
        let on_ms = at.duration_since(start).as_secs_f64() * 1000.0;
        assert!((on_ms - 810.0).abs() < 2.0, "{on_ms}");
    }

    #[test]
    fn a_load_that_grows_after_the_probe_goes_off_by_its_new_rate() {
        let window = ms(5000);
        let start = std::time::Instant::now();
        // 200,000 syscalls a second in the probe (2.8% of a CPU: 1.8 s of the window would fit
        // a 1% budget), 700,000 from then on.
        let counts_at = |t: f64| {
            let probed = after(0, 200_000.0, t.min(0.1));
            after(probed.syscalls, 700_000.0, (t - 0.1).max(0.0))
        };
        let (_, step) = drive(0.01, window, start, counts_at);
        let Some(SamplerStep::Off { at, .. }) = step else {
            panic!("{step:?}");
        };
        // 50 ms of CPU: 2.8 ms in the probe, the other 47.2 ms at 9.8% in 482 ms more.
        let on_ms = at.duration_since(start).as_secs_f64() * 1000.0;
        assert!((on_ms - 582.0).abs() < 2.0, "{on_ms}");
    }

    #[test]
    fn cheap_groups_stay_on_and_the_rest_share_what_is_left_of_the_budget() {
        let window = ms(1000);
        let start = std::time::Instant::now();
        let Some(SamplerStep::Look {
            at: probe_at,
            window: so_far,
        }) = window_started(0.005, window, start, EventCounts::default())
        else {
            panic!("a probe first");
        };
        // In the 20 ms probe: 700,000 syscalls/s (9.8% of a CPU), 300,000 switches/s (13.5%),
        // 100 block requests/s (0.01%, under a third of a 0.5% budget).
        let probed = EventCounts {
            syscalls: 14_000,
            context_switches: 6_000,
            block_requests: 2,
        };
        let Some(SamplerStep::Off {
            at,
            groups,
            window: so_far,
        }) = look(0.005, window, so_far, probe_at, &probed, HookGroups::ALL)
        else {
            panic!("a flood goes off");
        };
        assert!(groups.contains(HookGroup::Syscalls) && groups.contains(HookGroup::Scheduler));
        assert!(!groups.contains(HookGroup::Block));
        // The block hooks keep 0.01% for the whole window; syscalls and switches share the
        // other 0.49%.
        let shares = probed.group_shares_since(&EventCounts::default(), 0.02, &HOOK_COSTS);
        let expected = (0.005 - shares[2]) / (shares[0] + shares[1]);
        let on = at.duration_since(start).as_secs_f64();
        assert!((on - expected).abs() < 1e-6, "{on} vs {expected}");
        // The block hooks are still looked at, and go off when they get busy.
        let Some(SamplerStep::Look {
            at: next,
            window: so_far,
        }) = went_off(window, so_far, groups, at, HookGroups::ALL)
        else {
            panic!("the block hooks are still on");
        };
        assert_eq!(next, at + RECHECK_EVERY);
        let t = next.duration_since(start).as_secs_f64();
        let busy = EventCounts {
            block_requests: 2 + (50_000.0 * (t - 0.02)) as u64,
            ..probed
        };
        let Some(SamplerStep::Off {
            groups: block,
            window: so_far,
            at,
        }) = look(0.005, window, so_far, next, &busy, HookGroups::ALL)
        else {
            panic!("busy block hooks go off too");
        };
        assert!(block.contains(HookGroup::Block) && !block.contains(HookGroup::Syscalls));
        assert_eq!(at, next, "the budget is already spent");
        // Nothing left on: no more looks.
        assert_eq!(went_off(window, so_far, block, at, HookGroups::ALL), None);
        // Every group busy from the start: all go off together.
        let Some(SamplerStep::Look { at, window: so_far }) =
            window_started(0.005, window, start, EventCounts::default())
        else {
            panic!("a probe first");
        };
        let all_busy = EventCounts {
            block_requests: 2_000,
            ..probed
        };
        let Some(SamplerStep::Off { groups, .. }) =
            look(0.005, window, so_far, at, &all_busy, HookGroups::ALL)
        else {
            panic!("a flood goes off");
        };
        assert_eq!(groups, HookGroups::ALL);
    }

    #[test]
    fn groups_without_hooks_are_neither_costed_nor_waited_for() {
        let window = ms(1000);
        let start = std::time::Instant::now();
        let mut syscalls_only = HookGroups::default();
        syscalls_only.insert(HookGroup::Syscalls);
        let Some(SamplerStep::Look { at, window: so_far }) =
            window_started(0.005, window, start, syscalls(0))
        else {
            panic!("a probe first");
        };
        let Some(SamplerStep::Off {
            groups,
            window: so_far,
            at,
        }) = look(0.005, window, so_far, at, &syscalls(14_000), syscalls_only)
        else {
            panic!("a flood goes off");
        };
        assert_eq!(groups, syscalls_only);
        // The scheduler and block groups have no hooks: nothing is left to look at.
        assert_eq!(went_off(window, so_far, groups, at, syscalls_only), None);
    }

    #[test]
    fn budgets_parse_as_percent_of_one_cpu() {
        assert_eq!(parse_budget("1%"), Ok(0.01));
        assert_eq!(parse_budget(" 0.5 % "), Ok(0.005));
        assert_eq!(parse_budget("0"), Ok(0.0));
        assert!(
            parse_budget("abc")
                .unwrap_err()
                .contains("not a percentage")
        );
        assert!(parse_budget("150%").unwrap_err().contains("0% to 100%"));
        assert!(parse_budget("-1").is_err());
    }
}
