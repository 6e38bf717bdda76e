//! Real containers for attribution tests: a busybox image built here (a tarball of the host's
//! busybox-static and its applets, `podman import`: no registry), and containers run from it
//! with `--runtime runc`, removed on drop.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Output},
};

use crate::REQUIRE_PRIVILEGED_TESTS;

/// The busybox applets the image links: what the tests' scripts call.
const APPLETS: &[&str] = &[
    "sh", "sleep", "dd", "true", "tail", "cat", "kill", "rm", "touch",
];

/// A file in the image for scripts to open (the failed-opens fault opens it many times).
pub const SOME_FILE: &str = "/etc/some-file";

/// Runs podman; its trimmed stdout. Panics with its stderr when it fails.
pub fn podman(args: &[&str]) -> String {
    podman_in(args, None)
}

/// [`podman`] run in `dir`: the container monitor (conmon) `podman run -d` leaves behind
/// inherits it and writes a file `oom` there when the container is OOM-killed, which would
/// otherwise land in the test's working directory (the crate's source folder).
fn podman_in(args: &[&str], dir: Option<&std::path::Path>) -> String {
    let mut command = Command::new("podman");
    command.args(args);
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("running podman");
    assert!(
        status.success(),
        "podman {args:?} failed ({status}): {}",
        String::from_utf8_lossy(&stderr)
    );
    String::from_utf8_lossy(&stdout).trim().to_string()
}

/// Whether podman and busybox-static are installed. Otherwise says so on the terminal and
/// returns false, or panics when the run demands privileged tests (they are the project's
/// set-up: a CI run must not pass by skipping).
pub fn available(test: &str) -> bool {
    let podman = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    let busybox = Path::new("/bin/busybox").exists();
    if podman && busybox {
        return true;
    }
    let why = format!("needs podman ({podman}) and busybox-static at /bin/busybox ({busybox})");
    if std::env::var_os(REQUIRE_PRIVILEGED_TESTS).is_some() {
        panic!("{test}: privileged tests are required in this run but it {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPING {test}: {why}");
    false
}

/// A local image of busybox, removed on drop.
pub struct Image {
    pub name: String,
}

impl Image {
    /// Builds `localhost/nodestate-<tag>:<pid>` from the host's busybox: its applets in
    /// `/bin`, an empty `/tmp` (scripts leave flag files there) and [`SOME_FILE`].
    pub fn busybox(tag: &str) -> Self {
        let name = format!("localhost/nodestate-{tag}:{}", std::process::id());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rootfs = dir.path().join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).expect("creating the image's /bin");
        std::fs::create_dir_all(rootfs.join("tmp")).expect("creating the image's /tmp");
        std::fs::create_dir_all(rootfs.join("etc")).expect("creating the image's /etc");
        std::fs::write(
            rootfs.join(SOME_FILE.trim_start_matches('/')),
            "some file\n",
        )
        .expect("writing the image's file");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("an applet link");
        }
        let tarball = dir.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .expect("running tar");
        assert!(status.success(), "tar of the image's root failed");
        podman(&["import", tarball.to_str().expect("a UTF-8 path"), &name]);
        Self { name }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.name])
            .output();
    }
}

/// A detached container, removed (killed at once) on drop.
pub struct Container {
    pub name: String,
    /// The monitor's working directory (see [`podman_in`]); removed after the container.
    _monitor_dir: tempfile::TempDir,
}

impl Container {
    /// `podman run -d` of `/bin/sh -c SCRIPT` in `image`, without a network, with `extra`
    /// options (`--device`, `--memory`, `--ulimit`…) after the defaults. A container of the
    /// same name left by an earlier run is removed first.
    pub fn run(name: &str, image: &Image, extra: &[&str], script: &str) -> Self {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", name])
            .output();
        let mut args = vec![
            // crun refuses this host's hybrid cgroup layout; runc runs (see xtask/src/image.rs).
            "--runtime",
            "runc",
            "run",
            "-d",
            "--network=none",
            "--name",
            name,
            // podman's default limits are above what a test's shell may raise them to (runc
            // then fails with EPERM): explicit ones, which `extra` may override.
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image.name.as_str(), "/bin/sh", "-c", script]);
        let monitor_dir = tempfile::tempdir().expect("a temporary directory for conmon");
        podman_in(&args, Some(monitor_dir.path()));
        Self {
            name: name.into(),
            _monitor_dir: monitor_dir,
        }
    }

    /// Runs `/bin/sh -c SCRIPT` inside it; its stdout.
    pub fn exec(&self, script: &str) -> String {
        podman(&["exec", &self.name, "/bin/sh", "-c", script])
    }

    /// The host pid of its first process.
    pub fn pid(&self) -> u32 {
        podman(&["inspect", "-f", "{{.State.Pid}}", &self.name])
            .parse()
            .expect("podman inspect gives a pid")
    }

    /// Its cgroup path (without the leading `/`) in the v1 hierarchy holding `controller`,
    /// from its first process.
    pub fn cgroup_path(&self, controller: &str) -> String {
        let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid()))
            .expect("reading the container's /proc/PID/cgroup");
        cgroups
            .lines()
            .find_map(|line| {
                let (_, rest) = line.split_once(':')?;
                let (controllers, path) = rest.split_once(':')?;
                controllers
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| path.trim_start_matches('/').to_string())
            })
            .unwrap_or_else(|| panic!("the container has no {controller} cgroup:\n{cgroups}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}
