//! The ranking on made-up windows: no kernel, no containers.

use super::*;

fn workload(name: &str) -> Workload {
    Workload {
        namespace: String::new(),
        pod: String::new(),
        container: name.into(),
        name: name.into(),
    }
}

fn row(name: &str, oncpu_ms: u64, io_ops: u64, enospc: u64) -> WorkloadWindow {
    let mut delta = CgroupStats {
        oncpu_ns: oncpu_ms * 1_000_000,
        io_ops,
        io_latency_ns: io_ops * 1_000_000,
        ..CgroupStats::default()
    };
    delta.errors[collector_common::cgroup_errno::ENOSPC] = enospc;
    WorkloadWindow {
        workload: workload(name),
        delta,
        cgroups: 1,
    }
}

/// The culprits' names, first first.
fn culprit_names(attribution: &Attribution) -> Vec<&str> {
    attribution
        .culprits
        .iter()
        .map(|blame| blame.workload.name.as_str())
        .collect()
}

fn verdict(state: NodeState, explanation: &[(&str, f64)]) -> Verdict {
    Verdict {
        state,
        score: 0.0,
        threshold: 1.0,
        cluster: Some(0),
        explanation: explanation
            .iter()
            .map(|(feature, z)| (feature.to_string(), *z))
            .collect(),
        anomalous: state == NodeState::Degraded,
    }
}

/// A busy but steady database and a quiet batch job; the batch job starts hammering the
/// disk. The database issues more I/O in total, yet its volume is its usual one: the batch
/// job is named, the database is not, and the database shows up as a victim of I/O wait.
#[test]
fn the_workload_that_rose_is_blamed_not_the_busiest() {
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for n in 0..10 {
        let rows = [row("db", 400, 5000 + n * 10, 0), row("batch", 10, 20, 0)];
        assert_eq!(
            ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy),
            None
        );
    }
    let mut db = row("db", 400, 5050, 0);
    db.delta.io_latency_ns = 80_000_000_000;
    let rows = [db, row("batch", 40, 1800, 0)];
    let degraded = verdict(NodeState::Degraded, &[("psi_io_some_pct", 11.0)]);
    let unattributed = CgroupStats {
        io_ops: 200,
        ..CgroupStats::default()
    };
    let attribution = ranker
        .window(&rows, &unattributed, 1.0, &degraded)
        .expect("a degraded window is attributed");
    let culprits: Vec<String> = attribution.culprits.iter().map(|b| b.to_string()).collect();
    // 1780 of the node's 1780 + 200 (unattributed) rise.
    assert_eq!(culprits, vec!["90% of I/O issued: batch".to_string()]);
    assert_eq!(attribution.victims.len(), 1, "{attribution:?}");
    assert_eq!(attribution.victims[0].workload.name, "db");
    assert_eq!(attribution.victims[0].signal, Signal::IoLatency);
    // The fault's window did not become the baseline: the next one blames the same.
    let again = ranker
        .window(&rows, &unattributed, 1.0, &degraded)
        .expect("attributed");
    assert_eq!(again.culprits[0].workload.name, "batch");
}

/// A crash loop starts late in a window: that window is still judged normal (its share of
/// the fault is too small to cross the threshold), the next ones are degraded. The onset
/// window is not learned, so the crashing job's baseline stays at its quiet one and it is
/// named with its whole rise; a normal window is learned only after later normal ones.
#[test]
fn the_onset_of_a_fault_is_not_learned_as_normal() {
    let crashing = |exits: u64| {
        let mut row = row("job", 10, 0, 0);
        row.delta.exits_nonzero = exits;
        row
    };
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for _ in 0..10 {
        let rows = [crashing(0), row("web", 100, 10, 0)];
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
    }
    // The onset: 40 crashes in the window's last moments, judged normal.
    let rows = [crashing(40), row("web", 100, 10, 0)];
    assert_eq!(
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy),
        None
    );
    let degraded = verdict(NodeState::Degraded, &[("proc_exits_nonzero_per_s", 20.0)]);
    let rows = [crashing(200), row("web", 100, 10, 0)];
    let named = ranker
        .window(&rows, &CgroupStats::default(), 1.0, &degraded)
        .expect("attributed");
    assert_eq!(named.culprits.len(), 1, "{named:?}");
    assert_eq!(named.culprits[0].to_string(), "100% of non-zero exits: job");
    assert_eq!(named.culprits[0].baseline, 0.0);

    // After the fault: a window is learned once three more normal ones followed it.
    let mut ranker = CulpritRanker::new();
    let rows = [crashing(5)];
    for _ in 0..CONFIRM_AFTER {
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
    }
    assert_eq!(ranker.tracked(), 0, "nothing learned yet");
    ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
    assert_eq!(ranker.tracked(), 1);
}

