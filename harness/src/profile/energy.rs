//! Energy probes. Every figure carries its source: `rapl` (measured by the CPU's RAPL counters
//! under `/sys/class/powercap`), `estimated` (CPU-seconds times watts per core), or `missing`
//! (nothing could be read). A missing source is reported as missing, never as zero, and the
//! harness never falls back silently: the chosen source is written next to each figure.
//!
//! On a GPU (`--device cuda`), the source is `nvml`: the GPU's total-energy counter read
//! through NVML (the `nvml` feature, on with `cuda`). Without it a GPU run reports energy as
//! missing rather than passing off CPU time as the GPU's energy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default power per busy core for the estimate, in watts. Source: codecarbon's fallback for
/// an unknown CPU is a TDP of 85 W (`codecarbon/core/cpu.py`, `DEFAULT_CPU_POWER`); spread over
/// an assumed 8 cores that is 10.6 W per core at full load. Override with `--watts-per-core`.
pub const DEFAULT_WATTS_PER_CORE: f64 = 10.6;

/// An energy figure and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    /// Joules over the measured region; `None` when `source` is `missing`.
    pub joules: Option<f64>,
    /// `rapl`, `estimated` or `missing`.
    pub source: String,
    /// How it was obtained (zones read, watts per core assumed, or why it is missing).
    pub detail: String,
}

/// Start/stop around a measured region, like criterion's `Measurement`.
pub trait EnergyProbe {
    type Start;
    fn start(&self) -> Option<Self::Start>;
    fn stop(&self, start: Self::Start) -> EnergyReading;
}

/// RAPL package zones under a powercap root (`/sys/class/powercap` on Linux).
pub struct RaplProbe {
    zones: Vec<PathBuf>,
}

/// One counter reading per zone: (energy in microjoules, wrap range in microjoules).
pub type RaplStart = Vec<(u64, u64)>;

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl RaplProbe {
    /// Find the top-level package zones (`intel-rapl:N`, not their `intel-rapl:N:M` subzones,
    /// which are parts of the package and would be counted twice). `None` when there are none
    /// or they cannot be read (RAPL is often root-only).
    pub fn discover(root: &Path) -> Option<Self> {
        let mut zones: Vec<PathBuf> = std::fs::read_dir(root)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut parts = name.split(':');
                matches!(
                    (parts.next(), parts.next(), parts.next()),
                    (Some(_), Some(_), None)
                ) && name.contains("rapl")
            })
            .filter(|p| read_u64(&p.join("energy_uj")).is_some())
            .collect();
        zones.sort();
        (!zones.is_empty()).then_some(RaplProbe { zones })
    }

    fn read(&self) -> Option<RaplStart> {
        self.zones
            .iter()
            .map(|z| {
                let e = read_u64(&z.join("energy_uj"))?;
                let range = read_u64(&z.join("max_energy_range_uj")).unwrap_or(u64::MAX);
                Some((e, range))
            })
            .collect()
    }
}

/// Microjoules between two readings of a counter that wraps to 0 after `range`.
pub fn rapl_delta_uj(start: u64, end: u64, range: u64) -> u64 {
    if end >= start {
        end - start
    } else {
        range - start + end
    }
}

impl EnergyProbe for RaplProbe {
    type Start = RaplStart;
    fn start(&self) -> Option<RaplStart> {
        self.read()
    }
    fn stop(&self, start: RaplStart) -> EnergyReading {
        match self.read() {
            Some(end) => {
                let uj: u64 = start
                    .iter()
                    .zip(&end)
                    .map(|((s, range), (e, _))| rapl_delta_uj(*s, *e, *range))
                    .sum();
                EnergyReading {
                    joules: Some(uj as f64 / 1e6),
                    source: "rapl".into(),
                    detail: format!("{} package zone(s)", self.zones.len()),
                }
            }
            None => missing("RAPL counters became unreadable"),
        }
    }
}

/// A reading that says why there is none.
pub fn missing(why: &str) -> EnergyReading {
    EnergyReading {
        joules: None,
        source: "missing".into(),
        detail: why.into(),
    }
}

/// CPU time of this process (user + system), seconds, from getrusage.
pub fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0 means the struct was written.
    let u = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(u.ru_utime) + secs(u.ru_stime))
}

/// Energy estimated from CPU-seconds times watts per busy core.
pub struct CpuTimeEstimate {
    pub watts_per_core: f64,
}

