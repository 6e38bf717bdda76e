//! `cargo xtask bench idle`: what the daemon costs a node that does nothing else. The issue's
//! budget is under 48 MiB resident and under 1% of one core for the idle daemon as shipped;
//! the same daemon with `--cgroup-attribution off` runs in alternate stretches of the same
//! run, so the attribution's own share is a difference measured side by side. The kernel's
//! map memory is what it charges (`memlock`) for the maps created since the daemon started,
//! listed by id, not computed from sizes.

use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use std::os::fd::{AsRawFd as _, FromRawFd as _};

use super::{
    block::{median, start_collector, stop},
    system::{bpf, machine_state, process_cpu_seconds},
};

/// Stretches per configuration.
const ROUNDS: usize = 3;
/// Seconds after the daemon says it is collecting before a stretch starts: its start-up (the
/// /proc scan, the BTF read, the first windows) is not its idle cost.
const WARM_UP_S: u64 = 15;
/// Seconds of one measured stretch: twelve 5 s windows, so every sampler cycle and one
/// round of program statistics are inside.
const STRETCH_S: u64 = 60;
/// The budget for the idle daemon.
const RSS_BUDGET_MIB: f64 = 48.0;
const CPU_BUDGET_PCT: f64 = 1.0;

/// One stretch of one configuration.
struct Sample {
    cpu_pct: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    map_mib: f64,
    maps: usize,
}

