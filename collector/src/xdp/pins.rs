//! Where the drop list lives: a root-only directory on bpffs, and the lock that serialises
//! edits by the CLI and the daemon's TTL sweep.

use std::{
    fs::{self, File},
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
};

use super::BlocklistError;

/// The documented home of the pinned maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/nodestate";
/// Overrides the pin directory (tests use their own so they never touch the real list).
pub const PIN_DIR_ENV: &str = "NODESTATE_PIN_DIR";

const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory, created 0700 on bpffs (mounting bpffs at /sys/fs/bpf if needed).
#[derive(Debug, Clone)]
pub struct PinDir {
    pub path: PathBuf,
}

/// An exclusive flock on the pin directory, released on drop: every read-modify-write of the
/// list (CLI edits, the daemon's TTL sweep) holds one, so two editors never interleave.
pub struct EditLock {
    _dir: File,
}

impl PinDir {
    pub fn open(path: &Path) -> Result<Self, BlocklistError> {
        check_rights(path)?;
        if path.starts_with(BPFFS_ROOT) && !is_bpffs(Path::new(BPFFS_ROOT)) {
            mount_bpffs().map_err(BlocklistError::BpffsNotMounted)?;
        }
        if !path.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| io_error(path, "creating", source))?;
        }
        if !is_bpffs(path) {
            return Err(BlocklistError::NotBpffs(path.display().to_string()));
        }
        // Whatever the umask or an older version left: only root may list or edit the rules.
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|source| io_error(path, "setting the mode of", source))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Waits for the lock: for the CLI, whose operator sees it wait.
    pub fn lock(&self) -> Result<EditLock, BlocklistError> {
        Ok(lock_dir(&self.path, false)?.expect("a blocking flock either locks or fails"))
    }

    /// Takes the lock if it is free; `None` at once if another process holds it. The daemon
    /// uses this: its windows must never wait on an editor (or on `flock -x DIR sleep …`).
    pub fn try_lock(&self) -> Result<Option<EditLock>, BlocklistError> {
        lock_dir(&self.path, true)
    }

    pub fn pin(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// An exclusive flock on directory `path`; with `nonblocking`, `None` when it is held.
pub(crate) fn lock_dir(path: &Path, nonblocking: bool) -> Result<Option<EditLock>, BlocklistError> {
    let dir = File::open(path).map_err(|source| io_error(path, "opening", source))?;
    let flags = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(dir.as_raw_fd(), flags) } != 0 {
        let err = io::Error::last_os_error();
        if nonblocking && err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        return Err(io_error(path, "locking", err));
    }
    Ok(Some(EditLock { _dir: dir }))
}

/// Processes holding a flock on `path`, from /proc/locks (by device and inode), each as
/// "pid N (comm)"; empty when none is found.
pub(crate) fn lock_holders(path: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = fs::metadata(path) else {
        return Vec::new();
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let Ok(locks) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    locks
        .lines()
        .filter(|line| line.contains("FLOCK") && !line.contains("->"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let device = fields.get(5)?;
            if *device != wanted {
                return None;
            }
            let pid = fields.get(4)?;
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            Some(format!("pid {pid} ({})", comm.trim()))
        })
        .collect()
}

fn io_error(path: &Path, what: &str, source: io::Error) -> BlocklistError {
    if matches!(source.kind(), io::ErrorKind::PermissionDenied)
        || source.raw_os_error() == Some(libc::EPERM)
    {
        return BlocklistError::PermissionDenied {
            pin_dir: path.display().to_string(),
            detail: format!("{what} it: {source}"),
        };
    }
    BlocklistError::Io {
        what: format!("{what} {}", path.display()),
        source,
    }
}

/// Refuses early, with the message an operator needs, rather than on the first EPERM.
pub(crate) fn check_rights(path: &Path) -> Result<(), BlocklistError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let caps = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|l| l.starts_with("CapEff:"))?
                .to_string();
            u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
        })
        .unwrap_or(0);
    if caps & (1 << CAP_SYS_ADMIN) != 0 || caps & (1 << CAP_BPF) != 0 {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    Err(BlocklistError::PermissionDenied {
        pin_dir: path.display().to_string(),
        detail: format!("this process has uid {euid} and effective capabilities {caps:#x}"),
    })
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we pass; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs() -> io::Result<()> {
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
