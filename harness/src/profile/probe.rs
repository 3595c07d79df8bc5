//! One small trait for everything the profiler measures around a region of work, like
//! criterion's `Measurement`: [`Probe::start`] before, [`Probe::stop`] after, and a
//! [`Figure`] with its unit and its source (measured, estimated or missing, never a silent
//! zero). [`Region`] runs the probes a cell's passes are measured with, so every cell (text
//! tasks, perplexity, generation) is measured the same way.

use std::time::Instant;

use super::energy::{EnergyMeter, EnergyStart};
use super::memory;

/// Where a figure came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from a counter (`rapl`, `nvml`, `clock`, `VmHWM`).
    Measured(String),
    /// Derived from something measured (energy from CPU time x watts per core).
    Estimated,
    /// Could not be had; `value` is `None`.
    Missing,
}

impl Source {
    /// The label results files use (`rapl`, `nvml`, `estimated`, `missing`, ...).
    pub fn label(&self) -> &str {
        match self {
            Source::Measured(counter) => counter,
            Source::Estimated => "estimated",
            Source::Missing => "missing",
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub value: Option<f64>,
    pub unit: &'static str,
    pub source: Source,
    /// How it was obtained, or why it is missing.
    pub detail: String,
}

/// Start/stop around a measured region.
pub trait Probe {
    type Start;
    fn start(&self) -> Self::Start;
    fn stop(&self, start: Self::Start) -> Figure;
}

/// Wall-clock seconds.
pub struct WallClock;

impl Probe for WallClock {
    type Start = Instant;
    fn start(&self) -> Instant {
        Instant::now()
    }
    fn stop(&self, start: Instant) -> Figure {
        Figure {
            value: Some(start.elapsed().as_secs_f64()),
            unit: "s",
            source: Source::Measured("clock".into()),
            detail: String::new(),
        }
    }
}

/// Peak resident memory of the process over the region: the kernel's `VmHWM`, reset at the
/// start where Linux allows (`detail` is then `phase`), else the process's peak so far
/// (`process`). Where `/proc` is absent it is `getrusage`'s process peak.
pub struct PeakRssProbe;

impl Probe for PeakRssProbe {
    type Start = bool;
    fn start(&self) -> bool {
        memory::reset_peak()
    }
    fn stop(&self, reset: bool) -> Figure {
        let peak = memory::peak_rss();
        Figure {
            value: peak.map(|(b, _)| b as f64),
            unit: "bytes",
            source: match peak {
                Some((_, counter)) => Source::Measured(counter.into()),
                None => Source::Missing,
            },
            // getrusage's peak cannot be reset: it is always the process's.
            detail: if reset && matches!(peak, Some((_, "VmHWM"))) {
                "phase"
            } else {
                "process"
            }
            .into(),
        }
    }
}

impl Probe for EnergyMeter {
    type Start = EnergyStart;
    fn start(&self) -> EnergyStart {
        EnergyMeter::start(self)
    }
    fn stop(&self, start: EnergyStart) -> Figure {
        let reading = EnergyMeter::stop(self, start);
        Figure {
            value: reading.joules,
            unit: "J",
            source: match reading.source.as_str() {
                "estimated" => Source::Estimated,
                "missing" => Source::Missing,
                counter => Source::Measured(counter.to_string()),
            },
            detail: reading.detail,
        }
    }
}

/// Time, peak memory and energy of one region.
pub struct RegionFigures {
    pub seconds: f64,
    pub peak_rss: Figure,
    pub energy: Figure,
}

/// The probes of one region, started together.
pub struct Region<'a> {
    meter: &'a EnergyMeter,
    clock: Instant,
    rss: bool,
    energy: EnergyStart,
}

impl<'a> Region<'a> {
    /// Start measuring: the peak-memory counter is reset first, the clock started last.
    pub fn start(meter: &'a EnergyMeter) -> Self {
        let rss = PeakRssProbe.start();
        let energy = Probe::start(meter);
        Region {
            meter,
            clock: WallClock.start(),
            rss,
            energy,
        }
    }

    /// Stop every probe, the clock first.
    pub fn stop(self) -> RegionFigures {
        let seconds = WallClock.stop(self.clock).value.unwrap_or(0.0);
        let energy = Probe::stop(self.meter, self.energy);
        RegionFigures {
            seconds,
            peak_rss: PeakRssProbe.stop(self.rss),
            energy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_times_and_labels_every_figure() {
        let meter = EnergyMeter::detect(std::path::Path::new("/nonexistent"), 5.0);
        let region = Region::start(&meter);
        let block = vec![1u8; 32 << 20];
        std::hint::black_box(&block);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = region.stop();
        assert!(f.seconds >= 0.02, "{}", f.seconds);
        // No RAPL under /nonexistent: CPU time x watts, labelled as an estimate.
        assert_eq!(f.energy.source, Source::Estimated);
        assert_eq!(f.energy.unit, "J");
        assert_eq!(f.peak_rss.unit, "bytes");
        if let Some(peak) = f.peak_rss.value {
            assert!(peak >= (32 << 20) as f64, "{peak}");
            assert_eq!(f.peak_rss.source, Source::Measured("VmHWM".into()));
        } else {
            assert_eq!(f.peak_rss.source, Source::Missing);
        }
    }

    #[test]
    fn an_unavailable_meter_gives_a_missing_figure_not_zero() {
        let meter = EnergyMeter::Unavailable("profiling is off".into());
        let f = Probe::stop(&meter, Probe::start(&meter));
        assert_eq!(f.value, None);
        assert_eq!(f.source.label(), "missing");
        assert!(f.detail.contains("profiling is off"), "{}", f.detail);
    }
}
