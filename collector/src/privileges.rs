//! Whether this process may load eBPF programs, asked before trying so the error says what to do.

use std::fs;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "nodestate needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels \
     before 5.8), to load its kernel programs; this process has {have}. Run it as root (sudo \
     collector …) or, in Kubernetes, give the container `privileged: true` or those capabilities"
)]
pub struct PrivilegeError {
    have: String,
}

/// The effective capability set of this process, from `/proc/self/status`.
fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Ok if this process can load and attach tracing programs.
pub fn check_can_load_programs() -> Result<(), PrivilegeError> {
    let caps = effective_capabilities().unwrap_or(0);
    let enough = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
    if enough {
        Ok(())
    } else {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        Err(PrivilegeError {
            have: format!("uid {euid} and effective capabilities {caps:#x}"),
        })
    }
}

/// True when running as root: integration tests use it to decide whether to skip.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
