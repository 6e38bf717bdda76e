//! The scenario lab: what every scenario runs in. A disk (a loop device stacked on another, so
//! the lower one can be made slow), a network (a veth pair from the host into a namespace), a
//! cgroup for the background workload, and the background workload itself, so that "healthy"
//! is a node doing ordinary work rather than an idle one. Everything is torn down on drop,
//! also when a scenario fails half-way.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::util::output;

pub const NETNS: &str = "nodestate-scenario";
/// Host end of the veth pair (the node's side) and the namespace's end.
pub const HOST_IFACE: &str = "nsscen0";
pub const PEER_IFACE: &str = "nsscen1";
pub const HOST_ADDR: &str = "10.213.0.1";
pub const PEER_ADDR: &str = "10.213.0.2";
pub const IPERF_PORT: u16 = 5201;
pub const LISTENER_PORT: u16 = 5202;

/// The PATH of every lab and fault process: Debian's tools, nothing of the caller's.
const WORKLOAD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A process group started by the lab or a fault: killed as a whole when dropped.
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Starts `command` in its own process group, output discarded (the workloads are noisy),
    /// with a fixed PATH: a shell loop's failed lookups along the caller's PATH would make the
    /// same workload look different from one machine or login to the next.
    pub fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .env("PATH", WORKLOAD_PATH)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}: {command:?} (run `cargo xtask setup`)"))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    /// Fails if the process already exited: a workload that died makes the run meaningless.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let root = self.child.id() as i32;
        // Some tools (fio) move their workers to a session of their own: find every
        // descendant before anything dies and is re-parented away.
        let doomed = descendants(root);
        // SAFETY: kill(2) on the process group we created and on its descendants; no memory
        // is involved.
        unsafe {
            libc::kill(-root, libc::SIGKILL);
            for pid in doomed {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// Every process below `root`, from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces and parens.
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok())
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        index += 1;
    }
    found.remove(0);
    found
}

/// A cgroup with the controllers a fault needs, on cgroup v1 (one directory per controller)
/// or v2 (one directory, controllers enabled in the parent).
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    v2: bool,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The controllers of the service's cgroup and of every fault's own: memory and cpu at least,
/// because on cgroup v1 attribution charges a task to its memory (else cpu) cgroup, and a
/// process in a cgroup without them would be charged to the root `/` with everything else.
pub const WORKLOAD_CONTROLLERS: &[&str] = &["cpu", "memory", "blkio"];

/// The background service's cgroup (the healthy neighbour of every fault).
pub const SERVICE_CGROUP: &str = "nodestate-scenario-workload";

/// The name the daemon's resolver gives a cgroup of ours: outside Kubernetes, containers and
/// systemd, a cgroup is named by its path.
pub fn workload_name(cgroup: &str) -> String {
    format!("/{cgroup}")
}

impl Cgroup {
    pub fn create(name: &str, controllers: &[&str]) -> anyhow::Result<Self> {
        let v2 = Path::new(CGROUP_ROOT).join("cgroup.controllers").exists();
        let dirs = if v2 {
            let enable: String = controllers
                .iter()
                .map(|c| format!("+{}", if *c == "blkio" { "io" } else { c }))
                .collect::<Vec<_>>()
                .join(" ");
            fs::write(
                Path::new(CGROUP_ROOT).join("cgroup.subtree_control"),
                enable,
            )
            .context("enabling cgroup v2 controllers")?;
            vec![Path::new(CGROUP_ROOT).join(name)]
        } else {
            controllers
                .iter()
                .map(|c| Path::new(CGROUP_ROOT).join(c).join(name))
                .collect()
        };
        for dir in &dirs {
            if dir.exists() {
                let _ = fs::remove_dir(dir);
            }
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Self { dirs, v2 })
    }

