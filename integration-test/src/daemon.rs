//! `collector run` as the root tests start it: one builder for the options tests set (window,
//! listen address, model file, XDP interface in a test's namespace, descriptor limit, extra
//! flags), one handle that waits for start-up, stops it and shows its log in every failure.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use crate::{
    http::{free_port, get},
    netns::{VethPair, netns_path},
    process::Process,
    workspace_binary,
};

/// How long a daemon may take to say it is collecting: loading and attaching every program
/// takes a second or two here, much longer while other tests compile beside it.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopped daemon may take to exit (it detaches within 2 s; see exporter.rs).
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// Options of one `collector run`. Defaults: `--window 1s --listen 127.0.0.1:0`, no model
/// file, no XDP, the host's network namespace, `NO_COLOR=1` and no `NODESTATE_CONFIG`.
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    window: Option<String>,
    listen: String,
    model: Option<PathBuf>,
    /// `nsenter --net=PATH`: nsenter execs the collector, so the child's pid is the daemon's.
    netns: Option<String>,
    xdp: Option<(String, PathBuf)>,
    nofile: Option<u64>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    start_limit: Duration,
}

impl Default for DaemonBuilder {
    fn default() -> Self {
        Self {
            window: Some("1s".into()),
            listen: "127.0.0.1:0".into(),
            model: None,
            netns: None,
            xdp: None,
            nofile: None,
            args: Vec::new(),
            env: Vec::new(),
            start_limit: START_LIMIT,
        }
    }
}

impl DaemonBuilder {
    /// `--window WINDOW` (default 1s).
    pub fn window(mut self, window: &str) -> Self {
        self.window = Some(window.into());
        self
    }

    /// No `--window`: the configuration file's or the built-in default applies.
    pub fn no_window(mut self) -> Self {
        self.window = None;
        self
    }

    /// `--listen ADDRESS` (default 127.0.0.1:0, whose port [`Daemon::address`] reads from the
    /// log).
    pub fn listen(mut self, address: &str) -> Self {
        self.listen = address.into();
        self
    }

    /// `--listen 127.0.0.1:PORT` on a free port known before the daemon starts (for a
    /// Prometheus configuration written first).
    pub fn free_port(self) -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        self.listen(&address)
    }

    /// `--model PATH`.
    pub fn model(mut self, path: &Path) -> Self {
        self.model = Some(path.to_path_buf());
        self
    }

    /// In the receiver's namespace of `veth`, the drop list on its receiving end
    /// (`--xdp-iface`), pinned under `pins` (`--pin-dir`).
    pub fn xdp(mut self, veth: &VethPair, pins: &Path) -> Self {
        self.netns = Some(netns_path(&veth.receiver));
        self.xdp = Some((veth.rx.clone(), pins.to_path_buf()));
        self
    }

    /// Runs under `ulimit -n LIMIT`.
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self
    }

    /// One more argument after the builder's own.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments after the builder's own.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| arg.to_string()));
        self
    }

    /// An environment variable for the daemon (e.g. `NODE_NAME`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long [`DaemonBuilder::start`] waits for "collecting" (default 60 s).
    pub fn start_limit(mut self, limit: Duration) -> Self {
        self.start_limit = limit;
        self
    }

    /// The `collector run …` arguments, without nsenter or ulimit.
    fn run_args(&self) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        if let Some(window) = &self.window {
            args.extend(["--window".into(), window.clone()]);
        }
        args.extend(["--listen".into(), self.listen.clone()]);
        if let Some(model) = &self.model {
            args.extend(["--model".into(), utf8(model)]);
        }
        if let Some((iface, pins)) = &self.xdp {
            args.extend([
                "--xdp-iface".into(),
                iface.clone(),
                "--pin-dir".into(),
                utf8(pins),
            ]);
        }
        args.extend(self.args.iter().cloned());
        args
    }

    /// Starts it without waiting (for a start expected to fail, or a test that waits for
    /// something else).
    pub fn spawn(self) -> Daemon {
        let collector = workspace_binary("collector");
        let mut argv = Vec::new();
        if let Some(netns) = &self.netns {
            argv.extend(["nsenter".to_string(), format!("--net={netns}")]);
        }
        argv.push(utf8(&collector));
        argv.extend(self.run_args());
        let mut command = match self.nofile {
            // `exec` keeps the pid: the child is the daemon, not a shell waiting for it.
            Some(limit) => {
                let mut command = Command::new("/bin/sh");
                command
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$@\""))
                    .arg("sh")
                    .args(&argv);
                command
            }
            None => {
                let mut command = Command::new(&argv[0]);
                command.args(&argv[1..]);
                command
            }
        };
        command
            .env("NO_COLOR", "1")
            .env_remove("NODESTATE_CONFIG")
            .envs(self.env.iter().map(|(key, value)| (key, value)));
        let process = Process::spawn(command);
        Daemon {
            pid: process.child.id(),
            process: Mutex::new(process),
            listen: self.listen,
        }
    }

    /// Starts it and waits for its "collecting" line (logged once the programs are attached
    /// and the HTTP server is bound); panics with its log if it exits or takes longer than
    /// the start limit.
    pub fn start(self) -> Daemon {
        let limit = self.start_limit;
        let daemon = self.spawn();
        daemon.wait_for_log(limit, "collecting");
        daemon
    }
}

