//! `cargo xtask soak`: the daemon with its learned baseline on this machine for a set time,
//! while benign work changes under it (a configure script's probes and a compile loop, package
//! building and unpacking, a backup-like copy, a burst of loopback connections, idle
//! stretches). Every degraded episode is a false one here: the report gives their rate per
//! hour, a Poisson 95% upper bound on it, and what each episode's explanation was.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    episodes::{Episode, Episodes},
    util::{release_binary, workspace_root},
};

/// What `cargo xtask soak` is asked for.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub duration: Duration,
    pub window: Duration,
    pub learn_for: Duration,
    /// Where the JSON report goes (besides the summary on stdout).
    pub out: Option<PathBuf>,
    /// Where every window record the daemon made goes, as JSON Lines with the soak's phase
    /// (`soak_phase`), learning included: `cargo xtask soak-replay` judges them again.
    pub windows: Option<PathBuf>,
    /// Start the daemon from this saved baseline (`collector run --baseline-state`), as a
    /// node's daemon restarts after its first day, instead of learning afresh. The daemon
    /// works on a copy: the file is left as it was, for the replay to start from.
    pub baseline_state: Option<PathBuf>,
    /// After the replay, write the state its baseline ended with here (the next soak's
    /// `baseline_state`).
    pub save_state: Option<PathBuf>,
}

/// The benign work of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Idle,
    /// A configure script's probes (100 header checks, as autoconf's: half fail, each a brief
    /// command exiting non-zero), then `rustc -O` of a generated crate, again and again.
    Build,
    /// Building a .deb of 140 MB of documentation (xz), unpacking it, `dpkg --verify`.
    Package,
    /// A 300 MB file set: `tar | gzip`, a copy, `sync`, removal.
    Backup,
    /// Loopback TCP connections opened and closed, four clients.
    Connections,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::Idle => "idle",
            Work::Build => "build",
            Work::Package => "package",
            Work::Backup => "backup",
            Work::Connections => "connections",
        }
    }
}

/// One cycle of phases (30 minutes at full length; shorter soaks scale it down).
const CYCLE: &[(Work, u64)] = &[
    (Work::Idle, 5),
    (Work::Build, 6),
    (Work::Idle, 3),
    (Work::Package, 4),
    (Work::Backup, 4),
    (Work::Connections, 3),
    (Work::Idle, 5),
];

/// A running workload, stopped on drop.
struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs `command` to its end unless `stop` is set first (then it is killed), in a process group
/// of its own that goes with it: killing a `sh -c` leaves its children running, and soak 4's
/// "backup" episodes were the package phase's `dpkg-deb` (xz on both CPUs) outliving its phase
/// by 10-20 s under the backup's `gzip`: two phases at once, which the cycle does not mean.
fn run_until(mut command: Command, stop: &AtomicBool) {
    use std::os::unix::process::CommandExt as _;
    let Ok(mut child) = command
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let group = child.id() as libc::pid_t;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Also after a normal end: anything the script left in the background goes too.
    // SAFETY: kill(2) on a negative pid signals that process group; it only reads its arguments.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
}

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