#[test]
fn the_moved_features_choose_the_signals() {
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for _ in 0..10 {
        let rows = [row("web", 100, 10, 0), row("cron", 10, 10, 0)];
        ranker.window(&rows, &CgroupStats::default(), 2.0, &healthy);
    }
    // web burns CPU, cron fails its writes with ENOSPC.
    let rows = [row("web", 1900, 10, 0), row("cron", 10, 10, 500)];
    let cpu = verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 8.0)]);
    let named = ranker
        .window(&rows, &CgroupStats::default(), 2.0, &cpu)
        .unwrap();
    assert_eq!(named.culprits[0].workload.name, "web");
    assert_eq!(named.culprits[0].signal, Signal::OncpuTime);
    assert!(named.culprits.iter().all(|b| b.workload.name != "cron"));
    // Each verdict below is an episode of its own: a healthy window ends the one before.
    let calm = [row("web", 100, 10, 0), row("cron", 10, 10, 0)];
    ranker.window(&calm, &CgroupStats::default(), 2.0, &healthy);
    let errors = verdict(NodeState::Degraded, &[("syscall_enospc_per_s", 30.0)]);
    let named = ranker
        .window(&rows, &CgroupStats::default(), 2.0, &errors)
        .unwrap();
    assert_eq!(named.culprits.len(), 1);
    assert_eq!(
        named.culprits[0].to_string(),
        "100% of syscall errors: cron"
    );
    assert_eq!(named.culprits[0].rate, 250.0);
    ranker.window(&calm, &CgroupStats::default(), 2.0, &healthy);
    // Both moved: the larger z leads.
    let both = verdict(
        NodeState::Degraded,
        &[("syscall_enospc_per_s", 30.0), ("psi_cpu_some_pct", 2.0)],
    );
    let named = ranker
        .window(&rows, &CgroupStats::default(), 2.0, &both)
        .unwrap();
    let order = culprit_names(&named);
    assert_eq!(order, vec!["cron", "web"]);
}

/// A job rereading a file in a tight memory limit: reclaim all the time, no OOM kill. The
/// job stalls in direct reclaim because it allocates; the service, steady, does not. The
/// job is named by its reclaim time (once with OOM kills alone, no one was named).
#[test]
fn memory_pressure_without_kills_names_the_workload_in_reclaim() {
    let reclaiming = |name: &str, stall_ms: u64| {
        let mut row = row(name, 100, 10, 0);
        row.delta.reclaim_stall_ns = stall_ms * 1_000_000;
        row
    };
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for _ in 0..10 {
        let rows = [reclaiming("job", 0), reclaiming("service", 0)];
        ranker.window(&rows, &CgroupStats::default(), 2.0, &healthy);
    }
    let rows = [reclaiming("job", 180), reclaiming("service", 0)];
    let degraded = verdict(NodeState::Degraded, &[("mem_reclaims_per_s", 16.0)]);
    let named = ranker
        .window(&rows, &CgroupStats::default(), 2.0, &degraded)
        .expect("attributed");
    assert_eq!(named.culprits.len(), 1, "{named:?}");
    assert_eq!(named.culprits[0].to_string(), "100% of reclaim stalls: job");
    assert_eq!(named.victims[0].workload.name, "job");
}

#[test]
fn healthy_windows_name_no_one_and_steady_volumes_earn_no_blame() {
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for n in 0..10 {
        let rows = [row("a", 100 + n % 3, 50, 0), row("b", 200, 80 + n % 2, 0)];
        assert!(
            ranker
                .window(&rows, &CgroupStats::default(), 1.0, &healthy)
                .is_none()
        );
    }
    // Degraded, but no workload moved beyond its noise: nobody is named.
    let rows = [row("a", 102, 50, 0), row("b", 200, 81, 0)];
    let degraded = verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 5.0)]);
    let attribution = ranker
        .window(&rows, &CgroupStats::default(), 1.0, &degraded)
        .unwrap();
    assert_eq!(attribution, Attribution::default());
}