impl EnergyProbe for CpuTimeEstimate {
    type Start = f64;
    fn start(&self) -> Option<f64> {
        process_cpu_seconds()
    }
    fn stop(&self, start: f64) -> EnergyReading {
        match process_cpu_seconds() {
            Some(end) => EnergyReading {
                joules: Some((end - start).max(0.0) * self.watts_per_core),
                source: "estimated".into(),
                detail: format!(
                    "{:.2} CPU-seconds x {} W per core (no RAPL counters readable)",
                    end - start,
                    self.watts_per_core
                ),
            },
            None => missing("getrusage failed"),
        }
    }
}

/// The GPU's total-energy counter through NVML (millijoules since the driver loaded).
#[cfg(feature = "nvml")]
pub struct NvmlProbe {
    nvml: nvml_wrapper::Nvml,
    index: u32,
}

#[cfg(feature = "nvml")]
impl NvmlProbe {
    pub fn new(index: u32) -> Result<Self, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
        nvml.device_by_index(index)
            .and_then(|d| d.total_energy_consumption())
            .map_err(|e| format!("GPU {index} has no readable NVML energy counter: {e}"))?;
        Ok(NvmlProbe { nvml, index })
    }

    /// Device memory in use now, bytes.
    pub fn memory_used(&self) -> Option<u64> {
        Some(
            self.nvml
                .device_by_index(self.index)
                .ok()?
                .memory_info()
                .ok()?
                .used,
        )
    }

    fn read_mj(&self) -> Option<u64> {
        self.nvml
            .device_by_index(self.index)
            .ok()?
            .total_energy_consumption()
            .ok()
    }
}

#[cfg(feature = "nvml")]
impl EnergyProbe for NvmlProbe {
    type Start = u64;
    fn start(&self) -> Option<u64> {
        self.read_mj()
    }
    fn stop(&self, start: u64) -> EnergyReading {
        match self.read_mj() {
            Some(end) => EnergyReading {
                joules: Some(end.saturating_sub(start) as f64 / 1e3),
                source: "nvml".into(),
                detail: format!("GPU {} total energy counter", self.index),
            },
            None => missing("NVML counter became unreadable"),
        }
    }
}

/// The best energy source for the device: NVML on a GPU; RAPL when readable on the CPU, else
/// the CPU-time estimate.
pub enum EnergyMeter {
    Rapl(RaplProbe),
    Estimate(CpuTimeEstimate),
    /// Boxed: the NVML handle is large and the meter is passed around by value.
    #[cfg(feature = "nvml")]
    Nvml(Box<NvmlProbe>),
    /// No source for this device; the reason is reported with every reading.
    Unavailable(String),
}

/// A started measurement.
pub enum EnergyStart {
    Rapl(RaplStart),
    Estimate(f64),
    #[cfg(feature = "nvml")]
    Nvml(u64),
    Missing(String),
}

impl EnergyMeter {
    /// The CPU meter: RAPL when readable, else the labelled estimate.
    pub fn detect(powercap_root: &Path, watts_per_core: f64) -> Self {
        match RaplProbe::discover(powercap_root) {
            Some(r) => EnergyMeter::Rapl(r),
            None => EnergyMeter::Estimate(CpuTimeEstimate { watts_per_core }),
        }
    }

    /// The meter for a device name (`cpu`, `cuda`, `cuda:N`, `metal`).
    pub fn for_device(device: &str, powercap_root: &Path, watts_per_core: f64) -> Self {
        if let Some(rest) = device.strip_prefix("cuda") {
            let index: u32 = rest.trim_start_matches(':').parse().unwrap_or(0);
            #[cfg(feature = "nvml")]
            return match NvmlProbe::new(index) {
                Ok(p) => EnergyMeter::Nvml(Box::new(p)),
                Err(why) => EnergyMeter::Unavailable(why),
            };
            #[cfg(not(feature = "nvml"))]
            return EnergyMeter::Unavailable(format!(
                "GPU {index} energy needs the nvml feature (cargo build --features harness/nvml)"
            ));
        }
        if device == "metal" {
            return EnergyMeter::Unavailable("no energy counter is read on Metal".into());
        }
        Self::detect(powercap_root, watts_per_core)
    }

    /// GPU memory in use now (NVML meters only).
    pub fn device_memory_used(&self) -> Option<u64> {
        match self {
            #[cfg(feature = "nvml")]
            EnergyMeter::Nvml(n) => n.memory_used(),
            _ => None,
        }
    }

