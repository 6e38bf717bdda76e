//! Helpers for tests that touch the real kernel: privilege gating that skips loudly, loop
//! devices over temporary files, direct I/O with aligned buffers, the one starter of
//! `collector run` ([`daemon::Daemon`]) and the one synthetic model file
//! ([`write_synthetic_model`]).

pub mod daemon;

pub mod netns;

pub mod conductor;
pub mod http;

pub mod podman;
pub mod process;

pub mod xdp_daemon;

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

/// Set by `cargo xtask test` when it runs as root (see xtask/src/test.rs).
pub const REQUIRE_PRIVILEGED_TESTS: &str = "NODESTATE_REQUIRE_PRIVILEGED_TESTS";

/// True if this test may load eBPF programs. Otherwise says so on the terminal (not through
/// the captured test output) and returns false, or panics when the run demands privileged
/// tests, so a CI run as root can never pass by skipping them.
pub fn privileged(test: &str) -> bool {
    match collector::kernel::privileges::check_can_load_programs() {
        Ok(()) => true,
        Err(err) => {
            if std::env::var_os(REQUIRE_PRIVILEGED_TESTS).is_some() {
                panic!("{test}: privileged tests are required in this run but: {err}");
            }
            // Straight to stderr: libtest captures only print!/eprint!.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPING {test}: needs root or CAP_BPF+CAP_PERFMON ({err})"
            );
            false
        }
    }
}

/// A loop device over a temporary file, detached and deleted on drop.
pub struct LoopDevice {
    pub path: PathBuf,
    _backing: tempfile::NamedTempFile,
}

impl LoopDevice {
    pub fn new(size_bytes: u64) -> Self {
        let backing = tempfile::NamedTempFile::new().expect("creating the backing file");
        backing
            .as_file()
            .set_len(size_bytes)
            .expect("sizing the backing file");
        Self::attach(backing, &[])
    }

    /// A loop device whose requests the loop driver's worker (a kernel thread) turns into
    /// direct I/O on the backing file's blocks: the file is written whole (no holes, which
    /// would read as zeros without a request) and the device set up with `--direct-io=on`.
    /// Whether those reads reach a disk: [`Self::backing_io_reaches_a_disk`].
    pub fn with_direct_backing_io(size_bytes: u64) -> Self {
        let backing = tempfile::NamedTempFile::new().expect("creating the backing file");
        let chunk = vec![0x5a_u8; 1 << 20];
        let mut left = size_bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            backing
                .as_file()
                .write_all(&chunk[..n])
                .expect("filling the backing file");
            left -= n as u64;
        }
        backing
            .as_file()
            .sync_all()
            .expect("syncing the backing file");
        Self::attach(backing, &["--direct-io=on"])
    }

    /// `Ok` if the loop driver reads the backing file with direct I/O on a block device (so
    /// every request to this device makes one there, submitted by the driver's worker), else
    /// why not: the loop driver or the file system refused direct I/O, or the backing file is
    /// on a file system without a disk (tmpfs).
    pub fn backing_io_reaches_a_disk(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt as _;
        let dio = std::fs::read_to_string(format!("/sys/block/{}/loop/dio", self.name()))
            .map_err(|err| format!("reading the loop device's dio flag: {err}"))?;
        if dio.trim() != "1" {
            return Err(format!(
                "{} reads its backing file through the page cache",
                self.name()
            ));
        }
        let dev = self
            ._backing
            .as_file()
            .metadata()
            .map_err(|err| format!("stat on the backing file: {err}"))?
            .dev();
        if libc::major(dev) == 0 {
            return Err(
                "the backing file's file system reports no block device (tmpfs?)".to_string(),
            );
        }
        Ok(())
    }

    fn attach(backing: tempfile::NamedTempFile, options: &[&str]) -> Self {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .args(options)
            .arg(backing.path())
            .output()
            .expect("running losetup (util-linux)");
        assert!(
            output.status.success(),
            "losetup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Self {
            path,
            _backing: backing,
        }
    }

    /// Major and minor number of the device.
    pub fn dev(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt as _;
        let rdev = std::fs::metadata(&self.path)
            .expect("stat on the loop device")
            .rdev();
        (libc::major(rdev), libc::minor(rdev))
    }

    /// The kernel-internal `dev_t` the block tracepoints report for this device.
    pub fn kernel_dev(&self) -> u32 {
        let (major, minor) = self.dev();
        collector::kernel::dev::kernel_dev(major, minor)
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .expect("device has a file name")
            .to_string_lossy()
            .into_owned()
    }

    /// Opens the device for direct I/O, bypassing the page cache so every call is a request.
    pub fn open_direct(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_SYNC)
            .open(&self.path)
            .expect("opening the loop device with O_DIRECT")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// A buffer aligned for O_DIRECT (4 KiB covers every logical block size we meet).
