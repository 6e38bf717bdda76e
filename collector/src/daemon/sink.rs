//! Where finished windows go besides the log: a JSON Lines file of whole lines only.

use std::{io::Write, path::PathBuf};

use anyhow::Context as _;

use crate::window::record::WindowRecord;

/// Where finished windows go besides the log.
pub enum WindowSink {
    None,
    JsonLines {
        path: PathBuf,
        file: std::fs::File,
        /// Bytes of whole lines written: the length the file is cut back to when a write
        /// fails half-way.
        whole_bytes: u64,
        lines: u64,
    },
}

/// Where windows should go; opened only once the programs are loaded, so a daemon that fails
/// to start leaves no empty file behind.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    LogOnly,
    JsonLines(PathBuf),
}

impl WindowSink {
    pub fn open(spec: &SinkSpec) -> anyhow::Result<Self> {
        match spec {
            SinkSpec::LogOnly => Ok(Self::None),
            SinkSpec::JsonLines(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Ok(Self::JsonLines {
                    path: path.clone(),
                    file,
                    whole_bytes: 0,
                    lines: 0,
                })
            }
        }
    }

    pub(super) fn write(&mut self, record: &WindowRecord) -> anyhow::Result<()> {
        if let Self::JsonLines {
            path,
            file,
            whole_bytes,
            lines,
        } = self
        {
            let mut line = serde_json::to_vec(record)?;
            line.push(b'\n');
            // One write per line and no buffering: a killed recorder leaves whole lines only.
            if let Err(err) = file.write_all(&line) {
                // A full file system (ENOSPC, EDQUOT) takes part of the line: cut the file back
                // to its last whole line, so whoever reads it never meets half a record.
                let cut = file.set_len(*whole_bytes).and_then(|()| {
                    std::io::Seek::seek(file, std::io::SeekFrom::Start(*whole_bytes))
                });
                let kept = match cut {
                    Ok(_) => format!("it keeps the {lines} whole window(s) written before"),
                    Err(cut) => format!(
                        "and cutting its partial last line failed too ({cut}): drop its last line"
                    ),
                };
                return Err(anyhow::Error::new(err)
                    .context(format!("writing {} failed; {kept}", path.display())));
            }
            *whole_bytes += line.len() as u64;
            *lines += 1;
        }
        Ok(())
    }
}
