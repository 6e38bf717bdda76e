//! Files the daemon reads every window, kept open and re-read in place, and what it does when
//! a read fails.
//!
//! Opening `/proc/stat` each window needs a free descriptor: a daemon whose descriptors are
//! used up (by idle HTTP clients, say) would read nothing. A file kept open is re-read with
//! `pread` at offset 0 (procfs and sysfs regenerate the text on each read from 0), so a
//! descriptor shortage cannot reach it. A failed read is re-tried once on a fresh descriptor
//! and otherwise reported: a missing value, never a zero.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

/// A file kept open and re-read from its start on each [`ProcFile::read`].
#[derive(Debug)]
pub struct ProcFile {
    source: &'static str,
    path: PathBuf,
    file: Option<File>,
    buffer: Vec<u8>,
    /// Times the file was opened again after a failed read.
    reopens: u64,
}

impl ProcFile {
    /// Opens `path` now if it can; a file that cannot be opened yet is tried again on read.
    /// `source` names it in logs and metrics (see [`source`]).
    pub fn new(source: &'static str, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let file = File::open(&path).ok();
        Self {
            source,
            path,
            file,
            buffer: Vec::with_capacity(4096),
            reopens: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Times the file had to be opened again after a read failed on the open descriptor.
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    /// The file's whole text, read from offset 0 on the kept descriptor. On an error the
    /// descriptor is dropped and the file opened and read once more.
    pub fn read(&mut self) -> io::Result<&str> {
        if let Some(file) = &self.file {
            match read_whole(file, &mut self.buffer) {
                Ok(()) => return self.text(),
                Err(_) => {
                    self.file = None;
                    self.reopens += 1;
                }
            }
        }
        let file = File::open(&self.path)?;
        let read = read_whole(&file, &mut self.buffer);
        self.file = Some(file);
        read?;
        self.text()
    }

    /// [`ProcFile::read`], with the outcome (and any re-open) noted in `errors`: `None` is a
    /// missing value.
    pub fn read_noted(&mut self, errors: &mut ReadErrors) -> Option<&str> {
        let reopens = self.reopens;
        let result = self.read().map(|_| ());
        errors.reopened(self.source, self.reopens.saturating_sub(reopens));
        errors.note(self.source, &self.path, &result);
        result.ok()?;
        self.text().ok()
    }

    fn text(&self) -> io::Result<&str> {
        std::str::from_utf8(&self.buffer)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
    }
}

/// Reads `file` from offset 0 to its end into `buffer` with `pread`, leaving the file's own
/// offset alone.
fn read_whole(file: &File, buffer: &mut Vec<u8>) -> io::Result<()> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read_at(&mut chunk, buffer.len() as u64) {
            Ok(0) => return Ok(()),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Where a value the daemon reads comes from: the `source` label of
/// `nodestate_read_errors_total`.
pub mod source {
    pub const PROC_STAT: &str = "proc_stat";
    pub const PROC_VMSTAT: &str = "proc_vmstat";
    pub const PSI: &str = "psi";
    pub const CGROUP_CPU_STAT: &str = "cgroup_cpu_stat";
    pub const CONNTRACK: &str = "conntrack";
    pub const SYSFS_BLOCK: &str = "sysfs_block";
}

/// Failed reads by source, cumulative, and which sources are failing now: a source's first
/// failure is logged once (a warning), its recovery once (info), never every window.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadErrors {
    pub total: BTreeMap<&'static str, u64>,
    /// Kept files opened again after a read on their descriptor failed, by source.
    pub reopens: BTreeMap<&'static str, u64>,
    failing: BTreeMap<&'static str, bool>,
}

impl ReadErrors {
    /// Records the outcome of one read of `source`.
    pub fn note<T>(&mut self, source: &'static str, path: &Path, result: &io::Result<T>) {
        match result {
            Ok(_) => self.ok(source),
            Err(err) => self.failed(source, path, err),
        }
    }

    /// One failed read of `source`: counted; logged when the source was fine before.
    pub fn failed(&mut self, source: &'static str, path: &Path, err: &dyn std::fmt::Display) {
        *self.total.entry(source).or_default() += 1;
        let failing = self.failing.entry(source).or_default();
        if !*failing {
            *failing = true;
            tracing::warn!(
                source,
                path = %path.display(),
                "read failed: {err}; its features are missing from windows until it reads again \
                 (counted in nodestate_read_errors_total)"
            );
        }
    }

    /// `count` re-opens of a kept file of `source`.
    pub fn reopened(&mut self, source: &'static str, count: u64) {
        if count > 0 {
            *self.reopens.entry(source).or_default() += count;
        }
    }

    /// One good read of `source`.
    pub fn ok(&mut self, source: &'static str) {
        if let Some(failing) = self.failing.get_mut(source)
            && *failing
        {
            *failing = false;
            tracing::info!(source, "reads again");
        }
    }

    /// Whether the last read of `source` failed.
    pub fn is_failing(&self, source: &str) -> bool {
        self.failing.get(source).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_is_reread_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        std::fs::write(&path, "ctxt 10\n").unwrap();
        let mut file = ProcFile::new(source::PROC_STAT, &path);
        assert_eq!(file.read().unwrap(), "ctxt 10\n");
        // Rewritten in place (same inode), as the kernel regenerates a proc file.
        std::fs::write(&path, "ctxt 2000\n").unwrap();
        assert_eq!(file.read().unwrap(), "ctxt 2000\n");
        assert_eq!(file.reopens(), 0);
    }

    #[test]
    fn a_failed_read_reopens_and_reports_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu");
        // A directory opens but cannot be read: a read that fails on an open descriptor.
        std::fs::create_dir(&path).unwrap();
        let mut file = ProcFile::new(source::PROC_STAT, &path);
        assert!(file.read().is_err());
        assert_eq!(file.reopens(), 1);
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, "some total=5\n").unwrap();
        assert_eq!(file.read().unwrap(), "some total=5\n");
        assert_eq!(file.reopens(), 2);
    }

    #[test]
    fn errors_are_counted_every_time_and_a_source_fails_once_until_it_recovers() {
        let mut errors = ReadErrors::default();
        let path = Path::new("/proc/stat");
        let failed: io::Result<()> = Err(io::Error::from_raw_os_error(libc::EMFILE));
        errors.note(source::PROC_STAT, path, &failed);
        errors.note(source::PROC_STAT, path, &failed);
        assert!(errors.is_failing(source::PROC_STAT));
        errors.note(source::PROC_STAT, path, &Ok(()));
        assert!(!errors.is_failing(source::PROC_STAT));
        assert!(!errors.is_failing(source::PSI));
        // A kept file that failed, through `read_noted`: counted, and its re-open too.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cpu")).unwrap();
        let mut file = ProcFile::new(source::PSI, dir.path().join("cpu"));
        assert_eq!(file.read_noted(&mut errors), None);
        assert_eq!(errors.total[source::PSI], 1);
        assert_eq!(errors.reopens[source::PSI], 1);
        assert_eq!(errors.total[source::PROC_STAT], 2);
        assert!(errors.is_failing(source::PSI));
    }
}
