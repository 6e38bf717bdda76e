//! deploy/ checked offline: every overlay renders into objects of the Kubernetes API that keep
//! the DaemonSet's rules; the config and drop list are ones the daemon accepts; the scrape job
//! and the dashboard parse (with Prometheus' own parser) and name only real metrics.

use std::{
    collections::{BTreeSet, HashSet},
    path::Path,
    process::Command,
    sync::{Arc, RwLock},
};

use collector::export::{ExporterState, ModelInfo};
use deploy_check::{
    APP_LABEL, METRICS_PORT, NAMESPACE, Object, consistency_violations, daemonset_violations,
    deploy_dir, overlays, render, uses_xdp,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::Value;

fn rendered(overlay: &str) -> Vec<Object> {
    render(&deploy_dir().join("overlays").join(overlay))
        .unwrap_or_else(|err| panic!("overlay {overlay}: {err:#}"))
}

fn daemonset(objects: &[Object]) -> DaemonSet {
    objects
        .iter()
        .find_map(|object| match object {
            Object::DaemonSet(daemonset) => Some((**daemonset).clone()),
            _ => None,
        })
        .expect("a DaemonSet is rendered")
}

/// Adds `capability` to the collector container's `capabilities.add`.
fn add_capability(daemonset: &mut DaemonSet, capability: &str) {
    let security = collector_container(daemonset)
        .security_context
        .as_mut()
        .unwrap();
    security
        .capabilities
        .as_mut()
        .unwrap()
        .add
        .as_mut()
        .unwrap()
        .push(capability.into());
}

fn collector_container(daemonset: &mut DaemonSet) -> &mut k8s_openapi::api::core::v1::Container {
    daemonset
        .spec
        .template
        .spec
        .as_mut()
        .and_then(|pod| pod.containers.first_mut())
        .expect("the DaemonSet has a container")
}

#[test]
fn every_overlay_renders_into_api_objects_that_keep_the_rules() {
    let overlays = overlays().expect("listing deploy/overlays");
    let names: BTreeSet<String> = overlays
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["default", "prometheus-operator", "scrape-job", "xdp"] {
        assert!(
            names.contains(expected),
            "overlay {expected} missing: {names:?}"
        );
    }
    for overlay in &overlays {
        let name = overlay.file_name().unwrap().to_string_lossy();
        let objects = render(overlay).unwrap_or_else(|err| panic!("overlay {name}: {err:#}"));
        let mut violations = consistency_violations(&objects);
        violations.extend(daemonset_violations(&daemonset(&objects)));
        assert!(
            violations.is_empty(),
            "overlay {name} breaks the rules:\n  {}",
            violations.join("\n  ")
        );
        let has_monitor = objects
            .iter()
            .any(|o| matches!(o, Object::ServiceMonitor(_)));
        assert_eq!(
            has_monitor,
            name == "prometheus-operator",
            "overlay {name}: a ServiceMonitor only where prometheus-operator is assumed"
        );
    }
}

#[test]
fn only_the_xdp_overlay_gets_net_admin_and_bpffs() {
    for overlay in ["default", "scrape-job", "prometheus-operator", "xdp"] {
        let daemonset = daemonset(&rendered(overlay));
        let pod = daemonset.spec.template.spec.as_ref().unwrap();
        let capabilities: Vec<String> = pod
            .containers
            .iter()
            .flat_map(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|s| s.capabilities.as_ref())
                    .and_then(|c| c.add.clone())
                    .unwrap_or_default()
            })
            .collect();
        let host_paths: Vec<String> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
            .collect();
        let xdp = overlay == "xdp";
        assert_eq!(uses_xdp(&daemonset), xdp, "{overlay}");
        assert_eq!(
            capabilities.iter().any(|c| c == "NET_ADMIN"),
            xdp,
            "{overlay}: {capabilities:?}"
        );
        assert_eq!(
            host_paths.iter().any(|p| p == "/sys/fs/bpf"),
            xdp,
            "{overlay}: {host_paths:?}"
        );
        for needed in ["BPF", "PERFMON"] {
            assert!(
                capabilities.iter().any(|c| c == needed),
                "{overlay}: {needed}"
            );
        }
        if xdp {
            let init = pod.init_containers.as_deref().unwrap_or_default();
            assert!(
                init.iter().any(|c| c
                    .args
                    .as_ref()
                    .is_some_and(|a| a.starts_with(&["blocklist".into(), "import".into()]))),
                "the xdp overlay imports the ConfigMap's drop list"
            );
        }
    }
}