/// `VmRSS` and `VmHWM` of `pid`, in MiB.
fn resident_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("{name} is not a number: {line}"))?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Every BPF map on the machine: id and the memory the kernel charges for it (`memlock` in
/// the fdinfo of a descriptor opened by id). Maps a daemon's programs hold without the daemon
/// keeping a descriptor are among them, which a walk of its own descriptors would miss.
fn system_maps() -> anyhow::Result<std::collections::BTreeMap<u32, u64>> {
    const BPF_MAP_GET_NEXT_ID: libc::c_long = 12;
    const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
    let mut maps = std::collections::BTreeMap::new();
    let mut id = 0u32;
    loop {
        // union bpf_attr: start_id, next_id.
        let mut attr = [0u64; 16];
        attr[0] = u64::from(id);
        match bpf(BPF_MAP_GET_NEXT_ID, &mut attr) {
            Ok(_) => id = (attr[0] >> 32) as u32,
            Err(error)
                if error
                    .downcast_ref::<std::io::Error>()
                    .and_then(|e| e.raw_os_error())
                    == Some(libc::ENOENT) =>
            {
                return Ok(maps);
            }
            Err(error) => return Err(error.context("listing the machine's BPF maps (as root?)")),
        }
        // union bpf_attr: map_id; the map may be gone already.
        let mut attr = [0u64; 16];
        attr[0] = u64::from(id);
        let Ok(fd) = bpf(BPF_MAP_GET_FD_BY_ID, &mut attr) else {
            continue;
        };
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let info =
            fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap_or_default();
        let memlock = info
            .lines()
            .find_map(|line| line.strip_prefix("memlock:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        maps.insert(id, memlock);
    }
}

/// The maps created since `before` was listed (map ids only grow): the daemon's, on a machine
/// where nothing else loads programs meanwhile. MiB and how many.
fn new_maps_mib(before: &std::collections::BTreeMap<u32, u64>) -> anyhow::Result<(f64, usize)> {
    let newest = before.keys().next_back().copied().unwrap_or(0);
    let new: Vec<u64> = system_maps()?
        .range(newest + 1..)
        .map(|(_, bytes)| *bytes)
        .collect();
    Ok((
        new.iter().sum::<u64>() as f64 / (1024.0 * 1024.0),
        new.len(),
    ))
}

/// Starts the daemon with `extra` flags, lets it settle, measures one stretch, stops it.
fn stretch(extra: &[&str]) -> anyhow::Result<Sample> {
    let mut args = vec!["run", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let before = system_maps()?;
    let collector = start_collector(&args)?;
    let pid = collector.id();
    let measured = (|| {
        std::thread::sleep(Duration::from_secs(WARM_UP_S));
        let cpu_before = process_cpu_seconds(pid).context("the daemon's CPU time")?;
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(STRETCH_S));
        let cpu = process_cpu_seconds(pid).context("the daemon's CPU time")? - cpu_before;
        let elapsed = started.elapsed().as_secs_f64();
        let (rss_mib, peak_rss_mib) = resident_mib(pid)?;
        let (map_mib, maps) = new_maps_mib(&before)?;
        Ok(Sample {
            cpu_pct: cpu / elapsed * 100.0,
            rss_mib,
            peak_rss_mib,
            map_mib,
            maps,
        })
    })();
    stop(collector)?;
    measured
}

pub fn run() -> anyhow::Result<String> {
    let (load_before, others) = machine_state();
    if !others.is_empty() {
        anyhow::bail!(
            "another collector is running (pid {}): stop it first",
            others.join(", ")
        );
    }
    let configs: [(&str, &[&str]); 2] = [
        ("as shipped", &[]),
        (
            "`--cgroup-attribution off`",
            &["--cgroup-attribution", "off"],
        ),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        // Alternate which goes first, so neither always follows the other's teardown.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            eprintln!(
                "  idle: round {} of {ROUNDS}, {}",
                round + 1,
                configs[index].0
            );
            samples[index].push(stretch(configs[index].1)?);
        }
    }
    let cell = |values: Vec<f64>, digits: usize| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(
            "{:.digits$} ({low:.digits$}–{high:.digits$})",
            median(&values)
        )
    };
    let rows: Vec<String> = configs
        .iter()
        .zip(&samples)
        .map(|((name, _), samples)| {
            let of = |field: fn(&Sample) -> f64| samples.iter().map(field).collect::<Vec<_>>();
            format!(
                "| {name} | {} | {} | {} | {} | {} |",
                cell(of(|s| s.cpu_pct), 2),
                cell(of(|s| s.rss_mib), 1),
                cell(of(|s| s.peak_rss_mib), 1),
                cell(of(|s| s.map_mib), 1),
                samples.first().map_or(0, |s| s.maps),
            )
        })
        .collect();
    let shipped = &samples[0];
    let cpu = median(&shipped.iter().map(|s| s.cpu_pct).collect::<Vec<_>>());
    let peak = shipped
        .iter()
        .map(|s| s.peak_rss_mib)
        .fold(0.0f64, f64::max);
    let map_on = median(&shipped.iter().map(|s| s.map_mib).collect::<Vec<_>>());
    let map_off = median(&samples[1].iter().map(|s| s.map_mib).collect::<Vec<_>>());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let verdict = format!(
        "As shipped the idle daemon used {cpu:.2}% of one core (budget {CPU_BUDGET_PCT}%: {}) \
         and at most {peak:.1} MiB resident (budget {RSS_BUDGET_MIB} MiB: {}). The kernel \
         held {map_on:.1} MiB of maps for it on this {cpus}-CPU machine ({map_off:.1} MiB with \
         attribution off: {:+.1} MiB for the attribution; per-CPU maps grow with the CPU \
         count).",
        if cpu < CPU_BUDGET_PCT {
            "met"
        } else {
            "**missed**"
        },
        if peak < RSS_BUDGET_MIB {
            "met"
        } else {
            "**missed**"
        },
        map_on - map_off,
    );
    Ok(format!(
        "## The idle daemon: CPU, memory, maps\n\n\
         `cargo xtask bench idle`: `collector run` with the built-in model on this machine \
         with nothing else to do, {ROUNDS} stretches of {STRETCH_S} s per configuration \
         (each a fresh daemon, measured from {WARM_UP_S} s after it said it was collecting), \
         as shipped and with `--cgroup-attribution off` in alternate order. CPU: the daemon's \
         user + system time over the stretch, as a share of one core. Resident: `VmRSS` at \
         the stretch's end; peak: `VmHWM`. Maps: the sum of `memlock` the kernel reports for \
         the BPF maps created since the daemon started (listed by id: those its programs hold \
         count too), the memory they pin. Median \
         (lowest–highest). 1-minute load average before the run: {load_before:.2}{}.\n\n\
         | daemon | CPU, % of one core | resident, MiB | peak resident, MiB | maps, MiB | maps |\n\
         |---|---|---|---|---|---|\n{}\n\n{verdict}\n",
        if load_before > 0.5 {
            " (**not a quiet machine**: read the CPU figures as approximate)"
        } else {
            ""
        },
        rows.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        let (rss, peak) = resident_mib(std::process::id()).unwrap();
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
    }
}
