//! What several benchmarks ask of the machine: the bpf(2) syscall without a loader, how busy
//! the machine is, and a process's CPU time.

use std::fs;

pub(super) fn bpf(command: libc::c_long, attr: &mut [u64; 16]) -> anyhow::Result<i32> {
    // SAFETY: `attr` is a zeroed union bpf_attr (128 bytes) with this command's fields set,
    // and every pointer in it outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(fd as i32)
}

/// How busy the machine is: the 1-minute load average, and other collectors running (whose
/// programs would be attached during the runs "without").
pub(super) fn machine_state() -> (f64, Vec<String>) {
    let load = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let others = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "collector").then(|| pid.to_string())
        })
        .collect();
    (load, others)
}
/// User + system CPU time of process `pid` so far, in seconds; `None` if it cannot be read.
pub(super) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}
