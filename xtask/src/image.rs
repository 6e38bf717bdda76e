//! `cargo xtask image`: the collector's container image, built here without pulling anything.
//!
//! No registry is reachable from our machines, so the Containerfile's builder stage cannot
//! run. Its runtime stage is only "the binary and the libraries it links" on an empty file
//! system, and that is what this builds with buildah from scratch: the same
//! `deploy/image/rootfs.sh` lays out the files, and the runtime stage's EXPOSE, ENTRYPOINT and
//! CMD are read from `deploy/Containerfile` itself, so the two cannot drift apart. The image is
//! then started with podman to show it runs on its own (`--help`, `--version`), and run the way
//! the DaemonSet runs it (its capabilities, read-only root, seccomp choice, host paths, config
//! and environment, read from the rendered manifests): every signal must attach as it does
//! for full root, the daemon must serve /healthz and /metrics, and the xdp overlay's init
//! container and drop list must work.

use std::{path::Path, process::Command, time::Instant};

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
    // The previous build under this name would stay behind as an unnamed image on every run.
    let _ = Command::new(&buildah)
        .args(["rmi", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
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
    pod_test(&image).context("the collector as the DaemonSet runs it")?;
    xdp_pod_test(&image).context("the xdp overlay's init container and drop list")?;
    let size = capture(Command::new(tool("podman")?).args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &image,
    ]))?;
    let size_mib = size.parse::<f64>().unwrap_or(0.0) / (1024.0 * 1024.0);
    println!(
        "xtask image: {image} ({size_mib:.1} MiB) built in {:.1} s; prints --help; runs as the \
         DaemonSet and the xdp overlay run it (total {:.1} s)",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where the pod's host paths come from in the test: the host's own, except bpffs, which is a
/// fresh mount of the test's so the node's pinned drop list is never touched.
struct PodRun<'a> {
    image: &'a str,
    /// (host path → what to mount instead).
    host_path_overrides: Vec<(&'a str, std::path::PathBuf)>,
    /// Environment that replaces the manifest's (the listen address, the XDP interface).
    env_overrides: Vec<(&'a str, String)>,
    /// `--network=host` as the pod has it, or `none` (a namespace of its own, for XDP on lo).
    network: &'a str,
    /// Where the ConfigMap's keys are written for the `config` volume.
    config_dir: &'a std::path::Path,
}

/// `podman run` arguments that give `container` what the pod spec gives it.
fn pod_args(
    run: &PodRun,
    pod: &k8s_openapi::api::core::v1::PodSpec,
    container: &k8s_openapi::api::core::v1::Container,
) -> anyhow::Result<Vec<String>> {
    let mut args: Vec<String> = vec![
        "--runtime".into(),
        "runc".into(),
        format!("--network={}", run.network),
        "--ulimit".into(),
        "nofile=1024:1024".into(),
        "--ulimit".into(),
        "nproc=1024:1024".into(),
    ];
    let security = container
        .security_context
        .as_ref()
        .context("no securityContext")?;
    if security.privileged == Some(true) {
        bail!("container {} is privileged", container.name);
    }
    if security.read_only_root_filesystem == Some(true) {
        args.push("--read-only".into());
    }
    if let Some(user) = security.run_as_user {
        args.push(format!("--user={user}"));
    }
    match security.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
        Some("Unconfined") => args.push("--security-opt=seccomp=unconfined".into()),
        Some("RuntimeDefault") | None => {}
        Some(other) => bail!("seccomp profile {other} is not one this test can give"),
    }
    if security.allow_privilege_escalation == Some(false) {
        args.push("--security-opt=no-new-privileges".into());
    }
    let capabilities = security.capabilities.as_ref().context("no capabilities")?;
    for capability in capabilities.drop.iter().flatten() {
        args.push(format!("--cap-drop={capability}"));
    }
    for capability in capabilities.add.iter().flatten() {
        args.push(format!("--cap-add={capability}"));
    }
    for mount in container.volume_mounts.iter().flatten() {
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .with_context(|| format!("volume {} is not defined", mount.name))?;
        let source = if let Some(host) = &volume.host_path {
            run.host_path_overrides
                .iter()
                .find(|(path, _)| *path == host.path)
                .map(|(_, replacement)| replacement.clone())
                .unwrap_or_else(|| std::path::PathBuf::from(&host.path))
        } else if volume.config_map.is_some() {
            run.config_dir.to_path_buf()
        } else {
            bail!("volume {} is of a kind this test cannot give", volume.name);
        };
        let read_only = if mount.read_only == Some(true) {
            ":ro"
        } else {
            ""
        };
        args.push(format!(
            "--volume={}:{}{read_only}",
            source.display(),
            mount.mount_path
        ));
    }
    for var in container.env.iter().flatten() {
        if run.env_overrides.iter().any(|(name, _)| *name == var.name) {
            continue;
        }
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) if from.field_ref.is_some() => "image-test".to_string(),
            _ => bail!("env {} has a source this test cannot give", var.name),
        };
        args.push(format!("--env={}={value}", var.name));
    }
    for (name, value) in &run.env_overrides {
        args.push(format!("--env={name}={value}"));
    }
    args.push(run.image.to_string());
    Ok(args)
}

