//! What the kernel programs push to the daemon: slow-I/O events through the ring buffer, and
//! their aya-log records.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use aya::maps::{MapData, RingBuf};
use collector_common::SlowIoEvent;
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{debug, warn};

use crate::{kernel::KernelLogger, window::devices::DeviceNames};

/// Slow-I/O events received from the ring buffer since the last window.
#[derive(Debug, Default, Clone)]
pub struct SlowIoTally {
    pub received: u64,
    pub per_device: HashMap<u32, u64>,
}

impl SlowIoTally {
    pub fn add(&mut self, event: &SlowIoEvent) {
        self.received += 1;
        *self.per_device.entry(event.dev).or_default() += 1;
    }
}

/// Reads one [`SlowIoEvent`] out of a ring-buffer item, `None` if it is too short (a kernel and
/// daemon built from different sources).
pub fn parse_slow_io_event(bytes: &[u8]) -> Option<SlowIoEvent> {
    if bytes.len() < size_of::<SlowIoEvent>() {
        return None;
    }
    // SAFETY: the length is checked above and SlowIoEvent is plain integers (every bit pattern
    // is valid); read_unaligned because ring-buffer items are only 8-byte aligned by contract.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SlowIoEvent>()) })
}

/// Drains the ring buffer into `tally` whenever the kernel signals data.
pub(super) async fn read_slow_io_events(ring: RingBuf<MapData>, tally: Arc<Mutex<SlowIoTally>>) {
    // SAFETY: the RingBuf owns its map's file descriptor, which stays open and unchanged until
    // the RingBuf (and so the AsyncFd) is dropped.
    let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(ring) => ring,
        Err(err) => {
            warn!("cannot poll the slow-I/O ring buffer, slow-I/O events disabled: {err}");
            return;
        }
    };
    let mut names = DeviceNames::default();
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(guard) => guard,
            Err(err) => {
                warn!("slow-I/O ring buffer poll failed, events disabled: {err}");
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            match parse_slow_io_event(&item) {
                Some(event) => {
                    debug!(
                        device = %names.name(event.dev),
                        latency_us = event.latency_ns / 1000,
                        op = collector_common::op::NAMES
                            .get(event.op as usize)
                            .copied()
                            .unwrap_or("?"),
                        bytes = event.bytes,
                        error = event.error,
                        "slow I/O"
                    );
                    tally.lock().expect("tally lock").add(&event);
                }
                None => warn!("short slow-I/O event of {} bytes ignored", item.len()),
            }
        }
        guard.clear_ready();
    }
}

/// Forwards aya-log records from the kernel programs to our log.
pub(super) async fn forward_kernel_logs(logger: KernelLogger) {
    // SAFETY: as for the ring buffer above, the logger owns its map's file descriptor.
    let Ok(mut logger) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
    else {
        return;
    };
    loop {
        let Ok(mut guard) = logger.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_io_events_parse_and_short_items_are_refused() {
        let event = SlowIoEvent {
            dev: 7 << 20,
            op: 1,
            sector: 42,
            latency_ns: 12_000_000,
            bytes: 4096,
            error: -5,
        };
        // SAFETY: viewing a plain-integer struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&event as *const SlowIoEvent).cast::<u8>(),
                size_of::<SlowIoEvent>(),
            )
        };
        assert_eq!(parse_slow_io_event(bytes), Some(event));
        assert_eq!(parse_slow_io_event(&bytes[..bytes.len() - 1]), None);
        let mut tally = SlowIoTally::default();
        tally.add(&event);
        tally.add(&event);
        assert_eq!(tally.received, 2);
        assert_eq!(tally.per_device[&(7 << 20)], 2);
    }
}
