//! `cargo xtask deb-test`: the `.deb` from `cargo xtask dist` installs, starts and purges
//! cleanly in a fresh Debian root (debootstrap, cached under target/deb-test/).
//!
//! Our machines run no systemd as PID 1, so "starts" means what the issue asks for:
//! `systemd-analyze verify` of the installed unit, then the unit's `ExecStart` command run for
//! real inside the root (the host's kernel: it loads the programs) until it serves /healthz.

use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    dist::{Arch, deb_name, dist_dir},
    util::{is_root, run, target_dir},
};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

pub fn deb_test() -> anyhow::Result<()> {
    if !is_root() {
        bail!("deb-test needs root (debootstrap, chroot, loading the programs)");
    }
    let deb = dist_dir().join(deb_name(Arch::X86_64));
    if !deb.is_file() {
        bail!(
            "{} is missing: run `cargo xtask dist --arch x86_64` first",
            deb.display()
        );
    }
    let cache = base_root()?;
    // Kept, not a self-deleting TempDir: the host's /proc and /sys are bind-mounted inside
    // while the daemon runs, and a recursive delete must never follow them (see `remove`).
    let scratch = tempfile::tempdir_in(target_dir())?.keep();
    let root = scratch.join("root");
    fs::create_dir_all(&root)?;
    let result = install_start_purge(&deb, &cache, &root);
    remove(&scratch)?;
    result
}

fn install_start_purge(deb: &Path, cache: &Path, root: &Path) -> anyhow::Result<()> {
    let root = root.to_path_buf();
    run(Command::new("tar")
        .arg("-xf")
        .arg(cache)
        .arg("-C")
        .arg(&root))?;
    let before = listing(&root)?;

    fs::copy(deb, root.join("tmp/nodestate.deb"))?;
    run(chroot(&root).args(["dpkg", "--install", "/tmp/nodestate.deb"]))
        .context("dpkg --install")?;
    fs::remove_file(root.join("tmp/nodestate.deb"))?;
    let unit = root.join("lib/systemd/system/nodestate.service");
    if !unit.is_file() {
        bail!("the package installed no systemd unit");
    }
    let config = root.join("etc/nodestate/config.toml");
    if !config.is_file() {
        bail!("the package installed no /etc/nodestate/config.toml");
    }
    verify_unit(&root)?;
    let version = capture(chroot(&root).args(["/usr/bin/collector", "--version"]))?;
    if version.trim() != format!("collector {}", crate::dist::VERSION) {
        bail!("the installed collector says {version:?}");
    }
    run_exec_start(&root, &fs::read_to_string(&unit)?)?;

    run(chroot(&root).args(["dpkg", "--purge", "nodestate"])).context("dpkg --purge")?;
    let after = listing(&root)?;
    let left: Vec<&String> = after
        .difference(&before)
        .filter(|path| !path.starts_with("/var/lib/dpkg/") && !path.starts_with("/var/log/"))
        .collect();
    if !left.is_empty() {
        bail!("files left after dpkg --purge: {left:?}");
    }
    eprintln!(
        "xtask deb-test: {} installed in a {SUITE} root, unit verified, ExecStart served \
         /healthz, purged with nothing left",
        deb_name(Arch::X86_64)
    );
    Ok(())
}

/// Deletes the scratch root, unless something is still mounted under it (then it says so and
/// leaves it: deleting through a bind mount of /sys would remove cgroups and pins of the host).
fn remove(scratch: &Path) -> anyhow::Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let prefix = scratch.to_string_lossy();
    if let Some(line) = mountinfo.lines().find(|line| {
        line.split_whitespace()
            .nth(4)
            .is_some_and(|point| point.starts_with(&*prefix))
    }) {
        bail!(
            "{} still has a mount ({line}); unmount it (umount -R) and delete it by hand",
            scratch.display()
        );
    }
    fs::remove_dir_all(scratch).with_context(|| format!("removing {}", scratch.display()))
}