#[test]
fn only_the_top_three_are_named_and_a_new_workload_starts_from_zero() {
    let mut ranker = CulpritRanker::new();
    let rows: Vec<WorkloadWindow> = (1..=5)
        .map(|n| row(&format!("w{n}"), 0, n * 100, 0))
        .collect();
    let degraded = verdict(NodeState::Degraded, &[("block_latency_p99_us", 9.0)]);
    let attribution = ranker
        .window(&rows, &CgroupStats::default(), 1.0, &degraded)
        .unwrap();
    let named: Vec<(String, u64)> = attribution
        .culprits
        .iter()
        .map(|b| (b.workload.name.clone(), (b.share * 1500.0).round() as u64))
        .collect();
    assert_eq!(
        named,
        vec![("w5".into(), 500), ("w4".into(), 400), ("w3".into(), 300)]
    );
}

/// A writer floods the disk for five windows, then stops; the node recovers. In the
/// windows after, a steady neighbour jitters: a window held degraded by hysteresis (not
/// anomalous itself) names the episode's writer, not the neighbour's jitter that its
/// normal explanation happens to point to; and a backlog's anomalous windows, in which the
/// neighbour's I/O rises a little, do not outweigh the fault.
#[test]
fn a_recovering_node_names_the_episodes_culprit_not_a_neighbours_jitter() {
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for _ in 0..10 {
        let rows = [row("writer", 10, 0, 0), row("neighbour", 100, 5, 0)];
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
    }
    let fault = verdict(NodeState::Degraded, &[("block_latency_p99_us", 20.0)]);
    for _ in 0..5 {
        let rows = [row("writer", 10, 2000, 0), row("neighbour", 100, 5, 0)];
        let named = ranker
            .window(&rows, &CgroupStats::default(), 1.0, &fault)
            .expect("attributed");
        assert_eq!(named.culprits.len(), 1, "{named:?}");
        assert_eq!(named.culprits[0].workload.name, "writer");
    }
    // The backlog drains: still anomalous, the writer idle, the neighbour's I/O up a little.
    let draining = verdict(NodeState::Degraded, &[("block_latency_p99_us", 6.0)]);
    for _ in 0..2 {
        let rows = [row("writer", 10, 0, 0), row("neighbour", 100, 25, 0)];
        let named = ranker
            .window(&rows, &CgroupStats::default(), 1.0, &draining)
            .expect("attributed");
        let names = culprit_names(&named);
        assert_eq!(names, vec!["writer"], "{named:?}");
    }
    // Normal again but held degraded: the neighbour's CPU jitters over its steady baseline
    // (a deviation of 0, so any rise is beyond it), which a normal window's small
    // explanation points to. Ranked alone, that window named the neighbour with 100%.
    let held = Verdict {
        anomalous: false,
        ..verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 1.2)])
    };
    let rows = [row("writer", 10, 0, 0), row("neighbour", 130, 5, 0)];
    let named = ranker
        .window(&rows, &CgroupStats::default(), 1.0, &held)
        .expect("still degraded: attributed");
    let names = culprit_names(&named);
    assert_eq!(names, vec!["writer"], "{named:?}");
    // Healthy: the episode is over, and the next one starts from nothing.
    assert_eq!(
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy),
        None
    );
    let cpu = verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 8.0)]);
    let rows = [row("writer", 10, 0, 0), row("neighbour", 900, 5, 0)];
    let named = ranker
        .window(&rows, &CgroupStats::default(), 1.0, &cpu)
        .expect("attributed");
    let names = culprit_names(&named);
    assert_eq!(names, vec!["neighbour"], "{named:?}");
}

/// One long episode whose cause changes: the disk writer stops, a CPU hog starts. The
/// earlier rises fade ([`EPISODE_DECAY`]): the hog leads within four windows.
#[test]
fn a_cause_that_changes_within_an_episode_leads_after_a_few_windows() {
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for _ in 0..10 {
        let rows = [row("writer", 10, 0, 0), row("hog", 10, 0, 0)];
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
    }
    let disk = verdict(NodeState::Degraded, &[("block_latency_p99_us", 20.0)]);
    for _ in 0..5 {
        let rows = [row("writer", 10, 2000, 0), row("hog", 10, 0, 0)];
        ranker.window(&rows, &CgroupStats::default(), 1.0, &disk);
    }
    let cpu = verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 10.0)]);
    let first: Vec<String> = (0..6)
        .map(|_| {
            let rows = [row("writer", 10, 0, 0), row("hog", 900, 0, 0)];
            let named = ranker
                .window(&rows, &CgroupStats::default(), 1.0, &cpu)
                .expect("attributed");
            named.culprits[0].workload.name.clone()
        })
        .collect();
    assert_eq!(
        first,
        vec!["writer", "writer", "writer", "hog", "hog", "hog"],
        "who leads, window by window"
    );
}