    fn write(
        &self,
        v1_controller: &str,
        v1_file: &str,
        v2_file: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        let path = if self.v2 {
            self.dirs[0].join(v2_file)
        } else {
            self.dirs
                .iter()
                .find(|d| d.parent().is_some_and(|p| p.ends_with(v1_controller)))
                .with_context(|| format!("cgroup has no {v1_controller} controller"))?
                .join(v1_file)
        };
        fs::write(&path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
    }

    /// CPU quota as a share of one CPU, e.g. 0.2.
    pub fn set_cpu_quota(&self, share: f64) -> anyhow::Result<()> {
        let quota = (100_000.0 * share) as u64;
        if self.v2 {
            self.write("cpu", "", "cpu.max", &format!("{quota} 100000"))
        } else {
            self.write("cpu", "cpu.cfs_period_us", "", "100000")?;
            self.write("cpu", "cpu.cfs_quota_us", "", &quota.to_string())
        }
    }

    pub fn set_memory_limit(&self, bytes: u64) -> anyhow::Result<()> {
        self.write(
            "memory",
            "memory.limit_in_bytes",
            "memory.max",
            &bytes.to_string(),
        )
    }

    /// IOPS caps on one block device (`major:minor`); `None` lifts them.
    pub fn set_iops(&self, device: &str, iops: Option<u32>) -> anyhow::Result<()> {
        if self.v2 {
            let value = match iops {
                Some(n) => format!("{device} riops={n} wiops={n}"),
                None => format!("{device} riops=max wiops=max"),
            };
            self.write("", "", "io.max", &value)
        } else {
            let n = iops.unwrap_or(0);
            self.write(
                "blkio",
                "blkio.throttle.read_iops_device",
                "",
                &format!("{device} {n}"),
            )?;
            self.write(
                "blkio",
                "blkio.throttle.write_iops_device",
                "",
                &format!("{device} {n}"),
            )
        }
    }

    /// `command` wrapped so that it joins this cgroup before it starts.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let join: String = self
            .dirs
            .iter()
            .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
            .collect();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{join}exec \"$@\""))
            .arg("sh")
            .arg(program)
            .args(args);
        command
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Whatever is still inside was started by us: kill it so the directory can go.
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) on a pid read from our own cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        for _ in 0..50 {
            if self
                .dirs
                .iter()
                .all(|d| fs::remove_dir(d).is_ok() || !d.exists())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("scenario: could not remove cgroup {:?}", self.dirs);
    }
}

/// A loop device over a file or another block device, detached on drop.
pub struct LoopDevice {
    pub path: String,
}

impl LoopDevice {
    pub fn attach(backing: &Path, direct_io: bool) -> anyhow::Result<Self> {
        let mut command = Command::new("losetup");
        command.args(["-f", "--show"]);
        if direct_io {
            command.arg("--direct-io=on");
        }
        let path = output(command.arg(backing))
            .with_context(|| format!("losetup over {}", backing.display()))?
            .trim()
            .to_string();
        Ok(Self { path })
    }

    /// `major:minor`, as cgroup throttling files want it.
    pub fn device_number(&self) -> anyhow::Result<String> {
        let name = Path::new(&self.path).file_name().context("loop path")?;
        let dev = Path::new("/sys/block").join(name).join("dev");
        Ok(fs::read_to_string(&dev)
            .with_context(|| format!("reading {}", dev.display()))?
            .trim()
            .to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).output();
    }
}

/// A tmpfs of a fixed size, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: PathBuf, size: &str) -> anyhow::Result<Self> {
        fs::create_dir_all(&path)?;
        crate::util::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&path),
        )?;
        Ok(Self { path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        let _ = fs::remove_dir(&self.path);
    }
}

/// The network namespace and its veth pair; deleting the namespace deletes the pair.
pub struct Network;

impl Network {
    pub fn create() -> anyhow::Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        let _ = Command::new("ip")
            .args(["link", "del", HOST_IFACE])
            .output();
        let network = Network;
        let ip = |args: &[&str]| crate::util::run(Command::new("ip").args(args));
        ip(&["netns", "add", NETNS])?;
        ip(&[
            "link", "add", HOST_IFACE, "type", "veth", "peer", "name", PEER_IFACE,
        ])?;
        ip(&["link", "set", PEER_IFACE, "netns", NETNS])?;
        ip(&["addr", "add", &format!("{HOST_ADDR}/24"), "dev", HOST_IFACE])?;
        ip(&["link", "set", HOST_IFACE, "up"])?;
        ip(&[
            "-n",
            NETNS,
            "addr",
            "add",
            &format!("{PEER_ADDR}/24"),
            "dev",
            PEER_IFACE,
        ])?;
        ip(&["-n", NETNS, "link", "set", PEER_IFACE, "up"])?;
        ip(&["-n", NETNS, "link", "set", "lo", "up"])?;
        Ok(network)
    }

    /// A command run inside the namespace.
    pub fn command(program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", NETNS, program]).args(args);
        command
    }

    pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
        crate::util::run(Self::command(program, args).stdout(Stdio::null()))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        let _ = Command::new("ip")
            .args(["link", "del", HOST_IFACE])
            .output();
    }
}