/// The DaemonSet and ConfigMap an overlay renders.
fn rendered_pod(
    overlay: &str,
) -> anyhow::Result<(
    k8s_openapi::api::core::v1::PodSpec,
    std::collections::BTreeMap<String, String>,
)> {
    let objects = deploy_check::render(&workspace_root().join("deploy/overlays").join(overlay))?;
    let mut pod = None;
    let mut data = None;
    for object in objects {
        match object {
            deploy_check::Object::DaemonSet(daemonset) => pod = daemonset.spec.template.spec,
            deploy_check::Object::ConfigMap(config_map) => data = config_map.data,
            _ => {}
        }
    }
    Ok((
        pod.context("no DaemonSet pod spec")?,
        data.context("no ConfigMap data")?,
    ))
}

fn podman(args: &[String]) -> anyhow::Result<String> {
    capture(Command::new(tool("podman")?).args(args))
}

/// What the container wrote to stdout and stderr (the daemon logs to stderr).
fn podman_logs(container: &str) -> String {
    Command::new("podman")
        .args(["logs", container])
        .output()
        .map(|output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .unwrap_or_default()
}

/// Signal id → (kind, outcome), from `collector probes --output json`.
fn probe_outcomes(json: &str) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let report: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("probes printed {json}"))?;
    Ok(report["probes"]
        .as_array()
        .context("no probes")?
        .iter()
        .map(|probe| {
            (
                probe["id"].as_str().unwrap_or_default().to_string(),
                format!("{} {}", probe["kind"], probe["outcome"]),
            )
        })
        .collect())
}

/// A container started with `podman run -d`, removed when dropped.
struct RunningContainer(String);

impl Drop for RunningContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "2", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Mounts tracefs where the node would have it (systemd does on a real node; the pod cannot).
fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

