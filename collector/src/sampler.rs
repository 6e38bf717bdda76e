//! The hook sampler: how much of each window the busiest hooks stay on.
//!
//! Three hooks fire on the hottest paths a node has: the syscall exit (every syscall), the
//! scheduler's switch and wake-up (every context switch), and block issue and completion
//! (every block request). Each event costs the task that causes it a little (a program on
//! `sys_exit` also puts every task on the kernel's syscall tracing slow path: an empty program
//! alone costs ~117 ns per syscall here; BENCHMARKS.md), and at millions of events a second
//! that is a large share of a CPU. So the daemon gives the three one budget, a share of one
//! CPU. Each window starts with them on; after a short probe ([`MIN_DUTY`] of the window) the
//! daemon counts the events the probe saw, and when their rates times their costs exceed the
//! budget, the groups whose own events cost much go off together for the rest of the window
//! once they have been on for the share the budget pays for (the rest of the window nobody
//! pays); a group whose events are cheap stays on ([`CHEAP_GROUP_SHARE`]), since taking a hook
//! off and putting it back costs every CPU of the node too. Rates from these hooks are then
//! per second of the time they were on, and the latencies they measure are a sample. At the
//! rates of an ordinary node (thousands a second) they are on all the time.

use collector_common::sampled_group;

/// What each event costs with its hook on, ns: measured on a 2-vCPU VM with one CPU doing
/// the work (`cargo xtask bench overhead`), rounded up so that the budget is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HookCosts {
    /// One syscall: the tracing slow path plus our program.
    pub syscall_ns: f64,
    /// One context switch with the wake-up before it (two programs).
    pub context_switch_ns: f64,
    /// One block request: issue and completion, each a classic tracepoint whose record the
    /// kernel builds before the program runs.
    pub block_request_ns: f64,
}

pub const HOOK_COSTS: HookCosts = HookCosts {
    syscall_ns: 140.0,
    context_switch_ns: 300.0,
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

/// Default budget: 0.5% of one CPU (36,000 syscalls, 17,000 context switches or 5,000 block
/// requests per second watched whole). Above that, a few per cent of each window still sees
/// thousands of events: enough for rates, errors and latency percentiles.
pub const DEFAULT_HOOK_BUDGET: f64 = 0.005;

/// The share of the next window the hooks should be on, given `budget` (a share of one CPU;
/// 0 or less: no budget, always on) and the share of one CPU they cost while on.
pub fn duty(budget: f64, cost_share: f64) -> f64 {
    if budget <= 0.0 || budget.is_nan() {
        return 1.0;
    }
    let cost = cost_share.max(0.0);
    if !cost.is_finite() {
        return MIN_DUTY;
    }
    if cost <= budget {
        return 1.0;
    }
    (budget / cost).clamp(MIN_DUTY, 1.0)
}

/// Where the sampler is within a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerStep {
    /// At `at`, count the events seen since the window started (`counts_at_start` then).
    Probe {
        at: std::time::Instant,
        window_start: std::time::Instant,
        counts_at_start: EventCounts,
    },
    /// At `at`, take the hooks of `groups` off until the next window.
    Off {
        at: std::time::Instant,
        groups: HookGroups,
    },
}

impl SamplerStep {
    pub fn at(&self) -> std::time::Instant {
        match *self {
            Self::Probe { at, .. } | Self::Off { at, .. } => at,
        }
    }
}

/// A window starts (with the hooks on): the probe comes first, unless there is no budget.
pub fn window_started(
    budget: f64,
    window: std::time::Duration,
    now: std::time::Instant,
    counts_so_far: EventCounts,
) -> Option<SamplerStep> {
    (budget > 0.0).then(|| SamplerStep::Probe {
        at: now + window.mul_f64(MIN_DUTY),
        window_start: now,
        counts_at_start: counts_so_far,
    })
}