fn start(work: Work, dir: &Path) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let dir = dir.to_path_buf();
    match work {
        Work::Idle => {}
        Work::Build => {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let source = dir.join("build.rs");
                let mut text = String::new();
                for i in 0..400 {
                    text.push_str(&format!(
                        "pub fn f{i}<T: Copy + Into<u64>>(x: &[T]) -> u64 {{ \
                         x.iter().map(|v| (*v).into().wrapping_mul({i})).sum() }}\n\
                         pub fn g{i}(x: &[u32]) -> u64 {{ f{i}(x) }}\n"
                    ));
                }
                if std::fs::write(&source, text).is_err() {
                    return;
                }
                // A burst of a few hundred non-zero exits in two seconds, as a configure
                // script makes: a young baseline paged on one (z = +7.3, soak 6).
                let d = dir.display();
                let configure = format!(
                    "cd {d} && for i in $(seq 1 50); do for h in stdio.h nodestate_absent_$i.h; \
                     do printf '#include <%s>\\nint main(void) {{ return 0; }}\\n' $h > probe.c \
                     && cc -c probe.c -o probe.o 2>/dev/null; done; done; rm -f probe.c probe.o"
                );
                while !stop.load(Ordering::Relaxed) {
                    run_until(sh(&configure), &stop);
                    let mut rustc = Command::new("rustc");
                    rustc
                        .args(["--crate-type", "lib", "-O", "-C", "codegen-units=2", "-o"])
                        .arg(dir.join("libbuild.rlib"))
                        .arg(&source);
                    run_until(rustc, &stop);
                }
            }));
        }
        Work::Package => {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let d = dir.display();
                let script = format!(
                    "rm -rf {d}/pkg {d}/unpacked {d}/pkg.deb && mkdir -p {d}/pkg/DEBIAN \
                     {d}/pkg/usr/share && cp -r /usr/share/doc {d}/pkg/usr/share/ && \
                     printf 'Package: soak\\nVersion: 1\\nArchitecture: all\\nMaintainer: x \
                     <x@example.com>\\nDescription: soak\\n' > {d}/pkg/DEBIAN/control && \
                     dpkg-deb -Zxz --build {d}/pkg {d}/pkg.deb && dpkg-deb -x {d}/pkg.deb \
                     {d}/unpacked && (dpkg --verify coreutils dpkg apt || true) && \
                     rm -rf {d}/pkg {d}/unpacked {d}/pkg.deb"
                );
                while !stop.load(Ordering::Relaxed) {
                    run_until(sh(&script), &stop);
                }
            }));
        }
        Work::Backup => {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let d = dir.display();
                let make = format!(
                    "mkdir -p {d}/data && for i in $(seq 1 30); do \
                     head -c 10M /dev/urandom > {d}/data/f$i; done"
                );
                run_until(sh(&make), &stop);
                let copy = format!(
                    "tar cf - -C {d} data | gzip -1 > {d}/backup.tgz && cp -r {d}/data \
                     {d}/copy && sync && rm -rf {d}/copy {d}/backup.tgz"
                );
                while !stop.load(Ordering::Relaxed) {
                    run_until(sh(&copy), &stop);
                }
                let _ = std::fs::remove_dir_all(dir.join("data"));
            }));
        }
        Work::Connections => {
            let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
                return Running { stop, threads };
            };
            let _ = listener.set_nonblocking(true);
            let address = listener
                .local_addr()
                .expect("a bound listener has an address");
            {
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((mut stream, _)) => {
                                let _ = stream.write_all(b"ok");
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(1)),
                        }
                    }
                }));
            }
            for _ in 0..4 {
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || {
                    // At most 500 connections a second per client: a busy service's, bounded.
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        if let Ok(mut stream) = TcpStream::connect(address) {
                            let mut buffer = [0u8; 2];
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                            let _ = stream.read(&mut buffer);
                        }
                        if let Some(rest) = Duration::from_millis(2).checked_sub(started.elapsed())
                        {
                            std::thread::sleep(rest);
                        }
                    }
                }));
            }
        }
    }
    Running { stop, threads }
}

fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .is_some_and(|status| status == "200")
        .then(|| body.to_string())
}

/// The short form `cargo xtask test` runs: four minutes of 1 s windows, learning for 30 s, then
/// one cycle of the benign work scaled to fit; then the windows it kept are judged again and
/// every verdict of the daemon must be reproduced (`soak-replay --check`), so the figures a
/// replay gives are the daemon's. Its episode rate is printed, not asserted: minutes on a
/// shared CI machine say nothing of a rate per day.
pub fn ci_check() -> anyhow::Result<()> {
    crate::build::build_release()?;
    let target = workspace_root().join("target");
    let windows = target.join("ci-soak-windows.jsonl");
    let (window, learn_for) = (Duration::from_secs(1), Duration::from_secs(30));
    soak_then_replay(&SoakOptions {
        duration: Duration::from_secs(240),
        window,
        learn_for,
        out: Some(target.join("ci-soak-report.json")),
        windows: Some(windows),
        baseline_state: None,
        save_state: None,
    })
}

/// [`soak`], then its windows judged again by this tree's learner (every verdict must be
/// reproduced) and the recorded faults carried onto them (`soak-replay --check --faults`):
/// a soak shows the baseline pages on nothing benign; whether it still pages on a fault is
/// the other half.
pub fn soak_then_replay(options: &SoakOptions) -> anyhow::Result<()> {
    soak(options)?;
    crate::soak_replay::soak_replay(&crate::soak_replay::ReplayOptions {
        file: windows_path(options),
        check: true,
        window: options.window,
        learn_for: options.learn_for,
        refresh_every: Duration::from_secs(30 * 60),
        faults: true,
        clusters: None,
        choose_k_up_to: None,
        restart_at: None,
        restart_keeps_state: false,
        start_state: options.baseline_state.clone(),
        save_state: options.save_state.clone(),
    })
}

/// Where the soak writes its windows.
fn windows_path(options: &SoakOptions) -> std::path::PathBuf {
    options
        .windows
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/soak-windows.jsonl"))
}