/// A minimal Debian root with systemd, made once with debootstrap and kept as a tarball.
fn base_root() -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("deb-test");
    fs::create_dir_all(&dir)?;
    let cache = dir.join(format!("{SUITE}-minbase-systemd.tar"));
    if cache.is_file() {
        return Ok(cache);
    }
    let building = dir.join("root.tmp");
    let _ = fs::remove_dir_all(&building);
    eprintln!("xtask deb-test: debootstrap {SUITE} (minbase, once; a few minutes)");
    run(Command::new("debootstrap")
        // systemd: the unit is verified against the root's own targets (sysinit.target…).
        .args(["--variant=minbase", "--include=systemd", SUITE])
        .arg(&building)
        .arg(MIRROR))
    .context("debootstrap (`cargo xtask setup` installs it)")?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&building)
        .arg("-cf")
        .arg(&cache)
        .arg("."))?;
    fs::remove_dir_all(&building)?;
    Ok(cache)
}

fn chroot(root: &Path) -> Command {
    let mut command = Command::new("chroot");
    command
        .arg(root)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn capture(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every path under `root` (relative, with a leading `/`).
fn listing(root: &Path) -> anyhow::Result<BTreeSet<String>> {
    let text = capture(Command::new("find").arg(".").current_dir(root))?;
    Ok(text
        .lines()
        .map(|line| line.trim_start_matches('.').to_string())
        .filter(|line| !line.is_empty())
        .collect())
}

/// `systemd-analyze verify` of the installed unit against the installed root (it checks that
/// ExecStart's binary exists there, the directives parse, and the dependencies resolve).
fn verify_unit(root: &Path) -> anyhow::Result<()> {
    let output = Command::new("systemd-analyze")
        .arg("verify")
        // The man page is installed, but a minimal root has no `man` to look it up with.
        .arg("--man=no")
        .arg(format!("--root={}", root.display()))
        .arg("/lib/systemd/system/nodestate.service")
        .output()
        .context("systemd-analyze (the systemd package)")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Only lines about our unit count; a minimal root lacks units ours does not need.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("nodestate.service"))
        .collect();
    if !output.status.success() || !ours.is_empty() {
        bail!("systemd-analyze verify: {}\n{stderr}", output.status);
    }
    Ok(())
}

/// Runs the unit's ExecStart in the root (with /proc, /sys and /dev from the host) on a free
/// loopback port until /healthz answers, then stops it with SIGTERM as systemd would.
fn run_exec_start(root: &Path, unit: &str) -> anyhow::Result<()> {
    let exec = unit
        .lines()
        .find_map(|line| line.trim().strip_prefix("ExecStart="))
        .context("the unit has no ExecStart")?;
    let words: Vec<&str> = exec.split_whitespace().collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mounts = Mounts::new(root)?;
    let mut child = chroot(root)
        .args(&words)
        // A free port instead of the config's 0.0.0.0:9464 (other daemons may run here);
        // flags win over the config file.
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running ExecStart {exec}"))?;
    let started = Instant::now();
    let healthy = loop {
        if let Some(status) = child.try_wait()? {
            let mut log = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut log);
            }
            drop(mounts);
            bail!("ExecStart `{exec}` exited with {status}:\n{log}");
        }
        if healthz(port) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // SAFETY: kill with a pid we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait()?;
    drop(mounts);
    if !healthy {
        bail!("ExecStart `{exec}` did not serve /healthz within 60 s");
    }
    eprintln!(
        "xtask deb-test: ExecStart `{exec}` served /healthz after {:.1} s; exit after SIGTERM: {status}",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("ExecStart `{exec}` did not exit cleanly on SIGTERM: {status}");
    }
    Ok(())
}

fn healthz(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

/// /proc and /sys (with tracefs and bpffs under it) bind-mounted into the root, unmounted
/// on drop in reverse order.
struct Mounts {
    mounted: Vec<PathBuf>,
}

impl Mounts {
    fn new(root: &Path) -> anyhow::Result<Self> {
        let mut mounts = Self {
            mounted: Vec::new(),
        };
        // Not /dev: devtmpfs is one instance for the whole machine.
        for dir in ["proc", "sys"] {
            let target = root.join(dir);
            fs::create_dir_all(&target)?;
            run(Command::new("mount")
                .arg("--rbind")
                .arg(format!("/{dir}"))
                .arg(&target))?;
            // Keep unmounts inside the root from reaching the host's mounts.
            run(Command::new("mount").arg("--make-rslave").arg(&target))?;
            mounts.mounted.push(target);
        }
        Ok(mounts)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            let _ = Command::new("umount").arg("-R").arg(target).status();
        }
    }
}
