//! The daemon's own cost: CPU time and resident memory.

use prometheus_client::{encoding::DescriptorEncoder, registry::Unit};

use super::{counters, gauges};

/// `nodestate_process_cpu_seconds`, `nodestate_process_resident_memory_bytes`.
pub(in crate::export) fn encode(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let none: Vec<(&str, String)> = Vec::new();
    let (cpu, rss) = process_usage();
    counters(
        encoder,
        "nodestate_process_cpu",
        "CPU time used by the daemon (user + system)",
        Some(&Unit::Seconds),
        &[(none.clone(), cpu)],
    )?;
    gauges(
        encoder,
        "nodestate_process_resident_memory",
        "Resident memory of the daemon",
        Some(&Unit::Bytes),
        &[(none, rss)],
    )?;
    Ok(())
}

/// Daemon CPU seconds (user + system) and resident bytes, from /proc/self.
fn process_usage() -> (f64, f64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start after ") ".
            let rest = stat.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            // SAFETY: sysconf has no preconditions.
            let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024.0)
        })
        .unwrap_or(0.0);
    (cpu, rss)
}