pub fn soak(options: &SoakOptions) -> anyhow::Result<()> {
    if options.duration <= options.learn_for {
        bail!("--duration must be longer than --learn-for");
    }
    let collector = release_binary("collector");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir()?;
    let log = std::fs::File::create(dir.path().join("daemon.log"))?;
    let window = humantime::format_duration(options.window).to_string();
    let learn_for = humantime::format_duration(options.learn_for).to_string();
    let mut command = Command::new(&collector);
    command.args(["run", "--window", &window, "--learn-for", &learn_for]);
    if let Some(state) = &options.baseline_state {
        let copy = dir.path().join("baseline-state.json");
        std::fs::copy(state, &copy).with_context(|| format!("copying {}", state.display()))?;
        command.arg("--baseline-state").arg(copy);
    }
    let mut daemon: Child = command
        .args(["--listen", &address])
        .env_remove("NODESTATE_CONFIG")
        .env_remove("NODESTATE_MODEL")
        .env_remove("NODESTATE_BASELINE_FIELDS")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", collector.display()))?;
    let started = Instant::now();
    let result = watch(options, &address, dir.path(), started);
    let _ = daemon.kill();
    let _ = daemon.wait();
    if result.is_err() {
        let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!(
            "the daemon's last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    result
}

fn watch(options: &SoakOptions, address: &str, dir: &Path, started: Instant) -> anyhow::Result<()> {
    // The phases after learning, scaled so at least one whole cycle fits.
    let judged = options.duration - options.learn_for;
    let cycle_minutes: u64 = CYCLE.iter().map(|(_, m)| m).sum();
    let scale = (judged.as_secs_f64() / (cycle_minutes as f64 * 60.0)).min(1.0);
    let phases: Vec<(Work, Duration)> = CYCLE
        .iter()
        .map(|&(work, minutes)| (work, Duration::from_secs_f64(minutes as f64 * 60.0 * scale)))
        .collect();
    let mut phase_index = 0usize;
    let mut phase_ends = started + options.learn_for + phases[0].1;
    let mut current = Work::Idle;
    let mut running: Option<Running> = None;
    let mut phase_seconds: std::collections::BTreeMap<&str, f64> = Default::default();
    let mut last_window: Option<u64> = None;
    let windows_path = windows_path(options);
    let mut windows_file = std::io::BufWriter::new(
        std::fs::File::create(&windows_path)
            .with_context(|| format!("creating {}", windows_path.display()))?,
    );
    let mut windows_judged = 0usize;
    let mut windows_anomalous = 0usize;
    let mut episodes = Episodes::default();
    let mut judging_since: Option<Instant> = None;
    let mut last_state = serde_json::Value::Null;
    let mut baseline_at_start: Option<serde_json::Value> = None;
    let polls = AtomicU64::new(0);
    let deadline = started + options.duration;
    // A restored baseline judges from its first window: the idle start is judged, not learnt.
    let learning = match &options.baseline_state {
        Some(state) => format!(
            "going on from {}, idle for {}",
            state.display(),
            humantime::format_duration(options.learn_for)
        ),
        None => format!("learning {}", humantime::format_duration(options.learn_for)),
    };
    println!(
        "soak: {} with a learned baseline ({} windows, {learning}), then cycles of {}",
        humantime::format_duration(options.duration),
        humantime::format_duration(options.window),
        phases
            .iter()
            .map(|(w, d)| format!("{} {}s", w.name(), d.as_secs()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    while Instant::now() < deadline {
        // The schedule: learning is idle, then the cycle again and again.
        if judging_since.is_some() || started.elapsed() >= options.learn_for {
            if Instant::now() >= phase_ends {
                phase_index = (phase_index + 1) % phases.len();
                phase_ends += phases[phase_index].1;
            }
            let work = phases[phase_index].0;
            if work != current || running.is_none() && work != Work::Idle {
                // The old work stops before the new one starts.
                drop(running.take());
                running = Some(start(work, dir));
                current = work;
                println!(
                    "  {:>6.0}s phase {}",
                    started.elapsed().as_secs_f64(),
                    work.name()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        polls.fetch_add(1, Ordering::Relaxed);
        let Some(body) = http_get(address, "/state") else {
            if started.elapsed() > Duration::from_secs(60) && judging_since.is_none() {
                bail!("the daemon at {address} does not answer /state after a minute");
            }
            continue;
        };
        let state: serde_json::Value = serde_json::from_str(&body).context("/state is JSON")?;
        // A soak asked to go on from a saved baseline that learns afresh instead would report
        // a young baseline's hours as a grown one's. (`model` is there from the first window.)
        let model = &state["model"];
        if !model.is_null() {
            baseline_at_start.get_or_insert_with(|| model["baseline"].clone());
            let saved = &model["saved_baseline"];
            if options.baseline_state.is_some()
                && saved["restored"] != serde_json::Value::Bool(true)
            {
                bail!(
                    "the daemon did not go on from --baseline-state: {}",
                    saved["refused"]
                        .as_str()
                        .unwrap_or("/state does not say it was restored")
                );
            }
        }
        let Some(unix_ms) = state["windows"]
            .as_array()
            .and_then(|w| w.last())
            .and_then(|w| w["unix_ms"].as_u64())
        else {
            continue;
        };
        if last_window == Some(unix_ms) {
            continue;
        }
        // Every window not written yet (/state holds the last minute's): a poll that came
        // late loses none. The last one carries the daemon's verdict on it (the window and
        // the verdict change under one lock), which `soak-replay` checks it reproduces.
        for window in state["windows"].as_array().into_iter().flatten() {
            let at = window["unix_ms"].as_u64();
            if at.is_some_and(|at| last_window.is_none_or(|last| at > last)) {
                let mut window = window.clone();
                window["soak_phase"] = serde_json::Value::from(current.name());
                if at == Some(unix_ms) {
                    window["soak_verdict"] = serde_json::json!({
                        "state": state["state"],
                        "score": state["score"],
                        "threshold": state["threshold"],
                    });
                }
                writeln!(windows_file, "{window}")?;
            }
        }
        windows_file.flush()?;
        last_window = Some(unix_ms);
        let health = state["state"].as_str().unwrap_or_default().to_string();
        if health == "learning" {
            continue;
        }
        judging_since.get_or_insert_with(Instant::now);
        windows_judged += 1;
        *phase_seconds.entry(current.name()).or_default() += options.window.as_secs_f64();
        let score = state["score"].as_f64().unwrap_or(0.0);
        let threshold = state["threshold"].as_f64().unwrap_or(0.0);
        if score > threshold {
            windows_anomalous += 1;
        }
        let explanation: Vec<(String, f64)> = state["explanation"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| Some((pair[0].as_str()?.to_string(), pair[1].as_f64()?)))
            .collect();
        let opened = episodes.update(health == "degraded", || Episode {
            started_s: started.elapsed().as_secs_f64(),
            windows: 1,
            phase: current.name().to_string(),
            explanation,
            score,
            threshold,
        });
        if let Some(episode) = opened {
            println!(
                "  {:>6.0}s DEGRADED during {}: score {score:.2} > {threshold:.2}, {:?}",
                episode.started_s, episode.phase, episode.explanation
            );
        }
        last_state = state;
    }
    let episodes = episodes.finish();
    drop(running);
    let judged_hours = judging_since.map_or(0.0, |since| since.elapsed().as_secs_f64() / 3600.0);
    let rate = episodes.len() as f64 / judged_hours.max(1e-9);
    let upper = crate::rate::poisson_upper_95(episodes.len(), judged_hours);
    let baseline = last_state["model"]["baseline"].clone();
    let report = serde_json::json!({
        "duration_s": options.duration.as_secs_f64(),
        "window_s": options.window.as_secs_f64(),
        "learn_for_s": options.learn_for.as_secs_f64(),
        "judged_hours": judged_hours,
        "windows_judged": windows_judged,
        "windows_anomalous": windows_anomalous,
        "seconds_by_phase": phase_seconds,
        "episodes": episodes.iter().map(|e| serde_json::json!({
            "started_s": e.started_s,
            "windows": e.windows,
            "phase": e.phase,
            "score": e.score,
            "threshold": e.threshold,
            "explanation": e.explanation,
        })).collect::<Vec<_>>(),
        "episodes_per_hour": rate,
        "episodes_per_hour_upper_95": upper,
        "episodes_per_day_upper_95": upper * 24.0,
        "baseline": baseline,
        "restored_from_state": options.baseline_state.is_some(),
        "baseline_at_start": baseline_at_start,
    });
    println!(
        "soak: {} degraded episode(s) in {judged_hours:.2} judged hours ({windows_judged} \
         windows, {windows_anomalous} over the threshold before hysteresis): {rate:.2}/hour, \
         95% upper bound {upper:.2}/hour ({:.1}/day). A run of this length can show a rate \
         of one per day only if it runs {:.0} hours without an episode.",
        episodes.len(),
        upper * 24.0,
        crate::rate::poisson_upper_95(0, 1.0) * 24.0,
    );
    println!("soak: baseline at the end: {baseline}");
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/soak-report.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("soak: report in {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether process `pid` is still running (a zombie left for init to reap is not).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // The state follows the command name's closing parenthesis.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
    }

    #[test]
    fn a_stopped_phase_leaves_no_process_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // The shell's child, like `dpkg-deb` under the package phase's script.
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(500));
                stop.store(true, Ordering::Relaxed);
            })
        };
        let started = Instant::now();
        run_until(sh(&script), &stop);
        stopper.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the phase was not stopped"
        );
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("the script wrote its child's pid")
            .trim()
            .parse()
            .unwrap();
        // SIGKILL is delivered before kill(2) returns, but the process may take a moment to go.
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = running(pid);
        if alive {
            // SAFETY: as in run_until; the test cleans up what it started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        assert!(
            !alive,
            "the script's child {pid} outlived its stopped phase"
        );
    }
}
