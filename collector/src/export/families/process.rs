//! The daemon's own cost under the names every Prometheus client library uses (`process_*`,
//! as client_golang's process collector in node_exporter), so stock dashboards find them.

use prometheus_client::{encoding::DescriptorEncoder, registry::Unit};

use super::{counters, gauges};

/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`. A value /proc does not give has no series (never a 0).
pub(in crate::export) fn encode(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let usage = ProcessUsage::read();
    let one = |value: Option<f64>| -> Vec<(Vec<(&str, String)>, f64)> {
        value.map(|value| (Vec::new(), value)).into_iter().collect()
    };
    counters(
        encoder,
        "process_cpu",
        "Total user and system CPU time spent in seconds.",
        Some(&Unit::Seconds),
        &one(usage.cpu_seconds),
    )?;
    gauges(
        encoder,
        "process_resident_memory",
        "Resident memory size in bytes.",
        Some(&Unit::Bytes),
        &one(usage.resident_bytes),
    )?;
    gauges(
        encoder,
        "process_virtual_memory",
        "Virtual memory size in bytes.",
        Some(&Unit::Bytes),
        &one(usage.virtual_bytes),
    )?;
    gauges(
        encoder,
        "process_open_fds",
        "Number of open file descriptors.",
        None,
        &one(usage.open_fds),
    )?;
    gauges(
        encoder,
        "process_max_fds",
        "Maximum number of open file descriptors.",
        None,
        &one(usage.max_fds),
    )?;
    gauges(
        encoder,
        "process_start_time",
        "Start time of the process since unix epoch in seconds.",
        Some(&Unit::Seconds),
        &one(usage.start_time_seconds),
    )?;
    Ok(())
}

/// What /proc says about this process.
#[derive(Debug, Default, PartialEq)]
pub(in crate::export) struct ProcessUsage {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessUsage {
    pub fn read() -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| boot_time(&text));
        let mut usage = parse_stat(&stat, ticks, page, boot_time);
        usage.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as f64);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            usage.max_fds = Some(limit.rlim_cur as f64);
        }
        usage
    }
}

/// `btime` of /proc/stat: boot time, seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// CPU time, start time, virtual and resident size from a /proc/PID/stat line.
fn parse_stat(stat: &str, ticks: f64, page: f64, boot_time: Option<f64>) -> ProcessUsage {
    // Fields after the command name (which may hold spaces and parentheses) start after the
    // last ") "; field 3 (state) is index 0 here, so field N is index N - 3.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return ProcessUsage::default();
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    ProcessUsage {
        cpu_seconds: field(14).zip(field(15)).map(|(u, s)| (u + s) / ticks),
        start_time_seconds: field(22)
            .zip(boot_time)
            .map(|(start, boot)| boot + start / ticks),
        virtual_bytes: field(23),
        resident_bytes: field(24).map(|pages| pages * page),
        ..ProcessUsage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_command_with_spaces_and_parentheses() {
        // A real line's shape (fields 14, 15 utime/stime; 22 starttime; 23 vsize; 24 rss).
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 \
                    1000 123456789 300 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let usage = parse_stat(stat, 100.0, 4096.0, Some(1_700_000_000.0));
        assert_eq!(usage.cpu_seconds, Some(3.0));
        assert_eq!(usage.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(usage.virtual_bytes, Some(123_456_789.0));
        assert_eq!(usage.resident_bytes, Some(300.0 * 4096.0));
        assert_eq!(
            parse_stat("garbage", 100.0, 4096.0, None),
            ProcessUsage::default()
        );
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn this_process_reads_as_running_now() {
        let usage = ProcessUsage::read();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = usage.start_time_seconds.expect("a start time");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        assert!(usage.resident_bytes.expect("rss") > 1e5);
        assert!(usage.open_fds.expect("fds") >= 3.0);
        assert!(usage.max_fds.expect("limit") >= usage.open_fds.unwrap());
    }
}
