//! Whether this process may load eBPF programs, asked before trying so the error says what to do.

use std::fs;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "nodestate needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels \
     before 5.8), to load its kernel programs; this process has {have}. Run it as root (sudo \
     collector …) or, in Kubernetes, give the container those capabilities (see deploy/README.md)"
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

/// A hint for a failed load when this process runs under a seccomp filter, which container
/// runtimes' default profiles use to refuse `bpf()` (the error then reads only "Operation not
/// permitted", like missing capabilities do).
pub fn seccomp_hint() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    seccomp_hint_from_status(&status)
}

fn seccomp_hint_from_status(status: &str) -> Option<String> {
    let mode = status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))?
        .trim();
    (mode != "0").then(|| {
        format!(
            "this process runs under a seccomp filter (Seccomp: {mode} in /proc/self/status), \
             which may refuse bpf() and perf_event_open(): in Kubernetes set the container's \
             securityContext.seccompProfile to Unconfined (deploy/base does) or to a profile \
             that allows them"
        )
    })
}

/// `major.minor` of a kernel release string such as "6.18.0-1-amd64" or "5.10.0".
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Kernels before 5.11 charge BPF map memory to RLIMIT_MEMLOCK (later ones to the memory
/// cgroup), and its usual default (64 KiB–8 MiB) is smaller than our maps on a many-CPU node.
/// There, lift it: to unlimited with CAP_SYS_RESOURCE, else the soft limit to the hard one.
/// Newer kernels ignore it for BPF, so nothing is changed there.
pub fn raise_memlock_limit_on_old_kernels() {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match kernel_version(&release) {
        Some(version) if version >= (5, 11) => return,
        None => return,
        Some(_) => {}
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return;
    }
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) } != 0 {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: current.rlim_max,
        rlim_max: current.rlim_max,
    };
    // SAFETY: as above; lowering or keeping the hard limit needs no privilege.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) };
    tracing::warn!(
        kernel = release.trim(),
        limit_bytes = current.rlim_max,
        "this kernel charges BPF maps to RLIMIT_MEMLOCK and it could not be lifted (that needs \
         CAP_SYS_RESOURCE); if creating a map fails with EPERM, grant it"
    );
}

/// True when running as root: integration tests use it to decide whether to skip.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seccomp_filter_gets_a_hint_and_none_does_not() {
        let hint = seccomp_hint_from_status("Name:\tcollector\nSeccomp:\t2\nSeccomp_filters:\t1\n")
            .expect("a hint under a filter");
        assert!(
            hint.contains("Seccomp: 2") && hint.contains("seccompProfile"),
            "{hint}"
        );
        assert_eq!(
            seccomp_hint_from_status("Seccomp:\t0\nSeccomp_filters:\t0\n"),
            None
        );
        assert_eq!(seccomp_hint_from_status("Name:\tcollector\n"), None);
    }

    #[test]
    fn kernel_releases_parse_to_major_and_minor() {
        assert_eq!(kernel_version("6.18.0-1-amd64\n"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("5.4-rc1"), Some((5, 4)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.10.0").unwrap() < (5, 11));
    }
}
