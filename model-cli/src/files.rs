//! What the commands write: never over their own inputs, and whole or not at all.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;

use crate::emit;

/// Refuses to write `out` when it is one of `sources` (the same file by device and inode, or
/// the same path when it does not exist yet), before anything is read or written.
pub(crate) fn refuse_overwriting(
    flag: &str,
    out: &Path,
    sources: &[(&str, &Path)],
) -> anyhow::Result<()> {
    for (what, source) in sources {
        if same_file(out, source) {
            anyhow::bail!(
                "{flag} {} is the {what} file {}: writing it would destroy it; choose another \
                 output path",
                out.display(),
                source.display()
            );
        }
    }
    Ok(())
}

/// Whether two paths name one file: the same device and inode when both exist (so hard
/// links and symbolic links count), else the same absolute path.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        (Err(_), Err(_)) => {
            let absolute = |path: &Path| {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
                let parent = parent.map_or_else(
                    || std::env::current_dir().ok(),
                    |parent| std::fs::canonicalize(parent).ok(),
                );
                parent
                    .zip(path.file_name())
                    .map(|(dir, name)| dir.join(name))
            };
            absolute(a).is_some_and(|a| Some(a) == absolute(b))
        }
        _ => false,
    }
}

/// Writes `path` whole or not at all: into a temporary file beside it, renamed over it once
/// everything is written, removed on failure, so a failed write leaves neither an empty nor a
/// cut-off file (nor touches one already there). Something that is not a regular file
/// (`/dev/stdout`, a FIFO) is written directly, since it cannot be replaced.
pub(crate) fn write_whole(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let context = || format!("writing {}", path.display());
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(context)?;
        let mut out = std::io::BufWriter::new(file);
        write(&mut out).with_context(context)?;
        return out.flush().with_context(context);
    }
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let written = (|| -> std::io::Result<()> {
        let file = std::fs::File::create(&temporary)?;
        let mut out = std::io::BufWriter::new(file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.with_context(context)
}

pub(crate) fn save_records(path: &Path, records: &[serde_json::Value]) -> anyhow::Result<()> {
    let mut text = String::new();
    for record in records {
        text.push_str(&serde_json::to_string(record)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    emit(&format!(
        "{} windows written to {}\n",
        records.len(),
        path.display()
    ))?;
    Ok(())
}

pub(crate) fn write_synthetic(
    out: &Path,
    seed: u64,
    set: Option<model::synthetic::SyntheticSet>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let data = match set {
        Some(set) => model::synthetic::synthetic_set(set, seed),
        None => model::synthetic::server_metrics(seed),
    };
    for (name, text) in [
        ("train.csv", &data.train_csv),
        ("test.csv", &data.test_csv),
        ("test_labels.csv", &data.test_labels_csv),
        ("test_segments.csv", &data.test_segments_csv),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    emit(&format!(
        "wrote train.csv, test.csv, test_labels.csv, test_segments.csv to {}\n",
        out.display()
    ))?;
    Ok(())
}