#[test]
fn the_rules_catch_a_daemonset_that_overreaches() {
    let good = daemonset(&rendered("default"));
    assert!(daemonset_violations(&good).is_empty());

    type Mutation = Box<dyn Fn(&mut DaemonSet)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "privileged",
            Box::new(|d| {
                let security = collector_container(d).security_context.as_mut().unwrap();
                security.privileged = Some(true);
            }),
        ),
        (
            "capability SYS_ADMIN is not allowed",
            Box::new(|d| add_capability(d, "SYS_ADMIN")),
        ),
        (
            "capability NET_ADMIN is not allowed",
            Box::new(|d| add_capability(d, "NET_ADMIN")),
        ),
        (
            "readOnlyRootFilesystem is not true",
            Box::new(|d| {
                let security = collector_container(d).security_context.as_mut().unwrap();
                security.read_only_root_filesystem = None;
            }),
        ),
        (
            "livenessProbe is not an HTTP GET of /healthz",
            Box::new(|d| {
                let probe = collector_container(d).liveness_probe.as_mut().unwrap();
                probe.http_get.as_mut().unwrap().path = Some("/".into());
            }),
        ),
        (
            "readinessProbe is not an HTTP GET of /readyz",
            Box::new(|d| collector_container(d).readiness_probe = None),
        ),
        (
            "no memory in resources.limits",
            Box::new(|d| {
                let resources = collector_container(d).resources.as_mut().unwrap();
                resources.limits.as_mut().unwrap().remove("memory");
            }),
        ),
        (
            "NODE_NAME does not come from fieldRef spec.nodeName",
            Box::new(|d| {
                collector_container(d)
                    .env
                    .as_mut()
                    .unwrap()
                    .retain(|v| v.name != "NODE_NAME");
            }),
        ),
        (
            "host path / is not in the allowed list",
            Box::new(|d| {
                let pod = d.spec.template.spec.as_mut().unwrap();
                let volume = pod
                    .volumes
                    .as_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|v| v.host_path.is_some())
                    .unwrap();
                volume.host_path.as_mut().unwrap().path = "/".into();
            }),
        ),
        (
            "host path /sys/fs/cgroup must be mounted read-only",
            Box::new(|d| {
                let mounts = collector_container(d).volume_mounts.as_mut().unwrap();
                let cgroup = mounts.iter_mut().find(|m| m.name == "cgroup").unwrap();
                cgroup.read_only = Some(false);
            }),
        ),
        (
            "hostPID",
            Box::new(|d| {
                let pod = d.spec.template.spec.as_mut().unwrap();
                pod.host_pid = Some(true);
            }),
        ),
        (
            "no toleration",
            Box::new(|d| {
                let pod = d.spec.template.spec.as_mut().unwrap();
                pod.tolerations = None;
            }),
        ),
    ];
    for (expected, mutate) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        let violations = daemonset_violations(&bad);
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "expected a violation containing {expected:?}, got {violations:?}"
        );
    }
}

#[test]
fn images_carry_the_workspace_version() {
    let version = env!("CARGO_PKG_VERSION");
    for overlay in ["default", "xdp"] {
        let daemonset = daemonset(&rendered(overlay));
        let pod = daemonset.spec.template.spec.unwrap();
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let image = container.image.as_deref().unwrap_or_default();
            assert_eq!(
                image,
                format!("nodestate/collector:{version}"),
                "{overlay}: container {}",
                container.name
            );
        }
    }
}