/// A running `collector run`, killed and reaped on drop.
pub struct Daemon {
    process: Mutex<Process>,
    pid: u32,
    listen: String,
}

impl Daemon {
    /// A builder with the defaults of [`DaemonBuilder`].
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    fn process(&self) -> MutexGuard<'_, Process> {
        self.process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything it logged so far (stderr).
    pub fn log(&self) -> String {
        self.process().log()
    }

    pub fn signal(&self, signal: i32) {
        self.process().signal(signal);
    }

    /// Its exit status, if it has exited (reaped here then).
    pub fn status(&self) -> Option<ExitStatus> {
        self.process()
            .child
            .try_wait()
            .expect("waiting on the daemon")
    }

    /// Whether it has exited.
    pub fn exited(&self) -> bool {
        self.status().is_some()
    }

    /// Waits up to `limit` for a line containing `text` in its log; that line. Panics with
    /// the log if it exits first or the limit passes.
    pub fn wait_for_log(&self, limit: Duration, text: &str) -> String {
        let found = wait_for_quietly(limit, || {
            let log = self.log();
            if let Some(line) = log.lines().find(|line| line.contains(text)) {
                return Some(Ok(line.to_string()));
            }
            self.status().map(Err)
        });
        match found {
            Some(Ok(line)) => line,
            Some(Err(status)) => panic!(
                "the daemon exited with {status} before logging `{text}`:\n{}",
                self.log()
            ),
            None => panic!(
                "the daemon did not log `{text}` within {limit:?}:\n{}",
                self.log()
            ),
        }
    }

    /// Waits up to `limit` for it to exit; its status.
    pub fn wait_status(&self, limit: Duration) -> ExitStatus {
        wait_for_quietly(limit, || self.status())
            .unwrap_or_else(|| panic!("the daemon did not exit within {limit:?}:\n{}", self.log()))
    }

    /// Waits up to `limit` for it to exit (whatever the status); its log.
    pub fn wait_exit(&self, limit: Duration) -> String {
        self.wait_status(limit);
        self.log()
    }

    /// SIGTERM, then its log once it exited; panics (with the log) unless it exited
    /// successfully.
    pub fn stop(self) -> String {
        self.signal(libc::SIGTERM);
        let status = self.wait_status(EXIT_LIMIT);
        let log = self.log();
        assert!(status.success(), "daemon exited with {status}:\n{log}");
        log
    }

    /// SIGTERM, then its log once it exited, whatever its exit status.
    pub fn terminate(self) -> String {
        self.signal(libc::SIGTERM);
        self.wait_exit(EXIT_LIMIT)
    }

    /// `kill -9`: no clean-up of any kind runs.
    pub fn kill9(self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(10));
    }

    /// The address its HTTP server listens on: the one given, or for port 0 the one it
    /// logged (`bound=`).
    pub fn address(&self) -> String {
        if !self.listen.ends_with(":0") {
            return self.listen.clone();
        }
        let line = self.wait_for_log(Duration::from_secs(20), "bound=");
        let at = line.find("bound=").expect("found above");
        line[at + "bound=".len()..]
            .split_whitespace()
            .next()
            .expect("an address after bound=")
            .trim_end_matches(',')
            .to_string()
    }

    /// Waits up to `limit` for `/readyz` to answer 200 (a baseline learned or a model file
    /// loaded and a window judged); its body. Panics with the log if it exits first. Only
    /// for a daemon in this test's network namespace.
    pub fn wait_ready(&self, limit: Duration) -> String {
        let address = self.address();
        let ready = wait_for_quietly(limit, || {
            if let Some(status) = self.status() {
                return Some(Err(status));
            }
            get(&address, "/readyz")
                .filter(|(status, _)| *status == 200)
                .map(|(_, body)| Ok(body))
        });
        match ready {
            Some(Ok(body)) => body,
            Some(Err(status)) => panic!(
                "the daemon exited with {status} before it was ready:\n{}",
                self.log()
            ),
            None => panic!(
                "/readyz did not answer 200 within {limit:?}:\n{}",
                self.log()
            ),
        }
    }

    /// User plus system CPU time it used so far, in clock ticks (/proc/PID/stat).
    pub fn cpu_ticks(&self) -> u64 {
        crate::xdp_daemon::cpu_ticks(self.pid)
    }
}

/// As [`crate::process::wait_for`], but `None` after `limit` instead of a panic, so the caller's message can
/// carry the daemon's log.
fn wait_for_quietly<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn utf8(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}