pub struct AlignedBuffer {
    pointer: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuffer {
    pub fn new(len: usize, fill: u8) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: the layout has a non-zero size (callers ask for whole blocks).
        let pointer = unsafe { std::alloc::alloc(layout) };
        assert!(!pointer.is_null(), "allocation failed");
        // SAFETY: `pointer` is valid for `len` bytes.
        unsafe { std::ptr::write_bytes(pointer, fill, len) };
        Self { pointer, layout }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: allocated and initialised for layout.size() bytes in `new`.
        unsafe { std::slice::from_raw_parts(self.pointer, self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.pointer, self.layout.size()) }
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.pointer, self.layout) };
    }
}

/// Writes `count` blocks of `block` bytes at consecutive offsets, one synchronous request each.
pub fn direct_writes(file: &File, block: usize, count: u64) {
    let buffer = AlignedBuffer::new(block, 0xA5);
    for index in 0..count {
        file.write_all_at(buffer.as_slice(), index * block as u64)
            .expect("direct write");
    }
}

/// Reads `count` blocks of `block` bytes at consecutive offsets, one synchronous request each.
pub fn direct_reads(file: &File, block: usize, count: u64) {
    let mut buffer = AlignedBuffer::new(block, 0);
    for index in 0..count {
        file.read_exact_at(buffer.as_mut_slice(), index * block as u64)
            .expect("direct read");
    }
}

/// A thread making getppid calls as fast as it can (the cheapest syscall: a flood of syscall
/// exits and nothing else), for at most 30 s whatever happens to the test.
pub struct SyscallFlood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<std::time::Duration>,
}

impl SyscallFlood {
    pub fn start() -> Self {
        use std::sync::{Arc, atomic::Ordering};
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < std::time::Duration::from_secs(30)
                {
                    for _ in 0..1000 {
                        // SAFETY: getppid has no preconditions.
                        unsafe { libc::getppid() };
                    }
                    calls.fetch_add(1000, Ordering::Relaxed);
                }
                started.elapsed()
            })
        };
        Self {
            stop,
            calls,
            thread,
        }
    }

    /// Stops the flood; returns its average rate, calls per second.
    pub fn stop(self) -> f64 {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        let flooded_for = self.thread.join().expect("the flood thread");
        self.calls.load(Ordering::Relaxed) as f64 / flooded_for.as_secs_f64()
    }
}

/// The windows of a `collector record` file, one JSON object per line.
pub fn read_windows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("reading the recording")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect()
}

/// Path of a binary of this workspace, next to the test executable's `deps/` directory
/// (`cargo xtask test` builds the binaries first).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} not built: run `cargo xtask test` (or `cargo build --release --bins`) first",
        binary.display()
    );
    binary
}

/// A model file trained on synthetic windows (every feature 0..6) with exactly the collector's
/// features: it loads in the daemon, and this machine's real windows are far from all of it.
pub fn write_synthetic_model(path: &Path) {
    let features: Vec<&str> = collector::window::record::WindowRecord::feature_names().collect();
    let rows: Vec<model::input::Row> = (0..40)
        .map(|index| model::input::Row {
            values: features
                .iter()
                .map(|name| (name.to_string(), (index % 7) as f64))
                .collect(),
            timestamp_s: None,
            label: None,
            line: index,
        })
        .collect();
    model::Model::train(
        &rows,
        &model::TrainOptions {
            k: 2,
            ..Default::default()
        },
    )
    .expect("training the synthetic model")
    .save(path)
    .expect("writing the synthetic model");
}
