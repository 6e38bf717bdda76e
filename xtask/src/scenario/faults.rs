//! The faults, each caused for real with the tools this kernel has (see the scenario table in
//! datasets/README.md), and undone when its guard drops.

use std::{any::Any, fs, path::Path, process::Command};

use anyhow::Context as _;

use super::lab::{
    Cgroup, HOST_ADDR, HOST_IFACE, LISTENER_PORT, Lab, LoopDevice, NETNS, Network, PEER_ADDR,
    PEER_IFACE, Process, Tmpfs, WORKLOAD_CONTROLLERS,
};

// The cgroup of each fault whose cause is a workload on the node: the daemon should name it
// first (the Scenario table says which scenario expects which).
pub const CPU_HOGS: &str = "nodestate-scenario-cpu-hogs";
pub const THROTTLED: &str = "nodestate-scenario-throttled";
pub const MEMORY_JOB: &str = "nodestate-scenario-memory";
pub const OOM_LOOP: &str = "nodestate-scenario-oom";
pub const CRASH_LOOP: &str = "nodestate-scenario-crash-loop";
pub const VOLUME_WRITER: &str = "nodestate-scenario-volume-writer";
pub const FD_LEAK: &str = "nodestate-scenario-fd-leak";
pub const CONNECTION_CHURN: &str = "nodestate-scenario-connection-churn";
pub const LOG_WRITER: &str = "nodestate-scenario-log-writer";
pub const NOISY_WRITER: &str = "nodestate-scenario-noisy-writer";

/// A fault's own cgroup, beside the service's.
fn own_cgroup(name: &str) -> anyhow::Result<Cgroup> {
    Cgroup::create(name, WORKLOAD_CONTROLLERS)
}

/// `xtask scenario-worker ARGS` started inside `cgroup`.
fn worker_in(cgroup: &Cgroup, args: &[&str]) -> anyhow::Result<Command> {
    let worker = super::worker_exe()?;
    let mut all = vec!["scenario-worker"];
    all.extend_from_slice(args);
    Ok(cgroup.command(worker.to_str().context("xtask path")?, &all))
}

/// What a running fault holds; dropped last-in first-out, so processes stop before the
/// cgroup, mount or device they use goes away.
#[derive(Default)]
pub struct Active {
    held: Vec<Box<dyn Any>>,
    undo: Vec<(String, Command)>,
}

impl Active {
    fn hold(&mut self, thing: impl Any) {
        self.held.push(Box::new(thing));
    }

    fn spawn(&mut self, name: &str, mut command: Command) -> anyhow::Result<()> {
        self.hold(Process::spawn(name, &mut command)?);
        Ok(())
    }

