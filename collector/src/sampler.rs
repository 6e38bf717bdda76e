//! The syscall sampler: how much of each window the syscall exit hook stays on.
//!
//! Any program on the `sys_exit` tracepoint puts every task of the node on the kernel's
//! syscall tracing slow path, whatever the program does: measured here, ~140 ns more per
//! syscall (an empty program alone costs ~117 ns; BENCHMARKS.md). On a node making millions of
//! syscalls a second that is a large share of a CPU, so the daemon gives the hook a budget, a
//! share of one CPU: when the last window's syscall rate times that cost exceeds it, the hook
//! is on for only the first part of the next window (the rest of the window nobody pays), and
//! the syscall rates are per second of the time it was on. At the rates of an ordinary node
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
