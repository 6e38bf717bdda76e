//! Long-running programs a test starts (daemons, Prometheus, the scheduler extender): killed
//! and reaped on drop, their stderr kept in a file for failure messages.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A child process killed (and reaped) on drop, whose stderr goes to a file we can show.
pub struct Process {
    pub child: Child,
    log: tempfile::NamedTempFile,
}

impl Process {
    pub fn start(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(program);
        command.args(args).envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Spawns `command` with stdout discarded, stderr to the log and `RUST_BACKTRACE=0`.
    pub fn spawn(mut command: Command) -> Self {
        let log = tempfile::NamedTempFile::new().expect("a temporary log file");
        let child = command
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopening the log file"))
            .spawn()
            .unwrap_or_else(|err| panic!("starting {command:?}: {err}"));
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 250 ms until it returns Some, or panics after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Debian's Prometheus server (`cargo xtask setup` installs it).
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A real Prometheus scraping `targets` every second as job `nodestate`, storing under `dir`,
/// listening on `address`.
pub fn prometheus(targets: &[String], dir: &Path, address: &str) -> Process {
    prometheus_with_rules(targets, dir, address, &[])
}

/// [`prometheus`] that also evaluates the alerting rules in `rule_files`.
pub fn prometheus_with_rules(
    targets: &[String],
    dir: &Path,
    address: &str,
    rule_files: &[&Path],
) -> Process {
    let binary = Path::new(PROMETHEUS);
    assert!(
        binary.exists(),
        "Debian's prometheus package is missing: run `cargo xtask setup`"
    );
    let config = dir.join("prometheus.yml");
    let targets = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let rules = rule_files
        .iter()
        .map(|path| format!("'{}'", path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{rules}]\nscrape_configs:\n  - job_name: nodestate\n    static_configs:\n      - targets: [{targets}]\n"
        ),
    )
    .expect("writing prometheus.yml");
    Process::start(
        binary,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={address}"),
            "--log.level=warn",
        ],
        &[],
    )
}
