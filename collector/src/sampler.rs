//! The syscall sampler: how much of each window the syscall exit hook stays on.
//!
//! Any program on the `sys_exit` tracepoint puts every task of the node on the kernel's
//! syscall tracing slow path, whatever the program does: measured here, ~140 ns more per
//! syscall (an empty program alone costs ~117 ns; BENCHMARKS.md). On a node making millions of
//! syscalls a second that is a large share of a CPU, so the daemon gives the hook a budget, a
//! share of one CPU. Each window starts with the hook on; after a short probe
//! ([`MIN_SYSCALL_DUTY`] of the window) the daemon reads the syscall count, and when that rate
//! times the cost exceeds the budget, the hook goes off for the rest of the window once it has
//! been on for the share the budget pays for (the rest of the window nobody pays). The
//! syscall rates are then per second of the time it was on. At the rates of an ordinary node
//! (thousands a second) the hook is on all the time.

/// What the hook costs one syscall, ns (the empty program's floor plus ours; see above).
pub const SYSCALL_HOOK_COST_NS: f64 = 140.0;

/// The hook is never on for less of a window than this: enough syscalls are seen to give a
/// rate and the errors a node in trouble makes (they come by the thousand).
pub const MIN_SYSCALL_DUTY: f64 = 0.02;

/// Default budget: 1% of one CPU (71,000 syscalls per second watched whole).
pub const DEFAULT_SYSCALL_BUDGET: f64 = 0.01;

/// The share of the next window the hook should be on, given `budget` (a share of one CPU;
/// 0 or less: no budget, always on) and the syscall rate just measured.
pub fn syscall_duty(budget: f64, syscalls_per_s: f64) -> f64 {
    if budget <= 0.0 || budget.is_nan() {
        return 1.0;
    }
    let cost = syscalls_per_s.max(0.0) * SYSCALL_HOOK_COST_NS * 1e-9;
    if !cost.is_finite() {
        return MIN_SYSCALL_DUTY;
    }
    if cost <= budget {
        return 1.0;
    }
    (budget / cost).clamp(MIN_SYSCALL_DUTY, 1.0)
}

/// Where the sampler is within a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerStep {
    /// At `at`, count the syscalls seen since the window started (`count_at_start` then).
    Probe {
        at: std::time::Instant,
        window_start: std::time::Instant,
        count_at_start: u64,
    },
    /// At `at`, take the hook off until the next window.
    Off { at: std::time::Instant },
}

impl SamplerStep {
    pub fn at(&self) -> std::time::Instant {
        match *self {
            Self::Probe { at, .. } | Self::Off { at } => at,
        }
    }
}

/// A window starts (with the hook on): the probe comes first, unless there is no budget.
pub fn window_started(
    budget: f64,
    window: std::time::Duration,
    now: std::time::Instant,
    syscalls_so_far: u64,
) -> Option<SamplerStep> {
    (budget > 0.0).then(|| SamplerStep::Probe {
        at: now + window.mul_f64(MIN_SYSCALL_DUTY),
        window_start: now,
        count_at_start: syscalls_so_far,
    })
}

/// The probe's verdict at `now`, with `syscalls_so_far` counted: `None` keeps the hook on to
/// the window's end; otherwise the hook goes off at the step's time (`now` or later).
pub fn after_probe(
    budget: f64,
    window: std::time::Duration,
    window_start: std::time::Instant,
    count_at_start: u64,
    now: std::time::Instant,
    syscalls_so_far: u64,
) -> Option<SamplerStep> {
    let elapsed = now.saturating_duration_since(window_start).as_secs_f64();
    if elapsed <= 0.0 {
        return None;
    }
    let rate = syscalls_so_far.saturating_sub(count_at_start) as f64 / elapsed;
    let duty = syscall_duty(budget, rate);
    (duty < 1.0).then(|| SamplerStep::Off {
        at: (window_start + window.mul_f64(duty)).max(now),
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

    #[test]
    fn ordinary_rates_keep_the_hook_on_and_floods_shrink_it_within_bounds() {
        assert_eq!(syscall_duty(0.01, 5_000.0), 1.0);
        // 1% of a CPU is 71,428 syscalls a second at 140 ns.
        assert_eq!(syscall_duty(0.01, 70_000.0), 1.0);
        let duty = syscall_duty(0.01, 700_000.0);
        assert!((duty - 0.102).abs() < 0.001, "{duty}");
        // The cost it then takes is the budget.
        assert!((duty * 700_000.0 * SYSCALL_HOOK_COST_NS * 1e-9 - 0.01).abs() < 1e-9);
        assert_eq!(syscall_duty(0.01, 1e12), MIN_SYSCALL_DUTY);
        assert_eq!(syscall_duty(0.01, f64::INFINITY), MIN_SYSCALL_DUTY);
        let mut last = 1.0;
        for rate in [1e4, 1e5, 1e6, 1e7] {
            let duty = syscall_duty(0.01, rate);
            assert!(duty <= last, "not monotonic at {rate}");
            last = duty;
        }
    }

    #[test]
    fn no_budget_means_always_on() {
        assert_eq!(syscall_duty(0.0, 1e9), 1.0);
        assert_eq!(syscall_duty(f64::NAN, 1e9), 1.0);
        assert_eq!(syscall_duty(0.01, f64::NAN), 1.0);
    }

    #[test]
    fn a_window_probes_then_goes_off_at_the_share_its_rate_allows() {
        let window = std::time::Duration::from_secs(2);
        let start = std::time::Instant::now();
        assert_eq!(window_started(0.0, window, start, 0), None);
        let Some(SamplerStep::Probe { at, .. }) = window_started(0.01, window, start, 500) else {
            panic!("a probe first");
        };
        assert_eq!(at, start + std::time::Duration::from_millis(40));
        // 700,000 syscalls a second: on for 10.2% of the window.
        let probe_at = start + std::time::Duration::from_millis(40);
        let off = after_probe(0.01, window, start, 500, probe_at, 500 + 28_000);
        let Some(SamplerStep::Off { at }) = off else {
            panic!("{off:?}");
        };
        let on_ms = at.duration_since(start).as_secs_f64() * 1000.0;
        assert!((on_ms - 204.0).abs() < 1.0, "{on_ms}");
        // An ordinary rate: on to the end.
        assert_eq!(
            after_probe(0.01, window, start, 500, probe_at, 500 + 200),
            None
        );
        // A flood so heavy the probe already used the share: off at once.
        let off = after_probe(0.01, window, start, 0, probe_at, u64::MAX);
        assert_eq!(off, Some(SamplerStep::Off { at: probe_at }));
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