#[test]
fn the_configmap_holds_a_config_and_a_drop_list_the_daemon_accepts() {
    let objects = rendered("xdp");
    let config_map = objects
        .iter()
        .find_map(|object| match object {
            Object::ConfigMap(config_map) => Some(config_map.clone()),
            _ => None,
        })
        .expect("a ConfigMap is rendered");
    let data = config_map.data.expect("the ConfigMap has data");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &data["config.toml"]).expect("writing config.toml");
    let args = ["collector", "run", "--config", config.to_str().unwrap()]
        .map(std::ffi::OsString::from)
        .to_vec();
    let merged = collector::config::merge_config_file(args)
        .unwrap_or_else(|err| panic!("config.toml is refused by the daemon: {err:#}"));
    use clap::Parser as _;
    let cli = collector::cli::Cli::try_parse_from(&merged)
        .unwrap_or_else(|err| panic!("config.toml gives a bad command line {merged:?}: {err}"));
    let collector::cli::Command::Run(run) = cli.command else {
        panic!("expected run")
    };
    assert_eq!(run.collect.window, std::time::Duration::from_secs(5));
    collector::xdp::rules::parse_import(&data["blocklist.txt"])
        .unwrap_or_else(|err| panic!("blocklist.txt is refused by `blocklist import`: {err}"));
}

fn promtool() -> std::path::PathBuf {
    which::which("promtool").unwrap_or_else(|_| {
        panic!(
            "promtool is not installed: it comes with Debian's `prometheus` package, which \
             `cargo xtask setup` installs"
        )
    })
}

