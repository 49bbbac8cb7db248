//! The hiccup probe: a thread that sleeps 1 ms in a loop and records by how much each sleep
//! overshot. On a noisy two-core virtual machine the hypervisor stalls threads for several
//! milliseconds; the probe measures those stalls during the run so that end-to-end latency
//! can be read next to what the machine itself did.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::new_histogram;
use runtime::thread::pin_current_thread;

const PROBE_SLEEP: Duration = Duration::from_millis(1);

pub struct HiccupProbe {
    stop: Arc<AtomicBool>,
    /// Largest overshoot since the last `take_interval_max_us`, for the progress line.
    interval_max_us: Arc<AtomicU64>,
    thread: JoinHandle<Histogram<u64>>,
}

impl HiccupProbe {
    /// Starts the probe thread, pinned to `cpu` when given (pin it where the client runs so it
    /// sees the same stalls the client sees).
    pub fn start(cpu: Option<usize>) -> std::io::Result<HiccupProbe> {
        let stop = Arc::new(AtomicBool::new(false));
        let interval_max_us = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let interval_max_us = Arc::clone(&interval_max_us);
            std::thread::Builder::new()
                .name("hiccup-probe".into())
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(error) = pin_current_thread(cpu) {
                            log::warn!("hiccup probe: cannot pin to cpu {cpu}: {error}");
                        }
                    }
                    let mut histogram = new_histogram();
                    while !stop.load(Ordering::Relaxed) {
                        let before = Instant::now();
                        std::thread::sleep(PROBE_SLEEP);
                        let overshoot = before.elapsed().saturating_sub(PROBE_SLEEP);
                        let overshoot_us = overshoot.as_micros() as u64;
                        histogram.saturating_record(overshoot_us.max(1));
                        interval_max_us.fetch_max(overshoot_us, Ordering::Relaxed);
                    }
                    histogram
                })?
        };
        Ok(HiccupProbe {
            stop,
            interval_max_us,
            thread,
        })
    }

    /// Largest stall seen since the previous call, in microseconds.
    pub fn take_interval_max_us(&self) -> u64 {
        self.interval_max_us.swap(0, Ordering::Relaxed)
    }

    /// Stops the probe and returns the overshoot histogram in microseconds.
    pub fn stop(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| new_histogram())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_records_one_sample_per_sleep() {
        let probe = HiccupProbe::start(None).expect("start probe");
        std::thread::sleep(Duration::from_millis(50));
        let histogram = probe.stop();
        // 50 ms of 1 ms sleeps: at least a handful of samples even on a stalling machine, and
        // never more than one per millisecond.
        assert!(histogram.len() >= 5, "only {} samples", histogram.len());
        assert!(
            histogram.len() <= 60,
            "{} samples in 50 ms",
            histogram.len()
        );
    }
}