    pub fn start(&self) -> EnergyStart {
        match self {
            EnergyMeter::Rapl(r) => r.start().map_or(
                EnergyStart::Missing("RAPL unreadable".into()),
                EnergyStart::Rapl,
            ),
            EnergyMeter::Estimate(e) => e.start().map_or(
                EnergyStart::Missing("getrusage failed".into()),
                EnergyStart::Estimate,
            ),
            #[cfg(feature = "nvml")]
            EnergyMeter::Nvml(n) => n.start().map_or(
                EnergyStart::Missing("NVML unreadable".into()),
                EnergyStart::Nvml,
            ),
            EnergyMeter::Unavailable(why) => EnergyStart::Missing(why.clone()),
        }
    }

    pub fn stop(&self, start: EnergyStart) -> EnergyReading {
        match (self, start) {
            (EnergyMeter::Rapl(r), EnergyStart::Rapl(s)) => r.stop(s),
            (EnergyMeter::Estimate(e), EnergyStart::Estimate(s)) => e.stop(s),
            #[cfg(feature = "nvml")]
            (EnergyMeter::Nvml(n), EnergyStart::Nvml(s)) => n.stop(s),
            (_, EnergyStart::Missing(why)) => missing(&why),
            _ => missing("probe mismatch"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(root: &Path, name: &str, energy: u64, range: u64) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{energy}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{range}\n")).unwrap();
    }

    #[test]
    fn delta_handles_wraparound() {
        assert_eq!(rapl_delta_uj(100, 350, 1000), 250);
        assert_eq!(rapl_delta_uj(900, 100, 1000), 200);
    }

    #[test]
    fn rapl_reads_package_zones_of_a_fake_tree_across_a_wrap() {
        let tmp = tempfile::tempdir().unwrap();
        zone(tmp.path(), "intel-rapl:0", 999_000_000, 1_000_000_000);
        zone(tmp.path(), "intel-rapl:1", 5_000_000, 1_000_000_000);
        // A subzone (part of package 0) must not be counted again.
        zone(tmp.path(), "intel-rapl:0:0", 1, 1_000_000_000);
        let probe = RaplProbe::discover(tmp.path()).unwrap();
        assert_eq!(probe.zones.len(), 2);
        let start = probe.start().unwrap();
        // Package 0 wraps: 999 J -> 1 J through 1000 J = 2 J. Package 1: 5 J -> 8 J = 3 J.
        zone(tmp.path(), "intel-rapl:0", 1_000_000, 1_000_000_000);
        zone(tmp.path(), "intel-rapl:1", 8_000_000, 1_000_000_000);
        let r = probe.stop(start);
        assert_eq!(r.source, "rapl");
        assert!((r.joules.unwrap() - 5.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn no_rapl_means_the_estimate_labelled_as_such() {
        let tmp = tempfile::tempdir().unwrap();
        let meter = EnergyMeter::detect(&tmp.path().join("absent"), 10.0);
        let start = meter.start();
        // Burn a little CPU so the estimate is positive.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let r = meter.stop(start);
        assert_eq!(r.source, "estimated");
        assert!(r.joules.unwrap() > 0.0);
        assert!(r.detail.contains("10 W per core"), "{}", r.detail);
    }

    #[test]
    fn a_gpu_without_an_energy_counter_reports_missing_with_the_reason() {
        // Without an NVIDIA driver, with or without the nvml feature, a CUDA device's energy is
        // missing with the reason, never the CPU estimate in disguise.
        if Path::new("/proc/driver/nvidia").exists() {
            return;
        }
        let meter = EnergyMeter::for_device("cuda:0", Path::new("/nonexistent"), 10.0);
        let r = meter.stop(meter.start());
        assert_eq!(r.source, "missing");
        assert_eq!(r.joules, None);
        assert!(r.detail.to_lowercase().contains("nvml"), "{}", r.detail);
    }

    #[test]
    fn missing_source_is_reported_as_missing_not_zero() {
        let meter = EnergyMeter::Estimate(CpuTimeEstimate {
            watts_per_core: 1.0,
        });
        let r = meter.stop(EnergyStart::Missing("getrusage failed".into()));
        assert_eq!(r.source, "missing");
        assert_eq!(r.joules, None);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["joules"].is_null());
    }
}