fn promtool_check(what: &str, file: &Path) {
    let output = Command::new(promtool())
        .args(["check", what])
        .arg(file)
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "promtool check {what} refuses {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_scrape_job_parses_and_finds_the_daemonset_pods() {
    let path = deploy_dir().join("prometheus-scrape.yaml");
    let text = std::fs::read_to_string(&path).expect("reading prometheus-scrape.yaml");
    let jobs: Vec<Value> = serde_yaml::from_str(&text).expect("the scrape job is a YAML list");
    assert_eq!(jobs.len(), 1, "one job");
    let job = &jobs[0];
    let namespaces = &job["kubernetes_sd_configs"][0]["namespaces"]["names"];
    assert_eq!(namespaces, &serde_json::json!([NAMESPACE]));
    let relabels = job["relabel_configs"].as_array().expect("relabel_configs");
    let label = format!(
        "__meta_kubernetes_pod_label_{}",
        APP_LABEL.0.replace(['.', '/', '-'], "_")
    );
    let keeps = |source: &str, regex: &str| {
        relabels.iter().any(|r| {
            r["action"] == "keep"
                && r["source_labels"] == serde_json::json!([source])
                && r["regex"] == regex
        })
    };
    assert!(
        keeps(&label, APP_LABEL.1),
        "keeps the DaemonSet's pods by {label}"
    );
    assert!(
        keeps("__meta_kubernetes_pod_container_port_name", METRICS_PORT.0),
        "keeps the metrics port only"
    );
    assert!(
        relabels
            .iter()
            .any(|r| r["replacement"] == format!("$1:{}", METRICS_PORT.1)),
        "scrapes port {}",
        METRICS_PORT.1
    );

    // Prometheus' own parser on the rest of the job (intervals, relabel rules and their
    // regexes). Debian builds Prometheus without Kubernetes discovery, so its promtool does
    // not know `kubernetes_sd_configs`: a static target stands in for it, checked above.
    let mut checked = job.clone();
    let fields = checked.as_object_mut().expect("the job is a mapping");
    fields.remove("kubernetes_sd_configs");
    fields.insert(
        "static_configs".into(),
        serde_json::json!([{"targets": ["localhost:9464"]}]),
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("prometheus.yml");
    let yaml = serde_yaml::to_string(&serde_json::json!({"scrape_configs": [checked]}))
        .expect("serializing");
    std::fs::write(&config, yaml).expect("writing");
    promtool_check("config", &config);
}

/// Every metric name a scrape of the exporter shows, with every optional family present.
fn exported_metric_names() -> HashSet<String> {
    let mut state = ExporterState::new("node-a".into());
    state.set_health(&collector::judge::Verdict {
        state: collector::judge::NodeState::Degraded,
        score: 9.0,
        threshold: 4.0,
        cluster: Some(1),
        explanation: vec![("cpu_busy".into(), 5.0)],
        anomalous: true,
    });
    state.model = Some(ModelInfo::default());
    // A degraded node names a culprit: its gauge is served only then.
    state.culprits = collector::judge::culprits::Attribution {
        culprits: vec![collector::judge::culprits::Blame {
            workload: collector::workload::Workload {
                namespace: "shop".into(),
                pod: "db-0".into(),
                container: "postgres".into(),
                name: "shop/db-0 (postgres)".into(),
            },
            signal: collector::judge::culprits::Signal::ALL[0],
            share: 0.9,
            rate: 1.0,
            baseline: 0.1,
        }],
        victims: Vec::new(),
    };
    state.block_latency.insert(
        "vda".into(),
        collector::export::DeviceLatency {
            buckets: [1; collector_common::LATENCY_BUCKETS],
            sum_s: 0.5,
        },
    );
    state
        .program_totals
        .insert("block_rq_issue".into(), (10, 1000));
    state.probes = vec![(
        "oom".into(),
        "OOM kills".into(),
        "tracepoint".into(),
        "attached".into(),
    )];
    state.xdp = Some(collector::xdp::store::DropMetrics {
        top: vec![("192.0.2.0/24".into(), 1, 64)],
        ..Default::default()
    });
    state.xdp_interfaces = vec![("eth0".into(), "native".into())];
    state.auto_block = Some(collector::xdp::autoblock::AutoBlockMetrics::default());
    state.metric_set = collector::export::MetricSet::Full;
    let registry = collector::export::registry(Arc::new(RwLock::new(state)), Vec::new());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The metric names an expression reads: ours (`nodestate_…`) and the standard process
/// metrics the daemon serves (`process_…`).
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    let next = |text: &str| {
        ["nodestate_", "process_"]
            .iter()
            .filter_map(|prefix| {
                text.match_indices(prefix)
                    .find(|(at, _)| {
                        // A whole name, not the tail of another (`my_process_x`).
                        !text[..*at]
                            .chars()
                            .next_back()
                            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                    .map(|(at, _)| at)
            })
            .min()
    };
    while let Some(start) = next(rest) {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// (panel title, panel type, expr) of every query, rows included.
fn queries(panels: &[Value], found: &mut Vec<(String, String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        let kind = panel["type"].as_str().unwrap_or_default().to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                found.push((title.clone(), kind.clone(), expr.to_string()));
            }
        }
        if let Some(nested) = panel["panels"].as_array() {
            queries(nested, found);
        }
    }
}

#[test]
fn the_dashboard_queries_only_metrics_the_exporter_serves() {
    let path = deploy_dir().join("grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("reading grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut found = Vec::new();
    queries(dashboard["panels"].as_array().expect("panels"), &mut found);
    let exported = exported_metric_names();
    assert!(exported.contains("nodestate_state"), "{exported:?}");

    let mut used = BTreeSet::new();
    for (title, _, expr) in &found {
        let names = metric_names_in(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} queries no nodestate metric: {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "panel {title:?} queries {name}, which the exporter does not serve \
                 (it serves {exported:?})"
            );
            used.insert(name);
        }
    }
    // What the dashboard is for: one panel of the right kind for each.
    let has = |kind: &str, metric: &str| {
        found
            .iter()
            .any(|(_, k, expr)| k == kind && metric_names_in(expr).iter().any(|n| n == metric))
    };
    assert!(
        has("state-timeline", "nodestate_state"),
        "state timeline per node"
    );
    assert!(
        has("timeseries", "nodestate_anomaly_score"),
        "anomaly score"
    );
    assert!(has("bargauge", "nodestate_explanation_z"), "top features");
    assert!(
        has("heatmap", "nodestate_block_io_latency_seconds_bucket"),
        "block I/O latency heatmap"
    );
    assert!(
        has("timeseries", "nodestate_xdp_packets_total"),
        "XDP drops"
    );
    assert!(
        has("timeseries", "process_cpu_seconds_total")
            && has("timeseries", "process_resident_memory_bytes"),
        "the collector's own cost"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "node"]);

    // Prometheus' own parser on every query, as recording rules; Grafana's variables become
    // what Grafana would put there.
    let rules: String = found
        .iter()
        .enumerate()
        .map(|(index, (_, _, expr))| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$node", ".*");
            format!(
                "      - record: dashboard:query{index}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .expect("writing");
    promtool_check("rules", &file);
    assert!(used.len() >= 10, "the dashboard uses {used:?}");
}

#[test]
fn every_component_renders_on_the_base_and_keeps_the_rules() {
    let deploy = deploy_dir();
    let components: Vec<_> = std::fs::read_dir(deploy.join("components"))
        .expect("listing deploy/components")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("kustomization.yaml").is_file())
        .collect();
    assert!(components.len() >= 4, "{components:?}");
    // Each alone, then all together, as a user's overlay would combine them.
    let mut combinations: Vec<Vec<&std::path::PathBuf>> =
        components.iter().map(|component| vec![component]).collect();
    combinations.push(components.iter().collect());
    for combination in combinations {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // kustomize takes only relative paths: from the temporary directory up to / and down.
        let up = "../".repeat(dir.path().components().count() - 1);
        let relative =
            |path: &Path| format!("{up}{}", path.display().to_string().trim_start_matches('/'));
        let list: String = combination
            .iter()
            .map(|path| format!("  - {}\n", relative(path)))
            .collect();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources:\n  - {}\ncomponents:\n{list}",
                relative(&deploy.join("base"))
            ),
        )
        .expect("writing the overlay");
        let objects = render(dir.path()).unwrap_or_else(|err| panic!("{list}: {err:#}"));
        let mut violations = consistency_violations(&objects);
        violations.extend(daemonset_violations(&daemonset(&objects)));
        assert!(
            violations.is_empty(),
            "base + {list} breaks the rules:\n  {}",
            violations.join("\n  ")
        );
    }
}

/// Renders the base with `components` (paths under deploy/components), as a user's overlay
/// would.
fn render_base_with(components: &[&str]) -> Vec<Object> {
    let deploy = deploy_dir();
    let dir = tempfile::tempdir().expect("a temporary directory");
    // kustomize takes only relative paths: from the temporary directory up to / and down.
    let up = "../".repeat(dir.path().components().count() - 1);
    let relative =
        |path: &Path| format!("{up}{}", path.display().to_string().trim_start_matches('/'));
    let list: String = components
        .iter()
        .map(|name| format!("  - {}\n", relative(&deploy.join("components").join(name))))
        .collect();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {}\ncomponents:\n{list}",
            relative(&deploy.join("base"))
        ),
    )
    .expect("writing the overlay");
    render(dir.path()).unwrap_or_else(|err| panic!("base + {components:?}: {err:#}"))
}