/// A group whose own events cost at most this share of the budget stays on for the whole
/// window even when the others go off: taking a hook off and putting it back is not free
/// (the kernel patches the tracepoint's call sites and makes every other CPU wait for the
/// patch, several times per hook: about 100 interruptions a second of a busy CPU with all
/// six hooks cycled once a window, measured here), and a hook that costs next to nothing
/// is cheaper left on.
pub const CHEAP_GROUP_SHARE: f64 = 1.0 / 3.0;

/// The probe's verdict at `now`, with `counts_so_far`: `None` keeps the hooks on to the
/// window's end; otherwise the groups it names go off at the step's time (`now` or later),
/// and the groups whose events are cheap stay on.
pub fn after_probe(
    budget: f64,
    window: std::time::Duration,
    window_start: std::time::Instant,
    counts_at_start: &EventCounts,
    now: std::time::Instant,
    counts_so_far: &EventCounts,
) -> Option<SamplerStep> {
    let elapsed = now.saturating_duration_since(window_start).as_secs_f64();
    if elapsed <= 0.0 {
        return None;
    }
    let shares = counts_so_far.group_shares_since(counts_at_start, elapsed, &HOOK_COSTS);
    if duty(budget, shares.iter().sum()) >= 1.0 {
        return None;
    }
    // At most a third of the budget each, so together at most the budget.
    let cheap = |share: f64| share <= budget * CHEAP_GROUP_SHARE;
    let mut groups = HookGroups::default();
    let (mut kept, mut cycled) = (0.0, 0.0);
    for group in HookGroup::ALL {
        let share = shares[group as usize];
        if cheap(share) {
            kept += share;
        } else {
            groups.insert(group);
            cycled += share;
        }
    }
    let duty = duty((budget - kept).max(0.0), cycled);
    Some(SamplerStep::Off {
        at: (window_start + window.mul_f64(duty)).max(now),
        groups,
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

    /// The cost share of `rate` syscalls a second.
    fn syscall_share(rate: f64) -> f64 {
        rate * HOOK_COSTS.syscall_ns * 1e-9
    }

    #[test]
    fn ordinary_rates_keep_the_hooks_on_and_floods_shrink_them_within_bounds() {
        assert_eq!(duty(0.01, syscall_share(5_000.0)), 1.0);
        // 1% of a CPU is 71,428 syscalls a second at 140 ns.
        assert_eq!(duty(0.01, syscall_share(70_000.0)), 1.0);
        let share = duty(0.01, syscall_share(700_000.0));
        assert!((share - 0.102).abs() < 0.001, "{share}");
        // The cost it then takes is the budget.
        assert!((share * syscall_share(700_000.0) - 0.01).abs() < 1e-9);
        assert_eq!(duty(0.01, 1e3), MIN_DUTY);
        assert_eq!(duty(0.01, f64::INFINITY), MIN_DUTY);
        let mut last = 1.0;
        for rate in [1e4, 1e5, 1e6, 1e7] {
            let share = duty(0.01, syscall_share(rate));
            assert!(share <= last, "not monotonic at {rate}");
            last = share;
        }
    }

    #[test]
    fn every_hooks_events_add_to_the_cost() {
        let start = EventCounts::default();
        // In one second: 50,000 syscalls (0.7%), 10,000 switches (0.3%), 5,000 requests (0.5%).
        let after = EventCounts {
            syscalls: 50_000,
            context_switches: 10_000,
            block_requests: 5_000,
        };
        let total = |after: &EventCounts, earlier: &EventCounts, seconds: f64| -> f64 {
            after
                .group_shares_since(earlier, seconds, &HOOK_COSTS)
                .iter()
                .sum()
        };
        let share = total(&after, &start, 1.0);
        assert!((share - 0.015).abs() < 1e-9, "{share}");
        // Each alone is within a 1% budget, together they are not.
        assert!((duty(0.01, share) - 0.01 / 0.015).abs() < 1e-9);
        // A counter that went backwards (a device gone) adds nothing.
        assert_eq!(total(&start, &after, 1.0), 0.0);
        assert_eq!(total(&after, &start, 0.0), 0.0);
    }

    #[test]
    fn no_budget_means_always_on() {
        assert_eq!(duty(0.0, 1e9), 1.0);
        assert_eq!(duty(f64::NAN, 1e9), 1.0);
        assert_eq!(duty(0.01, f64::NAN), 1.0);
    }

    #[test]
    fn a_window_probes_then_goes_off_at_the_share_its_rate_allows() {
        let window = std::time::Duration::from_secs(2);
        let start = std::time::Instant::now();
        assert_eq!(window_started(0.0, window, start, syscalls(0)), None);
        let Some(SamplerStep::Probe { at, .. }) =
            window_started(0.01, window, start, syscalls(500))
        else {
            panic!("a probe first");
        };
        assert_eq!(at, start + std::time::Duration::from_millis(40));
        // 700,000 syscalls a second: on for 10.2% of the window.
        let probe_at = start + std::time::Duration::from_millis(40);
        let off = after_probe(
            0.01,
            window,
            start,
            &syscalls(500),
            probe_at,
            &syscalls(500 + 28_000),
        );
        let Some(SamplerStep::Off { at, groups }) = off else {
            panic!("{off:?}");
        };
        let on_ms = at.duration_since(start).as_secs_f64() * 1000.0;
        assert!((on_ms - 204.0).abs() < 1.0, "{on_ms}");
        // Only the syscall hook cost anything: the others stay on.
        assert!(groups.contains(HookGroup::Syscalls));
        assert!(!groups.contains(HookGroup::Scheduler) && !groups.contains(HookGroup::Block));
        // An ordinary rate: on to the end.
        assert_eq!(
            after_probe(
                0.01,
                window,
                start,
                &syscalls(500),
                probe_at,
                &syscalls(700)
            ),
            None
        );
        // A flood so heavy the probe already used the share: off at once.
        let off = after_probe(
            0.01,
            window,
            start,
            &syscalls(0),
            probe_at,
            &syscalls(u64::MAX),
        );
        let mut syscalls_only = HookGroups::default();
        syscalls_only.insert(HookGroup::Syscalls);
        assert_eq!(
            off,
            Some(SamplerStep::Off {
                at: probe_at,
                groups: syscalls_only
            })
        );
    }

    #[test]
    fn cheap_groups_stay_on_and_the_rest_share_what_is_left_of_the_budget() {
        let window = std::time::Duration::from_secs(1);
        let start = std::time::Instant::now();
        let probe_at = start + std::time::Duration::from_millis(20);
        let at_start = EventCounts::default();
        // In the 20 ms probe: 700,000 syscalls/s (9.8% of a CPU), 300,000 switches/s (9%),
        // 100 block requests/s (0.01%, under a third of a 0.5% budget).
        let probed = EventCounts {
            syscalls: 14_000,
            context_switches: 6_000,
            block_requests: 2,
        };
        let Some(SamplerStep::Off { at, groups }) =
            after_probe(0.005, window, start, &at_start, probe_at, &probed)
        else {
            panic!("a flood goes off");
        };
        assert!(groups.contains(HookGroup::Syscalls) && groups.contains(HookGroup::Scheduler));
        assert!(!groups.contains(HookGroup::Block));
        // The block hooks keep 0.01%; syscalls and switches share the other 0.49%.
        let shares = probed.group_shares_since(&at_start, 0.02, &HOOK_COSTS);
        let expected = (0.005 - shares[2]) / (shares[0] + shares[1]);
        let on = at.duration_since(start).as_secs_f64();
        assert!((on - expected).abs() < 1e-6, "{on} vs {expected}");
        // Every group busy: all go off together.
        let busy = EventCounts {
            block_requests: 2_000,
            ..probed
        };
        let Some(SamplerStep::Off { groups, .. }) =
            after_probe(0.005, window, start, &at_start, probe_at, &busy)
        else {
            panic!("a flood goes off");
        };
        assert_eq!(groups, HookGroups::ALL);
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