/// Seen end to end: I/O pressure at +5.5 and +3.7, and in third place CPU pressure at +0.02
/// (judged on rises only, a feature that did not rise lists at about 0). A steady neighbour's
/// CPU jitter was 100% of the node's on-CPU rise and was named, first in `diagnose`, beside
/// the writer. A feature that did not move points to no signal, and a workload is named by
/// its weighted share of the verdict's signals.
#[test]
fn a_feature_that_did_not_move_names_no_one() {
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    for _ in 0..10 {
        let rows = [
            row("writer", 10, 0, 0),
            row("conmon", 5, 10, 0),
            row("neighbour", 100, 0, 0),
        ];
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
    }
    let rows = [
        row("writer", 10, 200, 0),
        row("conmon", 5, 110, 0),
        row("neighbour", 104, 0, 0),
    ];
    let pressure = verdict(
        NodeState::Degraded,
        &[
            ("psi_io_some_pct", 5.5),
            ("psi_io_full_pct", 3.7),
            ("psi_cpu_some_pct", 0.02),
        ],
    );
    let named = ranker
        .window(&rows, &CgroupStats::default(), 1.0, &pressure)
        .expect("attributed");
    let culprits: Vec<String> = named.culprits.iter().map(ToString::to_string).collect();
    assert_eq!(
        culprits,
        vec!["67% of I/O issued: writer", "33% of I/O issued: conmon"]
    );
    // A second signal that moved, but little beside the first: 100% of it is a small share
    // of the verdict (1.2 of 26.2, 4.6%), under the bar.
    let mut ranker = CulpritRanker::new();
    for _ in 0..10 {
        let rows = [row("writer", 10, 0, 0), row("neighbour", 100, 0, 0)];
        ranker.window(&rows, &CgroupStats::default(), 1.0, &healthy);
    }
    let rows = [row("writer", 10, 300, 0), row("neighbour", 104, 0, 0)];
    let mostly_io = verdict(
        NodeState::Degraded,
        &[("block_latency_p99_us", 25.0), ("psi_cpu_some_pct", 1.2)],
    );
    let named = ranker
        .window(&rows, &CgroupStats::default(), 1.0, &mostly_io)
        .expect("attributed");
    let names = culprit_names(&named);
    assert_eq!(names, vec!["writer"], "{named:?}");
}

#[test]
fn a_signals_slot_is_its_place_in_all() {
    for (slot, signal) in Signal::ALL.iter().enumerate() {
        assert_eq!(signal.slot(), slot, "{signal:?}");
    }
}

#[test]
fn every_moved_feature_the_baseline_judges_maps_to_signals() {
    let judged: Vec<&str> = crate::window::record::WindowRecord::feature_names()
        .filter(|feature| {
            model::signals::JUDGED_FIELDS
                .iter()
                .any(|pattern| field_matches(pattern, feature))
        })
        .collect();
    assert!(judged.len() > 10, "{judged:?}");
    for feature in judged {
        assert!(
            FEATURE_SIGNALS
                .iter()
                .any(|(p, _, _)| field_matches(p, feature)),
            "{feature} maps to no per-cgroup signal"
        );
    }
}

/// More workloads than the bound: what is dropped is counted, in the baselines and in an
/// episode, never silently.
#[test]
fn workloads_past_the_bound_are_counted_when_dropped() {
    let over = 10;
    let names: Vec<String> = (0..MAX_WORKLOADS + over).map(|i| format!("w{i}")).collect();
    let quiet: Vec<WorkloadWindow> = names.iter().map(|name| row(name, 1, 0, 0)).collect();
    let mut ranker = CulpritRanker::new();
    let healthy = verdict(NodeState::Healthy, &[]);
    let windows = CONFIRM_AFTER + 2;
    for _ in 0..windows {
        ranker.window(&quiet, &CgroupStats::default(), 1.0, &healthy);
    }
    let learned = (windows - CONFIRM_AFTER) as u64;
    assert_eq!(ranker.tracked(), MAX_WORKLOADS);
    // Each learned window drops at least `over` (the workloads it brings back drop others).
    assert!(
        ranker.baselines_evicted >= over as u64 * learned,
        "{} evicted",
        ranker.baselines_evicted
    );
    assert_eq!(ranker.episode_workloads_evicted, 0);

    let busy: Vec<WorkloadWindow> = names.iter().map(|name| row(name, 500, 0, 0)).collect();
    let degraded = verdict(NodeState::Degraded, &[("psi_cpu_some_pct", 9.0)]);
    ranker
        .window(&busy, &CgroupStats::default(), 1.0, &degraded)
        .expect("a degraded window is attributed");
    assert_eq!(ranker.episode_workloads_evicted, over as u64);
}