fn network_policy(objects: &[Object]) -> k8s_openapi::api::networking::v1::NetworkPolicy {
    objects
        .iter()
        .find_map(|object| match object {
            Object::NetworkPolicy(policy) => Some((**policy).clone()),
            _ => None,
        })
        .expect("a NetworkPolicy is rendered")
}

#[test]
fn the_network_policy_admits_only_the_scraper_to_the_metrics_port() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let objects = render_base_with(&["network-policy"]);
    let violations = consistency_violations(&objects);
    assert!(violations.is_empty(), "{violations:?}");
    let policy = network_policy(&objects);
    assert_eq!(policy.metadata.namespace.as_deref(), Some(NAMESPACE));
    let rules = policy.spec.as_ref().unwrap().ingress.as_ref().unwrap();
    let peer = &rules[0].from.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["kubernetes.io/metadata.name"],
        "monitoring"
    );
    // Not in the default overlays: the selector must be set to the cluster's Prometheus first.
    for overlay in overlays().expect("listing deploy/overlays") {
        let objects = render(&overlay).unwrap();
        assert!(
            !objects
                .iter()
                .any(|o| matches!(o, Object::NetworkPolicy(_))),
            "{}",
            overlay.display()
        );
    }

    // The rules catch a policy that lets more in.
    type Mutation = Box<dyn Fn(&mut k8s_openapi::api::networking::v1::NetworkPolicy)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "admits every source",
            Box::new(|p| p.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0].from = None),
        ),
        (
            "not only TCP 9464",
            Box::new(|p| {
                let rule = &mut p.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0];
                rule.ports.as_mut().unwrap()[0].port = Some(IntOrString::Int(22));
            }),
        ),
        (
            "admits every port",
            Box::new(|p| p.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0].ports = None),
        ),
        (
            "does not select the pods",
            Box::new(|p| {
                p.spec.as_mut().unwrap().pod_selector = Some(Default::default());
            }),
        ),
        (
            "policyTypes lacks Ingress",
            Box::new(|p| p.spec.as_mut().unwrap().policy_types = Some(vec!["Egress".into()])),
        ),
    ];
    for (expected, mutate) in cases {
        let mut bad = policy.clone();
        mutate(&mut bad);
        let violations = deploy_check::network_policy_violations(&bad, APP_LABEL, METRICS_PORT.1);
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "expected a violation containing {expected:?}, got {violations:?}"
        );
    }
}

