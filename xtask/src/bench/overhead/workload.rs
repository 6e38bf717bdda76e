//! The workloads `bench overhead` measures, each in a process of its own, and what they
//! report: the operations done in every slice of [`SLICE_MS`], or fio's IOPS log.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::fs::FileExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::bench::block::{fio_job, pinned};

/// How often a workload reports what it did.
pub(super) const SLICE_MS: u64 = 100;

/// The CPU-bound workloads, each run in a process of its own (`cargo xtask bench-workload`):
/// a workload shares no address space with the bench, whose threads (the collector's log
/// drain) would otherwise make the kernel interrupt the workload's CPU whenever they change
/// their memory mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadKind {
    /// getppid(2) in a loop: the raw syscall tracepoint's worst case.
    Getppid,
    /// 4 KiB pread(2)s of a page-cached file (`--file`): a syscall that does some work, as
    /// most do.
    Pread,
    /// Two threads passing a byte back and forth through pipes: every round trip is two
    /// context switches and two wake-ups.
    PingPong,
}

/// Runs a workload for at most `seconds`, printing one line per slice of [`SLICE_MS`]:
/// the slice's end (ms since the epoch), the operations done in it and its length in
/// seconds. Stops early, without error, when nobody reads its output any more.
pub fn run_workload(
    kind: WorkloadKind,
    file: Option<&std::path::Path>,
    seconds: Duration,
) -> anyhow::Result<()> {
    match kind {
        WorkloadKind::Getppid => report_slices(seconds, || {
            for _ in 0..1000 {
                // SAFETY: getppid has no preconditions.
                std::hint::black_box(unsafe { libc::getppid() });
            }
            Ok(1000)
        }),
        WorkloadKind::Pread => {
            let path = file.context("pread needs --file")?;
            let file =
                fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut buffer = vec![0u8; 4096];
            report_slices(seconds, || {
                for i in 0..100u64 {
                    file.read_at(&mut buffer, (i % 256) * 4096)?;
                }
                Ok(100)
            })
        }
        WorkloadKind::PingPong => {
            let (mut ping_rx, mut ping_tx) = std::io::pipe()?;
            let (mut pong_rx, mut pong_tx) = std::io::pipe()?;
            let echo = std::thread::spawn(move || {
                let mut byte = [0u8; 1];
                while ping_rx.read_exact(&mut byte).is_ok() {
                    if pong_tx.write_all(&byte).is_err() {
                        break;
                    }
                }
            });
            let mut byte = [0u8; 1];
            let result = report_slices(seconds, || {
                for _ in 0..100 {
                    ping_tx.write_all(&[1])?;
                    pong_rx.read_exact(&mut byte)?;
                }
                Ok(100)
            });
            drop(ping_tx);
            let _ = echo.join();
            result
        }
    }
}

/// Calls `batch` (which returns how many operations it did) for `seconds`, printing a
/// [`Slice`] line every [`SLICE_MS`].
fn report_slices(
    seconds: Duration,
    mut batch: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + seconds;
    let mut stdout = std::io::stdout().lock();
    let mut slice_start = Instant::now();
    let mut operations = 0u64;
    while slice_start < deadline {
        operations += batch()?;
        let elapsed = slice_start.elapsed();
        if elapsed >= Duration::from_millis(SLICE_MS) {
            let line = format!("{} {operations} {}", epoch_ms(), elapsed.as_secs_f64());
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // The bench is done with us.
                return Ok(());
            }
            slice_start = Instant::now();
            operations = 0;
        }
    }
    Ok(())
}

pub(super) fn epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

/// What a workload did in one slice of its run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Slice {
    /// When the slice ended, ms since the epoch.
    end_ms: f64,
    operations: f64,
    seconds: f64,
}

impl Slice {
    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace().map(str::parse::<f64>);
        Some(Self {
            end_ms: fields.next()?.ok()?,
            operations: fields.next()?.ok()?,
            seconds: fields.next()?.ok()?,
        })
    }

    fn start_ms(&self) -> f64 {
        self.end_ms - self.seconds * 1000.0
    }
}

/// Operations per second over the slices that lie wholly within `from`..`to` (ms since the
/// epoch); `None` if none does.
pub(super) fn rate_between(slices: &[Slice], from: f64, to: f64) -> Option<f64> {
    let (operations, seconds) = slices
        .iter()
        .filter(|slice| slice.start_ms() >= from && slice.end_ms <= to)
        .fold((0.0, 0.0), |(operations, seconds), slice| {
            (operations + slice.operations, seconds + slice.seconds)
        });
    (seconds > 0.0).then(|| operations / seconds)
}

/// fio's per-interval IOPS log (`--write_iops_log` with `--log_unix_epoch`): lines of
/// "time ms, IOPS, direction, …", reads and writes on lines of their own at the same time.
fn parse_fio_iops_log(text: &str, interval_ms: u64) -> Vec<Slice> {
    let mut by_time: BTreeMap<u64, f64> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split(',').map(str::trim);
        let (Some(Ok(time)), Some(Ok(iops))) = (
            fields.next().map(str::parse::<u64>),
            fields.next().map(str::parse::<f64>),
        ) else {
            continue;
        };
        *by_time.entry(time).or_default() += iops;
    }
    let seconds = interval_ms as f64 / 1000.0;
    by_time
        .into_iter()
        .map(|(time, iops)| Slice {
            end_ms: time as f64,
            operations: iops * seconds,
            seconds,
        })
        .collect()
}

