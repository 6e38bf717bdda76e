//! `cargo xtask image`: the collector's container image, built here without pulling anything.
//!
//! No registry is reachable from our machines, so the Containerfile's builder stage cannot
//! run. Its runtime stage is only "the binary and the libraries it links" on an empty file
//! system, and that is what this builds with buildah from scratch: the same
//! `deploy/image/rootfs.sh` lays out the files, and the runtime stage's EXPOSE, ENTRYPOINT and
//! CMD are read from `deploy/Containerfile` itself, so the two cannot drift apart. The image is
//! then started with podman to show it runs on its own (`--help`, `--version`).

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::util::{release_binary, run, workspace_root};

/// The local name of the image (podman calls images without a registry `localhost/…`).
pub fn image_name() -> String {
    format!(
        "localhost/nodestate/collector:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// What the runtime stage of the Containerfile says about the image.
#[derive(Debug, Default, PartialEq)]
struct RuntimeStage {
    expose: Vec<String>,
    entrypoint: Option<String>,
    cmd: Option<String>,
}

/// Reads the last stage (`FROM scratch …`) of a Containerfile. Anything there beyond the
/// rootfs copy, EXPOSE, ENTRYPOINT and CMD is refused, since this build would not apply it.
fn runtime_stage(containerfile: &str) -> anyhow::Result<RuntimeStage> {
    // Join continuation lines, drop comments and blanks.
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in containerfile.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let start = lines
        .iter()
        .rposition(|line| line.to_uppercase().starts_with("FROM "))
        .context("the Containerfile has no FROM")?;
    let from: Vec<&str> = lines[start].split_whitespace().collect();
    if from.get(1) != Some(&"scratch") {
        bail!(
            "the Containerfile's last stage starts `{}`; this build assembles `FROM scratch`",
            lines[start]
        );
    }
    let mut stage = RuntimeStage::default();
    let mut copied_rootfs = false;
    for line in &lines[start + 1..] {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let exec_form = |what: &str| -> anyhow::Result<String> {
            let parsed: Vec<String> = serde_json::from_str(rest).with_context(|| {
                format!("Containerfile {what} `{rest}`: only the JSON exec form is supported")
            })?;
            Ok(serde_json::to_string(&parsed)?)
        };
        match instruction.to_uppercase().as_str() {
            "COPY" if rest == "--from=builder /rootfs /" => copied_rootfs = true,
            "EXPOSE" => stage
                .expose
                .extend(rest.split_whitespace().map(str::to_string)),
            "ENTRYPOINT" => stage.entrypoint = Some(exec_form("ENTRYPOINT")?),
            "CMD" => stage.cmd = Some(exec_form("CMD")?),
            _ => bail!(
                "the Containerfile's runtime stage has `{line}`, which `cargo xtask image` does \
                 not apply; add it to xtask/src/image.rs or move it to the builder stage"
            ),
        }
    }
    if !copied_rootfs {
        bail!("the Containerfile's runtime stage does not `COPY --from=builder /rootfs /`");
    }
    Ok(stage)
}

fn tool(name: &str) -> anyhow::Result<std::path::PathBuf> {
    which::which(name).map_err(|_| {
        anyhow::anyhow!(
            "{name} is not installed: `cargo xtask setup` installs it (Debian package {name})"
        )
    })
}

fn capture(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A buildah working container, removed when dropped (also on error).
struct WorkingContainer(String);

impl Drop for WorkingContainer {
    fn drop(&mut self) {
        let _ = Command::new("buildah")
            .args(["rm", &self.0])
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// Builds the image from the release binary (which the caller builds) and returns its name.
pub fn build_image() -> anyhow::Result<String> {
    let buildah = tool("buildah")?;
    let root = workspace_root();
    let containerfile = root.join("deploy/Containerfile");
    let text = std::fs::read_to_string(&containerfile)
        .with_context(|| format!("reading {}", containerfile.display()))?;
    let stage = runtime_stage(&text).context("deploy/Containerfile")?;

    let binary = release_binary("collector");
    let staging = tempfile::tempdir().context("a staging directory")?;
    let rootfs = staging.path().join("rootfs");
    run(Command::new("sh")
        .arg(root.join("deploy/image/rootfs.sh"))
        .arg(&binary)
        .arg(&rootfs))
    .context("laying out the image's files")?;

    let container = WorkingContainer(capture(Command::new(&buildah).args(["from", "scratch"]))?);
    run(Command::new(&buildah)
        .arg("copy")
        .arg("--quiet")
        .arg(&container.0)
        .arg(format!("{}/", rootfs.display()))
        .arg("/"))?;
    let mut config = Command::new(&buildah);
    config.arg("config");
    for port in &stage.expose {
        config.args(["--port", port]);
    }
    if let Some(entrypoint) = &stage.entrypoint {
        config.args(["--entrypoint", entrypoint]);
    }
    if let Some(cmd) = &stage.cmd {
        config.args(["--cmd", cmd]);
    }
    let version = env!("CARGO_PKG_VERSION");
    config
        .args([
            "--label",
            "org.opencontainers.image.title=nodestate-collector",
        ])
        .args([
            "--label",
            &format!("org.opencontainers.image.version={version}"),
        ])
        .args([
            "--label",
            "org.opencontainers.image.description=nodestate's eBPF node-health collector",
        ])
        .args([
            "--label",
            "org.opencontainers.image.licenses=MIT OR Apache-2.0",
        ])
        .arg(&container.0);
    run(&mut config)?;
    let name = image_name();
    run(Command::new(&buildah)
        .args(["commit", "--quiet", "--rm", &container.0, &name])
        .stdout(std::process::Stdio::null()))?;
    // `commit --rm` removed it already.
    std::mem::forget(container);
    Ok(name)
}

/// Runs the image with podman (no network, nothing mounted) and returns what it printed.
fn podman_run(image: &str, args: &[&str]) -> anyhow::Result<String> {
    let podman = tool("podman")?;
    capture(
        Command::new(podman)
            // crun 1.8 (Debian 12) refuses a cgroup v1 host that also mounts an empty v2
            // hierarchy, as ours do; runc runs there.
            .args(["--runtime", "runc", "run", "--rm", "--network=none"])
            // podman raises these limits by default, which needs CAP_SYS_RESOURCE; the
            // machines' root lacks it. `--help` needs neither.
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .arg(image)
            .args(args),
    )
}

/// Builds the image and checks that it starts on its own: `--help` and `--version` from the
/// binary inside, with only the files the image holds.
pub fn image_test() -> anyhow::Result<()> {
    let started = Instant::now();
    let image = build_image()?;
    let built = started.elapsed();
    let help = podman_run(&image, &["--help"])?;
    for expected in [
        "nodestate collector",
        "Usage: collector",
        "run",
        "blocklist",
    ] {
        if !help.contains(expected) {
            bail!("`{image} --help` does not mention {expected:?}:\n{help}");
        }
    }
    let version = podman_run(&image, &["--version"])?;
    if version != format!("collector {}", env!("CARGO_PKG_VERSION")) {
        bail!("`{image} --version` printed {version:?}");
    }
    let size = capture(Command::new(tool("podman")?).args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &image,
    ]))?;
    let size_mib = size.parse::<f64>().unwrap_or(0.0) / (1024.0 * 1024.0);
    println!(
        "xtask image: {image} ({size_mib:.1} MiB) built in {:.1} s, starts and prints --help \
         (total {:.1} s)",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containerfile_runtime_stage_is_what_the_image_gets() {
        let path = workspace_root().join("deploy/Containerfile");
        let text = std::fs::read_to_string(&path).expect("reading deploy/Containerfile");
        let stage = runtime_stage(&text).expect("the runtime stage parses");
        assert_eq!(
            stage,
            RuntimeStage {
                expose: vec!["9464/tcp".into()],
                entrypoint: Some(r#"["/usr/bin/collector"]"#.into()),
                cmd: Some(r#"["run"]"#.into()),
            }
        );
    }

    #[test]
    fn instructions_this_build_would_not_apply_are_refused() {
        let text = "FROM rust AS builder\nRUN true\nFROM scratch\nCOPY --from=builder /rootfs /\n\
                    USER 1000\n";
        let err = runtime_stage(text).unwrap_err().to_string();
        assert!(err.contains("USER 1000"), "{err}");
        let err = runtime_stage("FROM debian\nCMD [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("FROM scratch"), "{err}");
        let err = runtime_stage("FROM scratch\nCOPY --from=builder /rootfs /\nCMD run\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exec form"), "{err}");
    }
}
