//! The daemon as shipped, beside the recorder: `collector run --model builtin` judges the same
//! node while a scenario runs, and its `/state` is read once per window. Its verdicts, culprits
//! and victims land in `NAME.culprits.jsonl.gz`, which `cargo xtask evaluate` grades ("culprit
//! named first"). Two sets of programs attached at once is fine: each has its own maps.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// How often `/state` is read: several times a window, so that every window is seen once
/// (a line is written only when the newest window changes).
const POLL_EVERY: Duration = Duration::from_millis(400);
/// How long the daemon may take to stop on SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// `collector run` and the thread reading its `/state`.
pub struct ShippedDaemon {
    child: Child,
    log: PathBuf,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<anyhow::Result<usize>>>,
    out: PathBuf,
}

/// A free loopback port: bound, read, released (the daemon binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl ShippedDaemon {
    /// Starts `collector run --model builtin` with the scenarios' window; its log goes to
    /// `dir/daemon.log`, its windows to `dir/culprits.jsonl`.
    pub fn start(collector: &Path, dir: &Path, window_s: u64) -> anyhow::Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let log = dir.join("daemon.log");
        let out = dir.join("culprits.jsonl");
        let child = Command::new(collector)
            .args(["run", "--model", "builtin", "--window"])
            .arg(format!("{window_s}s"))
            .arg("--listen")
            .arg(addr.to_string())
            // No Kubernetes here: the lab's cgroups are named by their paths.
            .args(["--kube-api", "off"])
            .env("NODE_NAME", "scenario-node")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting collector run")?;
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (stop, out) = (stop.clone(), out.clone());
            std::thread::spawn(move || poll(addr, &out, &stop))
        };
        Ok(Self {
            child,
            log,
            stop,
            poller: Some(poller),
            out,
        })
    }

    /// Stops reading and the daemon; copies the windows to `dest`. Fails when the daemon
    /// died during the run or no window was read.
    pub fn finish(mut self, dest: &Path) -> anyhow::Result<usize> {
        self.stop.store(true, Ordering::Relaxed);
        let lines = match self.poller.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            Some(Err(_)) => bail!("the thread reading the daemon's /state panicked"),
            None => 0,
        };
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "collector run exited during the scenario ({status}):\n{}",
                self.log_tail()
            );
        }
        self.terminate();
        if lines == 0 {
            bail!(
                "collector run's /state gave no window during the scenario:\n{}",
                self.log_tail()
            );
        }
        // Compressed like the windows: datasets stay small.
        let windows =
            fs::read(&self.out).with_context(|| format!("reading {}", self.out.display()))?;
        crate::util::write_gz(dest, &windows)?;
        Ok(lines)
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on the child we started and have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let asked = Instant::now();
        while asked.elapsed() < STOP_WAIT {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("scenario: collector run did not stop on SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ShippedDaemon {
    /// A scenario that failed half-way stops the daemon too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        self.terminate();
    }
}

/// Reads `/state` until `stop`, writing one line per new window; returns the lines written.
fn poll(addr: SocketAddr, out: &Path, stop: &AtomicBool) -> anyhow::Result<usize> {
    let mut file = fs::File::create(out)?;
    let mut last_window = None;
    let mut lines = 0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL_EVERY);
        // Refused while the daemon starts, or a slow answer under a fault: the next poll
        // will do; a window missed shows as a gap in the file's times.
        let Ok(state) = get_state(addr) else {
            continue;
        };
        let Some(line) = summary(&state) else {
            continue;
        };
        let window = line["unix_ms"].as_u64();
        if window == last_window {
            continue;
        }
        last_window = window;
        writeln!(file, "{line}")?;
        lines += 1;
    }
    Ok(lines)
}

/// `GET /state` over HTTP/1.0 (the answer is then the whole body, no chunks).
fn get_state(addr: SocketAddr) -> anyhow::Result<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /state HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.lines().next().is_some_and(|l| l.contains(" 200")) {
        bail!("/state answered {:?}", head.lines().next());
    }
    Ok(serde_json::from_str(body)?)
}

/// The small part of a `/state` answer a scenario keeps: the newest window's end, the
/// verdict (its fields are at the answer's top level), the top features, the culprits and
/// victims (`None` before the first window).
fn summary(state: &Value) -> Option<Value> {
    let window = state["windows"].as_array()?.last()?;
    let health = state;
    let named = |list: &Value| -> Vec<Value> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|blame| {
                json!({
                    "name": blame["name"],
                    "signal": blame["signal"],
                    "share": blame["share"],
                    "rate": blame["rate"],
                    "baseline": blame["baseline"],
                })
            })
            .collect()
    };
    let explanation: Vec<Value> = health["explanation"]
        .as_array()
        .into_iter()
        .flatten()
        .take(3)
        .cloned()
        .collect();
    Some(json!({
        "unix_ms": window["unix_ms"].as_u64()?,
        "window_s": window["window_s"],
        "state": health["state"],
        "score": health["score"],
        "threshold": health["threshold"],
        "explanation": explanation,
        "culprits": named(&state["culprits"]),
        "victims": named(&state["victims"]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_answer_is_cut_to_the_window_its_verdict_and_its_culprits() {
        let state = json!({
            "node": "n",
            "state": "degraded", "score": 9.5, "threshold": 3.0,
            "explanation": [["a", 9.0], ["b", 5.0], ["c", 4.0], ["d", 1.0]],
            "culprits": [{"namespace": "", "pod": "", "container": "/job", "name": "/job",
                          "signal": "errors", "share": 0.9, "rate": 100.0, "baseline": 0.0}],
            "victims": [],
            "windows": [{"unix_ms": 1000, "window_s": 2.0}, {"unix_ms": 3000, "window_s": 2.0}],
        });
        let line = summary(&state).expect("a window");
        assert_eq!(line["unix_ms"], 3000);
        assert_eq!(line["state"], "degraded");
        assert_eq!(line["explanation"].as_array().map(Vec::len), Some(3));
        assert_eq!(line["culprits"][0]["name"], "/job");
        assert_eq!(line["culprits"][0]["share"], 0.9);
        assert_eq!(line["victims"], json!([]));
        // Before the daemon's first window there is nothing to keep.
        assert_eq!(summary(&json!({"windows": [], "state": "learning"})), None);
    }
}