#[test]
fn the_scheduler_extender_manifest_is_api_objects_fenced_to_the_scheduler() {
    let text = std::fs::read_to_string(deploy_dir().join("scheduler-extender.yaml"))
        .expect("reading scheduler-extender.yaml");
    let objects: Vec<Object> = deploy_check::documents(&text)
        .expect("the manifest is YAML")
        .iter()
        .map(|value| deploy_check::parse_object(value).unwrap_or_else(|err| panic!("{err:#}")))
        .collect();
    let kinds: Vec<&str> = objects.iter().map(Object::kind).collect();
    assert_eq!(kinds, ["DaemonSet", "NetworkPolicy", "ConfigMap"]);

    let extender = daemonset(&objects);
    let pod = extender.spec.template.spec.as_ref().unwrap();
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert!(
        args.iter().any(|a| a == "--listen=127.0.0.1:9465"),
        "the extender listens on loopback only: {args:?}"
    );
    let violations = deploy_check::network_policy_violations(
        &network_policy(&objects),
        ("app.kubernetes.io/name", "nodestate-scheduler-extender"),
        9465,
    );
    assert!(violations.is_empty(), "{violations:?}");

    // The 1 MiB body cap is safe because kube-scheduler sends node names only.
    let config = objects
        .iter()
        .find_map(|object| match object {
            Object::ConfigMap(config) => config.data.clone(),
            _ => None,
        })
        .expect("the scheduler ConfigMap has data");
    let scheduler: serde_json::Value =
        serde_yaml::from_str(&config["scheduler-config.yaml"]).expect("scheduler config YAML");
    let extenders = scheduler["extenders"].as_array().expect("extenders");
    assert_eq!(extenders.len(), 1);
    assert_eq!(extenders[0]["nodeCacheCapable"], true, "{scheduler}");
    assert_eq!(extenders[0]["ignorable"], true, "{scheduler}");
    assert!(
        !args.iter().any(|a| a.starts_with("--max-body-bytes")),
        "names only: the default cap fits ({args:?})"
    );
}

fn alerts_dir() -> std::path::PathBuf {
    deploy_dir().join("alerts")
}

fn plain_rule_groups() -> Vec<deploy_check::RuleGroup> {
    let path = alerts_dir().join("nodestate.rules.yaml");
    let text = std::fs::read_to_string(&path).expect("reading nodestate.rules.yaml");
    let file: deploy_check::RulesFile =
        serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    file.groups
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    promtool_check("rules", &alerts_dir().join("nodestate.rules.yaml"));
    let output = Command::new(promtool())
        .args(["test", "rules", "nodestate.rules.test.yaml"])
        .current_dir(alerts_dir())
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "promtool test rules fails:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Every alert of the file has a test that fires it and one in which it stays silent.
    let tests = std::fs::read_to_string(alerts_dir().join("nodestate.rules.test.yaml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    let mut fired = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            match case["exp_alerts"].as_sequence() {
                Some(alerts) if !alerts.is_empty() => fired.insert(name),
                _ => silent.insert(name),
            };
        }
    }
    for group in plain_rule_groups() {
        for rule in group.rules {
            let Some(alert) = rule.alert else { continue };
            assert!(fired.contains(&alert), "{alert} is never tested firing");
            assert!(silent.contains(&alert), "{alert} is never tested silent");
            for key in ["summary", "description", "runbook_url"] {
                assert!(rule.annotations.contains_key(key), "{alert} has no {key}");
            }
            let anchor = rule.annotations["runbook_url"]
                .rsplit('#')
                .next()
                .unwrap()
                .to_string();
            let readme = std::fs::read_to_string(deploy_dir().join("README.md")).unwrap();
            assert!(
                readme.contains(&format!("#### {alert}")) && anchor == alert.to_lowercase(),
                "{alert}'s runbook section is not in deploy/README.md under `#### {alert}`"
            );
        }
    }
}