/// Everything a scenario runs in. Field order is teardown order: processes first, then the
/// cgroup, the devices and the network they used.
pub struct Lab {
    pub background: Vec<Process>,
    pub workload_cgroup: Cgroup,
    /// What the background workload reads and writes: a loop device over `lower_disk`.
    pub disk: LoopDevice,
    /// The device under `disk`: throttling it makes `disk` slow, as a failing or
    /// credit-starved volume would.
    pub lower_disk: LoopDevice,
    _network: Network,
    pub dir: PathBuf,
}

/// Background workload shares: steady, modest, and the same in every scenario.
pub const BACKGROUND_READ_IOPS: u32 = 150;
pub const BACKGROUND_WRITE_IOPS: u32 = 60;

impl Lab {
    pub fn start(seconds: u64) -> anyhow::Result<Self> {
        // Dirty pages left by what ran before (a build writes gigabytes) would be written back
        // during the healthy period, as slow I/Os and long fsyncs that are not the lab's.
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        let dir = std::env::temp_dir().join(format!("nodestate-scenario-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let network = Network::create()?;
        let image = dir.join("disk.img");
        let file = fs::File::create(&image)?;
        file.set_len(512 << 20)?;
        drop(file);
        let lower_disk = LoopDevice::attach(&image, true)?;
        let disk = LoopDevice::attach(Path::new(&lower_disk.path), true)?;
        let workload_cgroup = Cgroup::create(SERVICE_CGROUP, WORKLOAD_CONTROLLERS)?;
        let mut lab = Lab {
            background: Vec::new(),
            workload_cgroup,
            disk,
            lower_disk,
            _network: network,
            dir,
        };
        let runtime = (seconds + 30).to_string();
        let xtask = super::worker_exe()?;

        // A service: steady CPU, a database-like small random I/O pattern with syncs, TCP
        // traffic, a scraper polling it, and short-lived helper processes.
        let cpu = lab.workload_cgroup.command(
            "stress-ng",
            &[
                "--cpu",
                "1",
                "--cpu-load",
                "20",
                "--timeout",
                &runtime,
                "--quiet",
            ],
        );
        let rate = format!("{BACKGROUND_READ_IOPS},{BACKGROUND_WRITE_IOPS}");
        let fio = lab.workload_cgroup.command(
            "fio",
            &[
                "--name=background",
                &format!("--filename={}", lab.disk.path),
                "--rw=randrw",
                "--rwmixread=70",
                "--bs=4k",
                "--direct=1",
                "--ioengine=psync",
                "--fdatasync=16",
                &format!("--rate_iops={rate}"),
                "--time_based",
                &format!("--runtime={runtime}"),
            ],
        );
        // The service's servers are the service's: in its cgroup, so that it is one workload
        // beside the fault (the scraper and the stream's client are outside, in the namespace).
        let iperf_server = lab.workload_cgroup.command(
            "iperf3",
            &["-s", "-B", HOST_ADDR, "-p", &IPERF_PORT.to_string()],
        );
        let churn = lab.workload_cgroup.command(
            "sh",
            &[
                "-c",
                "while :; do /bin/true; ls / > /dev/null; sleep 0.25; done",
            ],
        );
        let listener = lab.workload_cgroup.command(
            xtask.to_str().context("xtask path")?,
            &[
                "scenario-worker",
                "listen",
                &format!("{HOST_ADDR}:{LISTENER_PORT}"),
            ],
        );
        let poller = Network::command(
            xtask.to_str().context("xtask path")?,
            &[
                "scenario-worker",
                "poll",
                &format!("{HOST_ADDR}:{LISTENER_PORT}"),
            ],
        );
        for (name, mut command) in [
            ("background CPU (stress-ng)", cpu),
            ("background I/O (fio)", fio),
            ("iperf3 server", iperf_server),
            ("process churn", churn),
            ("listener", listener),
            ("poller", poller),
        ] {
            lab.background.push(Process::spawn(name, &mut command)?);
        }
        // The server must listen before the client connects.
        std::thread::sleep(Duration::from_millis(500));
        let mut iperf_client = Network::command(
            "iperf3",
            &[
                "-c",
                HOST_ADDR,
                "-p",
                &IPERF_PORT.to_string(),
                "-b",
                "20M",
                "-t",
                &runtime,
            ],
        );
        lab.background
            .push(Process::spawn("iperf3 client", &mut iperf_client)?);
        Ok(lab)
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for process in &mut self.background {
            process.check_running()?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.background.clear();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