    /// A command to run when the fault ends (before anything held is dropped).
    fn on_stop(&mut self, what: &str, command: Command) {
        self.undo.push((what.to_string(), command));
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        while let Some((what, mut command)) = self.undo.pop() {
            if !command.status().is_ok_and(|s| s.success()) {
                eprintln!("scenario: undoing {what} failed: {command:?}");
            }
        }
        while let Some(thing) = self.held.pop() {
            drop(thing);
        }
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

pub fn cpu_saturation(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // Two workers per CPU: every runnable task waits for a CPU.
    let cgroup = own_cgroup(CPU_HOGS)?;
    let command = cgroup.command("stress-ng", &["--cpu", "4", "--quiet"]);
    active.hold(cgroup);
    active.spawn("stress-ng --cpu", command)
}

pub fn cpu_throttling(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    let cgroup = own_cgroup(THROTTLED)?;
    cgroup.set_cpu_quota(0.2)?;
    let command = cgroup.command("stress-ng", &["--cpu", "2", "--quiet"]);
    active.hold(cgroup);
    active.spawn("stress-ng in a 20% CPU quota", command)
}

pub fn memory_pressure(lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A batch job whose working set does not fit its memory limit: anonymous memory it keeps
    // plus a file it rereads, so the kernel reclaims the job's page cache over and over.
    let file = lab.dir.join("dataset.bin");
    crate::util::run(Command::new("fallocate").args(["-l", "512M"]).arg(&file))?;
    let cgroup = own_cgroup(MEMORY_JOB)?;
    cgroup.set_memory_limit(192 << 20)?;
    let hog = cgroup.command(
        "stress-ng",
        &["--vm", "1", "--vm-bytes", "128M", "--vm-keep", "--quiet"],
    );
    let reader = cgroup.command(
        "sh",
        &[
            "-c",
            &format!("while :; do cat {} > /dev/null; done", file.display()),
        ],
    );
    active.hold(cgroup);
    active.spawn("anonymous memory in a 192 MiB cgroup", hog)?;
    active.spawn("rereading a 512 MiB file in it", reader)
}

pub fn oom_kill_loop(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A service that asks for more than its limit at every start, is OOM-killed, restarts.
    let cgroup = own_cgroup(OOM_LOOP)?;
    cgroup.set_memory_limit(64 << 20)?;
    let command = cgroup.command(
        "sh",
        &[
            "-c",
            "while :; do dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null; sleep 0.3; done",
        ],
    );
    active.hold(cgroup);
    active.spawn("OOM-killed restart loop in a 64 MiB cgroup", command)
}

pub fn crash_loop(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A service that segfaults at start, and its wrapper that exits with an error, restarted
    // at once, like a pod in CrashLoopBackOff's early fast retries.
    let cgroup = own_cgroup(CRASH_LOOP)?;
    let command = cgroup.command(
        "sh",
        &[
            "-c",
            "while :; do sh -c 'kill -SEGV $$'; sh -c 'exit 1'; sleep 0.1; done",
        ],
    );
    active.hold(cgroup);
    active.spawn("crash loop", command)
}

pub fn disk_throttling(lab: &mut Lab, _active: &mut Active) -> anyhow::Result<()> {
    // The EBS burst-credit cliff: the volume's IOPS drop to a baseline far below what the
    // workload asks for. Lifted when the fault stops (below).
    let device = lab.disk.device_number()?;
    lab.workload_cgroup.set_iops(&device, Some(20))
}

pub fn disk_throttling_stop(lab: &mut Lab) -> anyhow::Result<()> {
    let device = lab.disk.device_number()?;
    lab.workload_cgroup.set_iops(&device, None)
}

pub fn slow_disk(lab: &mut Lab, _active: &mut Active) -> anyhow::Result<()> {
    // The device under the workload's disk serves few requests a second: every request on
    // the disk the workload sees now takes long to complete (a dying or starved volume).
    // The loop driver issues the lower I/O on behalf of the workload's cgroup; cap both that
    // cgroup and the root one, whichever the kernel charges.
    let device = lab.lower_disk.device_number()?;
    lab.workload_cgroup.set_iops(&device, Some(15))?;
    root_blkio(&device, Some(15))
}

pub fn slow_disk_stop(lab: &mut Lab) -> anyhow::Result<()> {
    let device = lab.lower_disk.device_number()?;
    lab.workload_cgroup.set_iops(&device, None)?;
    root_blkio(&device, None)
}

fn root_blkio(device: &str, iops: Option<u32>) -> anyhow::Result<()> {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        // The v2 root has no io.max; the child cgroup's cap is what applies.
        return Ok(());
    }
    let n = iops.unwrap_or(0);
    for file in [
        "blkio.throttle.read_iops_device",
        "blkio.throttle.write_iops_device",
    ] {
        let path = Path::new("/sys/fs/cgroup/blkio").join(file);
        fs::write(&path, format!("{device} {n}"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

pub fn disk_errors(lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A thin-provisioned volume whose pool ran out: a 256 MiB device over a file on a 16 MiB
    // file system. Writes to blocks never written before fail with I/O errors.
    let pool = Tmpfs::mount(lab.dir.join("pool"), "16m")?;
    // The pool's other volumes already use nearly all of it.
    fs::write(pool.path.join("other-volumes.img"), vec![0u8; 15 << 20])?;
    let image = pool.path.join("volume.img");
    fs::File::create(&image)?.set_len(256 << 20)?;
    let volume = LoopDevice::attach(&image, false)?;
    let cgroup = own_cgroup(VOLUME_WRITER)?;
    let writer = worker_in(&cgroup, &["random-writes", &volume.path])?;
    active.hold(pool);
    active.hold(volume);
    active.hold(cgroup);
    active.spawn("a service writing to a volume whose pool is full", writer)
}

/// Runs `nft` on the host.
fn nft(script: &str) -> anyhow::Result<()> {
    crate::util::run(Command::new("nft").arg(script))
}

pub fn network_loss(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // 15% of the stream's packets lost on the wire, on arrival at the node's end (netem is
    // missing on this kernel). Not at the sender's output: TCP learns of a local drop at once
    // and backs off without retransmitting, which is not what a lossy link does. The table is
    // bound to the scenario's interface and goes with it.
    nft("add table netdev nodestate_scenario_loss")?;
    nft(&format!(
        "add chain netdev nodestate_scenario_loss in {{ type filter hook ingress device {HOST_IFACE} priority 0; }}"
    ))?;
    nft("add rule netdev nodestate_scenario_loss in numgen random mod 100 < 15 drop")?;
    active.on_stop(
        "packet loss",
        cmd("nft", &["delete table netdev nodestate_scenario_loss"]),
    );
    Ok(())
}

pub fn bandwidth_collapse(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // The link drops to 1 Mbit/s with a deep queue: the 20 Mbit/s stream backs up.
    Network::run(
        "tc",
        &[
            "qdisc", "add", "dev", PEER_IFACE, "root", "tbf", "rate", "1mbit", "burst", "16kb",
            "latency", "400ms",
        ],
    )?;
    active.on_stop(
        "bandwidth cap",
        Network::command("tc", &["qdisc", "del", "dev", PEER_IFACE, "root"]),
    );
    Ok(())
}

/// A UDP flood from the namespace to the host end, bounded in rate and time.
pub fn packet_flood(lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    let host_mac = fs::read_to_string(format!("/sys/class/net/{HOST_IFACE}/address"))?;
    let peer_mac = crate::util::output(&mut Network::command(
        "cat",
        &[&format!("/sys/class/net/{PEER_IFACE}/address")],
    ))
    .context("reading the namespace's MAC address")?;
    let conf = lab.dir.join("flood.trafgen");
    fs::write(
        &conf,
        format!(
            "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr={PEER_ADDR}, daddr={HOST_ADDR}, ttl=64), \
             udp(sp=4000, dp=9), fill(0x41, 18) }}\n",
            host_mac.trim(),
            peer_mac.trim()
        ),
    )?;
    let conf = conf.to_str().context("path")?.to_string();
    active.spawn(
        "trafgen flood",
        Network::command(
            "trafgen",
            &[
                "-q",
                "-Q",
                "-P",
                "1",
                "-o",
                PEER_IFACE,
                "-i",
                &conf,
                "-b",
                "200000pps",
                "-n",
                "20000000",
            ],
        ),
    )
}

pub fn fd_exhaustion(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A service leaking descriptors hits its limit, then retries: EMFILE on every open.
    let cgroup = own_cgroup(FD_LEAK)?;
    let worker = super::worker_exe()?;
    let command = cgroup.command(
        "prlimit",
        &[
            "--nofile=256:256",
            "--",
            worker.to_str().context("xtask path")?,
            "scenario-worker",
            "open-files",
        ],
    );
    active.hold(cgroup);
    active.spawn("descriptor exhaustion", command)
}

pub fn port_exhaustion(_lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // Few ephemeral ports in the namespace, and a client that opens and closes connections
    // fast: closed connections sit in TIME_WAIT holding their ports, connect() fails.
    Network::run(
        "sysctl",
        &["-q", "-w", "net.ipv4.ip_local_port_range=40000 40100"],
    )?;
    active.on_stop(
        "port range",
        Network::command(
            "sysctl",
            &["-q", "-w", "net.ipv4.ip_local_port_range=32768 60999"],
        ),
    );
    // The client is a workload of the node in a network namespace of its own, as a pod is:
    // its cgroup is the node's, its ports the namespace's.
    let cgroup = own_cgroup(CONNECTION_CHURN)?;
    let worker = super::worker_exe()?;
    let command = cgroup.command(
        "ip",
        &[
            "netns",
            "exec",
            NETNS,
            worker.to_str().context("xtask path")?,
            "scenario-worker",
            "connect-loop",
            &format!("{HOST_ADDR}:{LISTENER_PORT}"),
        ],
    );
    active.hold(cgroup);
    active.spawn("connection churn", command)
}

pub fn disk_full(lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A log volume that filled up: the writer keeps trying and gets ENOSPC.
    let volume = Tmpfs::mount(lab.dir.join("logs"), "8m")?;
    let cgroup = own_cgroup(LOG_WRITER)?;
    let command = worker_in(
        &cgroup,
        &["fill-disk", volume.path.to_str().context("path")?],
    )?;
    active.hold(volume);
    active.hold(cgroup);
    active.spawn("writer on a full file system", command)
}

pub fn noisy_neighbour(lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A bulk loader beside the service: large direct writes, four at once, uncapped, to a
    // file of its own on the file system that also holds the service's volume (the lab's
    // disk image): the service's requests queue behind the loader's on the disk they share.
    // Direct I/O is submitted by the loader's own tasks, so it is charged to its cgroup
    // (buffered writes would be written back by flusher threads, which cgroup v1 cannot
    // attribute); and not through a loop device, whose lower requests a kernel thread
    // resubmits, charged to the root cgroup. The file is allocated first (no data written),
    // so fio need not lay it out with buffered writes; its size bounds what the run writes.
    let file = lab.dir.join("bulk-load.bin");
    crate::util::run(Command::new("fallocate").args(["-l", "256M"]).arg(&file))?;
    let cgroup = own_cgroup(NOISY_WRITER)?;
    let command = cgroup.command(
        "fio",
        &[
            "--name=bulk-load",
            &format!("--filename={}", file.display()),
            "--size=256M",
            "--rw=randwrite",
            "--bs=128k",
            "--direct=1",
            "--ioengine=psync",
            "--numjobs=4",
            "--time_based",
            "--runtime=3600",
        ],
    );
    active.hold(cgroup);
    active.spawn("bulk loader writing beside the service's volume", command)
}

pub fn compile_burst(lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A deploy-time build: one compiler at a time, niced, as a build agent runs it.
    let source = lab.dir.join("unit.c");
    let mut text = String::new();
    for i in 0..600 {
        text.push_str(&format!(
            "int f{i}(int *a, int n) {{ int s = 0; for (int j = 0; j < n; j++) s += a[j] * {i} ^ (s >> 3); return s; }}\n"
        ));
    }
    fs::write(&source, text)?;
    let object = lab.dir.join("unit.o");
    active.spawn(
        "compile loop",
        cmd(
            "sh",
            &[
                "-c",
                &format!(
                    "while :; do nice -n 10 cc -O2 -c {} -o {}; done",
                    source.display(),
                    object.display()
                ),
            ],
        ),
    )
}

pub fn backup_read(lab: &mut Lab, active: &mut Active) -> anyhow::Result<()> {
    // A nightly backup: a sequential read of the whole disk at a polite, capped rate.
    active.spawn(
        "sequential backup read",
        cmd(
            "fio",
            &[
                "--name=backup",
                &format!("--filename={}", lab.disk.path),
                "--rw=read",
                "--bs=1M",
                "--direct=1",
                "--ioengine=psync",
                "--rate=40m",
                "--time_based",
                "--runtime=3600",
            ],
        ),
    )
}