/// A workload running for the whole of its measurement, pinned to the workload CPU.
/// Killed if dropped unfinished (an error in the bench).
pub(super) struct RunningWorkload {
    /// Both taken by `finish`.
    child: Option<Child>,
    output: Option<Output>,
}

enum Output {
    /// The workload's own slice lines, read as they come.
    Lines(std::thread::JoinHandle<Vec<Slice>>),
    /// fio's IOPS log, written when it stops.
    FioLog(std::path::PathBuf),
}

/// Longest a workload may run: the bench stops it long before; this only bounds an orphan.
const WORKLOAD_LIMIT_S: u64 = 3 * 3600;

impl RunningWorkload {
    pub(super) fn start(
        cpu: usize,
        kind: WorkloadKind,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let mut command = Command::new(exe);
        command
            .arg("bench-workload")
            .arg(
                clap::ValueEnum::to_possible_value(&kind)
                    .context("a workload's name")?
                    .get_name(),
            )
            .args(["--seconds", &WORKLOAD_LIMIT_S.to_string()])
            .stdout(Stdio::piped());
        if let Some(file) = file {
            command.arg("--file").arg(file);
        }
        let mut child = pinned(cpu, || command.spawn())?.context("starting the workload")?;
        let stdout = child.stdout.take().context("the workload's output")?;
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| Slice::parse(&line))
                .collect()
        });
        Ok(Self {
            child: Some(child),
            output: Some(Output::Lines(reader)),
        })
    }

    /// fio's direct random reads and writes on `device` (the job `bench block` runs),
    /// logging IOPS every slice.
    pub(super) fn start_fio(cpu: usize, device: &str) -> anyhow::Result<Self> {
        let prefix =
            std::env::temp_dir().join(format!("nodestate-overhead-fio-{}", std::process::id()));
        let mut command = fio_job("nodestate-overhead", device, WORKLOAD_LIMIT_S);
        command
            .args([
                &format!("--log_avg_msec={SLICE_MS}"),
                "--log_unix_epoch=1",
                "--per_job_logs=0",
            ])
            .arg(format!("--write_iops_log={}", prefix.display()))
            .stdout(Stdio::null());
        let child = pinned(cpu, || command.spawn())?.context("starting fio")?;
        // fio names the log after the prefix.
        let mut log = prefix.into_os_string();
        log.push("_iops.log");
        Ok(Self {
            child: Some(child),
            output: Some(Output::FioLog(log.into())),
        })
    }

    /// Stops the workload and returns its slices.
    pub(super) fn finish(mut self) -> anyhow::Result<Vec<Slice>> {
        let mut child = self.child.take().context("a workload finishes once")?;
        // SIGTERM, not SIGINT: a shell starts a background job with SIGINT ignored, and
        // its children inherit that. fio writes its log when terminated; ours just stop.
        // SAFETY: kill has no memory preconditions; the pid is our own child's, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = child.wait()?;
        let slices = match self.output.take().context("a workload finishes once")? {
            Output::Lines(reader) => reader
                .join()
                .map_err(|_| anyhow::anyhow!("the workload's reader panicked"))?,
            Output::FioLog(log) => {
                let text = fs::read_to_string(&log)
                    .with_context(|| format!("reading fio's log {} ({status})", log.display()))?;
                let _ = fs::remove_file(&log);
                parse_fio_iops_log(&text, SLICE_MS)
            }
        };
        if slices.is_empty() {
            bail!("the workload reported nothing ({status})");
        }
        Ok(slices)
    }
}

impl Drop for RunningWorkload {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(Output::FioLog(log)) = self.output.take() {
            let _ = fs::remove_file(log);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A slice of 0.1 s that ended at `end_ms` with `operations` done.
    pub(in crate::bench::overhead) fn slice(end_ms: f64, operations: f64) -> Slice {
        Slice {
            end_ms,
            operations,
            seconds: 0.1,
        }
    }

    #[test]
    fn a_stretch_counts_only_the_slices_wholly_inside_it() {
        let slices: Vec<Slice> = (1..=10)
            .map(|i| slice(f64::from(i) * 100.0, f64::from(i)))
            .collect();
        // 300..=600 holds the slices ending at 400, 500 and 600 (4 + 5 + 6 in 0.3 s); the one
        // ending at 300 began before.
        let rate = rate_between(&slices, 300.0, 600.0).expect("slices inside");
        assert!((rate - 50.0).abs() < 1e-9, "{rate}");
        assert_eq!(rate_between(&slices, 2000.0, 3000.0), None);
        assert_eq!(
            Slice::parse("1796218685255.5 1000 0.1"),
            Some(slice(1796218685255.5, 1000.0))
        );
        assert_eq!(Slice::parse("garbage"), None);
    }

    #[test]
    fn fio_log_lines_at_one_time_add_reads_and_writes() {
        let log = "1000, 700, 0, 0, 0\n1000, 300, 1, 0, 0\n1100, 800, 0, 0, 0\nbad line\n";
        assert_eq!(
            parse_fio_iops_log(log, 100),
            vec![slice(1000.0, 100.0), slice(1100.0, 80.0)]
        );
    }
}
