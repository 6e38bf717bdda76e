//! Block I/O counters against the real kernel: known direct I/O on a loop device made by the
//! test must show up, exactly, in that device's counters.

use collector::{
    kernel::{HookOutcome, KernelCollector, KernelConfig},
    window::DeviceWindow,
};
use collector_common::{BlockDevStats, op};
use integration_test::{LoopDevice, direct_reads, direct_writes, privileged};

/// Metadata or probing I/O the kernel may add on a fresh loop device (partition scan, udev).
const TOLERANCE_REQUESTS: u64 = 16;

fn device_stats(kernel: &KernelCollector, dev: u32) -> BlockDevStats {
    kernel
        .block_snapshot()
        .expect("reading block stats")
        .get(&dev)
        .copied()
        .unwrap_or(BlockDevStats::ZERO)
}

#[test]
fn direct_io_on_a_loop_device_is_counted_exactly() {
    if !privileged("direct_io_on_a_loop_device_is_counted_exactly") {
        return;
    }
    let device = LoopDevice::new(64 << 20);
    let kernel = KernelCollector::load(&KernelConfig::default()).expect("loading programs");
    for report in kernel.attach_reports() {
        assert_eq!(
            report.outcome,
            HookOutcome::Attached,
            "{} on this kernel",
            report.hook
        );
    }
    let file = device.open_direct();
    let before = device_stats(&kernel, device.kernel_dev());

    const WRITES: u64 = 256;
    const WRITE_BLOCK: usize = 4096;
    const READS: u64 = 96;
    const READ_BLOCK: usize = 16384;
    direct_writes(&file, WRITE_BLOCK, WRITES);
    direct_reads(&file, READ_BLOCK, READS);

    let after = device_stats(&kernel, device.kernel_dev());
    let window = DeviceWindow::between(&before, &after);

    let writes = window.ops[op::WRITE];
    let reads = window.ops[op::READ];
    assert!(
        (WRITES..=WRITES + TOLERANCE_REQUESTS).contains(&writes),
        "writes counted {writes}, made {WRITES}"
    );
    assert!(
        (READS..=READS + TOLERANCE_REQUESTS).contains(&reads),
        "reads counted {reads}, made {READS}"
    );
    let write_bytes = window.bytes[op::WRITE];
    let read_bytes = window.bytes[op::READ];
    let written = WRITES * WRITE_BYTES;
    let read = READS * READ_BLOCK as u64;
    assert!(
        (written..=written + TOLERANCE_REQUESTS * 4096).contains(&write_bytes),
        "write bytes {write_bytes}, wrote {written}"
    );
    assert!(
        (read..=read + TOLERANCE_REQUESTS * 65536).contains(&read_bytes),
        "read bytes {read_bytes}, read {read}"
    );
    // Every request we made completed, was timed and landed in the histogram.
    let timed: u64 = window.latency_hist.iter().sum();
    assert!(
        window.completed >= WRITES + READS,
        "completed {}",
        window.completed
    );
    assert_eq!(timed, window.completed, "histogram holds every completion");
    assert!(window.latency_sum_ns > 0);
    let p50 = window
        .latency_quantile_us(0.5)
        .expect("histogram populated");
    assert!(p50 > 0.0);
    assert_eq!(
        window.inflight, 0,
        "nothing in flight after synchronous I/O"
    );
    assert_eq!(window.errors, 0);

    // Names come from sysfs, not numbers.
    let mut names = collector::window::devices::DeviceNames::default();
    assert_eq!(names.name(device.kernel_dev()), device.name());
}

const WRITE_BYTES: u64 = 4096;

#[test]
fn slow_io_events_lost_to_a_full_ring_buffer_are_counted() {
    if !privileged("slow_io_events_lost_to_a_full_ring_buffer_are_counted") {
        return;
    }
    let device = LoopDevice::new(16 << 20);
    // Threshold 0: every completion is an event; one page of ring buffer holds ~100 of them,
    // and nobody reads it while we make 1000.
    let config = KernelConfig {
        slow_io_threshold_ns: 0,
        ringbuf_bytes: 4096,
        ..KernelConfig::default()
    };
    let mut kernel = KernelCollector::load(&config).expect("loading programs");
    let mut ring = kernel.take_slow_io_events().expect("ring buffer");
    let file = device.open_direct();
    direct_reads(&file, 4096, 1000);

    // Stop producing, then count: everything produced is now either in the ring or lost.
    kernel.detach();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let counters = kernel.counters().expect("counters");
    let produced = counters[collector_common::counter::SLOW_IO_PRODUCED as usize];
    let lost = counters[collector_common::counter::SLOW_IO_LOST as usize];
    let mut received = 0u64;
    let mut from_our_device = 0u64;
    while let Some(item) = ring.next() {
        let event = collector::daemon::parse_slow_io_event(&item).expect("whole event");
        received += 1;
        if event.dev == device.kernel_dev() {
            from_our_device += 1;
        }
    }
    // Each of our 1000 reads completes once and was issued after we attached.
    assert!(
        produced >= 1000,
        "produced {produced}; completions with no issue seen {}, issues the in-flight table \
         could not take {}, devices the device table could not take {}",
        counters[collector_common::counter::COMPLETE_UNMATCHED as usize],
        counters[collector_common::counter::INFLIGHT_TABLE_FULL as usize],
        counters[collector_common::counter::DEVICE_TABLE_FULL as usize],
    );
    assert!(
        lost > 0,
        "a one-page ring buffer must overflow (lost {lost})"
    );
    assert!(from_our_device > 0, "the ring held none of our events");
    assert_eq!(
        lost,
        produced - received,
        "lost ({lost}) must equal produced ({produced}) minus received ({received})"
    );
}