/// The DaemonSet's collector container, run as the pod runs it.
fn pod_test(image: &str) -> anyhow::Result<()> {
    ensure_tracefs()?;
    let (pod, config) = rendered_pod("scrape-job")?;
    let container = pod.containers.first().context("no container")?;
    let config_dir = tempfile::tempdir()?;
    for (key, value) in &config {
        std::fs::write(config_dir.path().join(key), value)?;
    }

    // Every signal attaches inside the pod's privileges as it does for full root.
    let host =
        capture(Command::new(release_binary("collector")).args(["probes", "--output", "json"]))?;
    let run_spec = PodRun {
        image,
        host_path_overrides: Vec::new(),
        env_overrides: Vec::new(),
        network: "host",
        config_dir: config_dir.path(),
    };
    let mut args = vec!["run".to_string(), "--rm".to_string()];
    args.extend(pod_args(&run_spec, &pod, container)?);
    args.extend(["probes", "--output", "json"].map(String::from));
    let in_pod = podman(&args).context("`collector probes` with the pod's privileges")?;
    let (host, in_pod) = (probe_outcomes(&host)?, probe_outcomes(&in_pod)?);
    if host != in_pod {
        bail!(
            "signals attach differently with the pod's privileges:\nroot: {host:?}\npod:  {in_pod:?}"
        );
    }

    // The daemon itself: serves /healthz and /metrics, exits cleanly on SIGTERM.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let run_spec = PodRun {
        env_overrides: vec![("NODESTATE_LISTEN", format!("127.0.0.1:{port}"))],
        ..run_spec
    };
    let mut args = vec!["run".to_string(), "--detach".to_string()];
    args.extend(pod_args(&run_spec, &pod, container)?);
    args.extend(container.args.iter().flatten().cloned());
    let daemon = RunningContainer(podman(&args).context("starting the daemon as the pod does")?);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while http_get(port, "/healthz").is_none_or(|(status, _)| status != 200) {
        if Instant::now() > deadline {
            let logs = podman_logs(&daemon.0);
            bail!("the daemon in the pod's privileges never served /healthz:\n{logs}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (_, metrics) = http_get(port, "/metrics").context("GET /metrics")?;
    if !metrics.contains(r#"outcome="attached""#) || !metrics.contains("node=\"image-test\"") {
        bail!("/metrics in the pod shows no attached probe for node image-test:\n{metrics}");
    }
    podman(&["stop".into(), "--time".into(), "5".into(), daemon.0.clone()])?;
    let exit = podman(&[
        "inspect".into(),
        "--format".into(),
        "{{.State.ExitCode}}".into(),
        daemon.0.clone(),
    ])?;
    if exit != "0" {
        let logs = podman_logs(&daemon.0);
        bail!("the daemon exited {exit} on SIGTERM:\n{logs}");
    }
    Ok(())
}

/// A bpffs of the test's own, unmounted when dropped.
struct Bpffs(tempfile::TempDir);

impl Bpffs {
    fn mount() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        run(Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path()))?;
        Ok(Self(dir))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// The xdp overlay: the init container imports the ConfigMap's list, the collector (with
/// NET_ADMIN) attaches the drop list. In a network namespace of the container's own, on lo,
/// so no host interface is touched.
fn xdp_pod_test(image: &str) -> anyhow::Result<()> {
    let (pod, mut config) = rendered_pod("xdp")?;
    config.insert(
        "blocklist.txt".into(),
        "# image test\n192.0.2.0/24\n2001:db8::/32\n".into(),
    );
    let config_dir = tempfile::tempdir()?;
    for (key, value) in &config {
        std::fs::write(config_dir.path().join(key), value)?;
    }
    let bpffs = Bpffs::mount()?;
    let run_spec = PodRun {
        image,
        host_path_overrides: vec![("/sys/fs/bpf", bpffs.0.path().to_path_buf())],
        env_overrides: vec![("NODESTATE_XDP_IFACE", "lo".into())],
        network: "none",
        config_dir: config_dir.path(),
    };
    let init = pod
        .init_containers
        .as_ref()
        .and_then(|c| c.first())
        .context("the xdp overlay has no init container")?;
    let mut args = vec!["run".to_string(), "--rm".to_string()];
    args.extend(pod_args(&run_spec, &pod, init)?);
    args.extend(init.args.iter().flatten().cloned());
    // What it imported is checked below, in the list the collector enforces.
    podman(&args).context("the init container's import")?;

    let container = pod.containers.first().context("no container")?;
    let mut args = vec!["run".to_string(), "--detach".to_string()];
    args.extend(pod_args(&run_spec, &pod, container)?);
    args.extend(container.args.iter().flatten().cloned());
    let daemon = RunningContainer(podman(&args).context("starting the daemon with XDP")?);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let logs = podman_logs(&daemon.0);
        if logs.contains("XDP drop list enforced") {
            break;
        }
        if Instant::now() > deadline || logs.contains("Error:") {
            bail!("the daemon never enforced the drop list:\n{logs}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let list = podman(&[
        "exec".into(),
        daemon.0.clone(),
        "/usr/bin/collector".into(),
        "blocklist".into(),
        "list".into(),
    ])?;
    if !list.contains("192.0.2.0/24") || !list.contains("2001:db8::/32") {
        bail!("the pinned list in the pod holds:\n{list}");
    }
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