#[test]
fn the_alert_rules_ship_the_same_as_a_file_a_prometheusrule_and_helm_values() {
    let plain = plain_rule_groups();
    assert!(!plain.is_empty());

    let objects = rendered("prometheus-operator");
    let operator = objects
        .iter()
        .find_map(|object| match object {
            Object::PrometheusRule(rule) => Some(rule.spec.groups.clone()),
            _ => None,
        })
        .expect("the prometheus-operator overlay renders a PrometheusRule");
    assert_eq!(
        operator, plain,
        "PrometheusRule and nodestate.rules.yaml differ"
    );

    let values = std::fs::read_to_string(alerts_dir().join("helm-values.yaml")).unwrap();
    let values: serde_yaml::Value = serde_yaml::from_str(&values).unwrap();
    let file: deploy_check::RulesFile =
        serde_yaml::from_value(values["serverFiles"]["alerting_rules.yml"].clone())
            .expect("helm-values.yaml has serverFiles.alerting_rules.yml with groups");
    assert_eq!(
        file.groups, plain,
        "helm-values.yaml and nodestate.rules.yaml differ"
    );
}

#[test]
fn the_alert_rules_name_only_metrics_the_exporter_serves() {
    let exported = exported_metric_names();
    for group in plain_rule_groups() {
        for rule in group.rules {
            let names = metric_names_in(&rule.expr);
            let up = rule.expr.contains("up{");
            assert!(!names.is_empty() || up, "{:?} reads no metric", rule.alert);
            for name in names {
                assert!(
                    exported.contains(&name),
                    "alert {:?} reads {name}, which the exporter does not serve",
                    rule.alert
                );
            }
        }
    }
}

/// deploy/components/grafana-dashboard/configmap.yaml as it must be: the dashboard's JSON,
/// verbatim, in a ConfigMap Grafana's sidecar loads.
fn dashboard_configmap_yaml(json: &str) -> String {
    let mut out = String::from(
        "# Generated from deploy/grafana-dashboard.json by deploy/check's tests \
         (NODESTATE_BLESS=1): do not edit.\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nodestate-grafana-dashboard\n  \
         namespace: nodestate\n  labels:\n    grafana_dashboard: \"1\"\ndata:\n  nodestate.json: |\n",
    );
    for line in json.lines() {
        if !line.is_empty() {
            out.push_str("    ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_dashboard_configmap_is_the_dashboard_json_with_the_sidecar_label() {
    let json = std::fs::read_to_string(deploy_dir().join("grafana-dashboard.json")).unwrap();
    let path = deploy_dir().join("components/grafana-dashboard/configmap.yaml");
    let expected = dashboard_configmap_yaml(&json);
    if std::env::var_os("NODESTATE_BLESS").is_some() {
        std::fs::write(&path, &expected).expect("writing configmap.yaml");
    }
    let shipped = std::fs::read_to_string(&path).expect("reading configmap.yaml");
    assert!(
        shipped == expected,
        "{} differs from grafana-dashboard.json: regenerate it with NODESTATE_BLESS=1 \
         cargo test -p deploy-check --test manifests dashboard",
        path.display()
    );
    // What kustomize renders is the same JSON, labelled for the sidecar.
    let objects = render_base_with(&["grafana-dashboard"]);
    let configmap = objects
        .iter()
        .find_map(|object| match object {
            Object::ConfigMap(map)
                if map.metadata.name.as_deref() == Some("nodestate-grafana-dashboard") =>
            {
                Some(map)
            }
            _ => None,
        })
        .expect("the component renders the dashboard's ConfigMap");
    let labels = configmap.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("grafana_dashboard").map(String::as_str),
        Some("1"),
        "{labels:?}"
    );
    let data = configmap.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("nodestate.json"),
        Some(&json),
        "the ConfigMap's JSON"
    );
}
