//! The profiler: what a model costs on a task, measured the way optimum-benchmark and MLPerf
//! LoadGen measure (warm-up excluded, percentiles, a minimum number of iterations and a minimum
//! time), with every energy figure saying where it came from.
//!
//! Two passes per (model, task) cell:
//! 1. the DistilBERT protocol: one pass over the dev set at batch size 1, timing each example
//!    end to end (tokenise + forward + outputs) and its model forward alone;
//! 2. a throughput pass at the run's batch size: laps over the dev set, each lap the request
//!    the scoring makes (every split at once, sorted by length and padded per batch), until
//!    both the minimum batches and the minimum time are reached; energy and peak memory are
//!    read around it. The first lap's outputs are what the cell is scored on (issue 16: the
//!    dev set used to be encoded once more for the scores alone), so its answers are the
//!    scoring pass's own, bit for bit.

pub mod energy;
pub mod fingerprint;
pub mod flops;
pub mod latency;
pub mod memory;
pub mod probe;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use reports::Profile;

use crate::models::{Backend, Batched, TextInput};
use probe::Probe as _;
pub use tasks::request::RequestKind;

/// How hard to measure. [`ProfileSettings::full`] is the default; `--quick` is for smoke runs.
#[derive(Debug, Clone)]
pub struct ProfileSettings {
    /// Untimed examples before the batch-1 pass and untimed batches before the throughput pass.
    pub warmup: usize,
    pub min_iterations: usize,
    pub min_time_s: f64,
    /// Cap on examples in the batch-1 pass (`None`: the whole dev set).
    pub batch1_limit: Option<usize>,
    pub watts_per_core: f64,
    pub powercap_root: PathBuf,
    /// Draw progress bars on stderr (off unless stdout is a terminal and not `--quiet`).
    pub show_progress: bool,
}

impl ProfileSettings {
    /// At least 10 iterations and 10 s for throughput, as optimum-benchmark; whole dev set at
    /// batch size 1.
    pub fn full() -> Self {
        ProfileSettings {
            warmup: 3,
            min_iterations: 10,
            min_time_s: 10.0,
            batch1_limit: None,
            watts_per_core: energy::DEFAULT_WATTS_PER_CORE,
            powercap_root: PathBuf::from("/sys/class/powercap"),
            show_progress: false,
        }
    }

    /// Smoke-run settings: a few examples, a few iterations, no minimum time.
    pub fn quick() -> Self {
        ProfileSettings {
            warmup: 1,
            min_iterations: 2,
            min_time_s: 0.0,
            batch1_limit: Some(20),
            ..Self::full()
        }
    }

    /// A label for cache keys: settings that change the figures.
    pub fn key(&self) -> String {
        format!(
            "w{}i{}t{}b{:?}",
            self.warmup, self.min_iterations, self.min_time_s, self.batch1_limit
        )
    }
}

/// Ask the model for each example once: head outputs (a pair stays one input) or sentence
/// embeddings (a pair becomes two single-text inputs, `a` then `b`).
pub fn call(
    backend: &dyn Backend,
    task: &str,
    kind: RequestKind,
    examples: &[TextInput],
    batch_size: usize,
) -> Result<Batched> {
    match kind {
        RequestKind::Embed => {
            let singles: Vec<TextInput> = examples
                .iter()
                .flat_map(|e| {
                    std::iter::once(TextInput { a: e.a, b: None })
                        .chain(e.b.map(|b| TextInput { a: b, b: None }))
                })
                .collect();
            backend.embed(task, &singles, batch_size)
        }
        _ => backend.classify(task, examples, batch_size),
    }
}

/// What a cell's profile runs: one task's examples, split by split, asked as one kind of
/// request.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub task: &'a str,
    pub splits: &'a [Vec<TextInput<'a>>],
    pub kind: RequestKind,
}

/// A cell's profile and the outputs of the throughput pass's first lap, one per split: the
/// answers [`call`] gives for each split's examples at the run's batch size.
pub struct Profiled {
    pub profile: Profile,
    pub first_lap: Vec<Batched>,
}

/// Measure one model on one task's examples.
pub fn profile_cell(
    backend: &dyn Backend,
    work: Workload,
    batch_size: usize,
    settings: &ProfileSettings,
    meter: &energy::EnergyMeter,
    load_rss_bytes: Option<u64>,
) -> Result<Profiled> {
    let Workload { task, splits, kind } = work;
    let examples: Vec<TextInput> = splits.iter().flatten().copied().collect();
    anyhow::ensure!(!examples.is_empty(), "nothing to profile");
    // Peak memory over both passes; time and energy over the throughput pass.
    let peak = probe::PeakRssProbe.start();

    // Batch-1 pass (DistilBERT protocol), warm-up excluded.
    for ex in examples.iter().cycle().take(settings.warmup) {
        call(backend, task, kind, std::slice::from_ref(ex), 1)?;
    }
    let n1 = settings
        .batch1_limit
        .map_or(examples.len(), |l| l.min(examples.len()));
    let mut e2e_ms = Vec::with_capacity(n1);
    let mut fwd_ms = Vec::with_capacity(n1);
    let mut flops = 0.0;
    let mut tokens = 0usize;
    let bar = crate::progress::bar(settings.show_progress, n1 as u64, "batch-1 pass");
    for ex in &examples[..n1] {
        bar.inc(1);
        let started = Instant::now();
        let out = call(backend, task, kind, std::slice::from_ref(ex), 1)?;
        e2e_ms.push(started.elapsed().as_secs_f64() * 1e3);
        fwd_ms.push(out.forward_s * 1e3);
        tokens += out.token_counts.iter().sum::<usize>();
        if let Some(d) = backend.dims() {
            flops += out
                .token_counts
                .iter()
                .map(|&t| flops::encoder_flops(d, t))
                .sum::<f64>();
        }
    }
    bar.finish_and_clear();
    let batch1_pass_s = e2e_ms.iter().sum::<f64>() / 1e3;

    // Throughput pass at the run's batch size, under the energy meter: warm-up batches, then
    // laps.
    let bs = batch_size.max(1);
    let warm = &examples[..(settings.warmup * bs).min(examples.len())];
    if !warm.is_empty() {
        call(backend, task, kind, warm, bs)?;
    }
    // Each split's answers from the first lap (an empty split is never asked: its answer is
    // the empty default).
    let mut first_lap: Vec<Option<Batched>> = vec![None; splits.len()];
    let mut laps_per_s = Vec::new();
    let spinner = crate::progress::spinner(settings.show_progress, "throughput pass");
    let energy_start = probe::Probe::start(meter);
    let started = Instant::now();
    let (mut iterations, mut done, mut done_tokens) = (0usize, 0usize, 0usize);
    // On a GPU, a sampling thread polls NVML for the peak device memory of the pass; on the
    // CPU there is no thread (the kernel keeps the peak RSS itself).
    let sampling = meter.device_memory_used().is_some();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (peak_device, pass) = std::thread::scope(|scope| {
        let sampler = sampling.then(|| {
            scope.spawn(|| {
                let mut peak = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(meter.device_memory_used().unwrap_or(0));
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                peak
            })
        });
        let pass = (|| -> Result<()> {
            loop {
                let lap_started = Instant::now();
                for (i, split) in splits.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
                    let out = call(backend, task, kind, split, bs)?;
                    // Batches of the lap (an embedded pair is two inputs).
                    iterations += out.token_counts.len().div_ceil(bs);
                    done += split.len();
                    done_tokens += out.token_counts.iter().sum::<usize>();
                    if laps_per_s.is_empty() {
                        first_lap[i] = Some(out);
                    }
                }
                laps_per_s.push(examples.len() as f64 / lap_started.elapsed().as_secs_f64());
                spinner.set_message(format!(
                    "throughput pass at batch {bs}: {} laps, last {:.1} examples/s",
                    laps_per_s.len(),
                    laps_per_s.last().copied().unwrap_or_default()
                ));
                tracing::debug!(lap = laps_per_s.len(), rate = ?laps_per_s.last(), "throughput lap");
                if iterations >= settings.min_iterations.max(1)
                    && started.elapsed().as_secs_f64() >= settings.min_time_s
                {
                    break;
                }
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (sampler.and_then(|s| s.join().ok()), pass)
    });
    spinner.finish_and_clear();
    pass?;
    let throughput_s = started.elapsed().as_secs_f64();
    let energy = probe::Probe::stop(meter, energy_start);
    let peak = probe::PeakRssProbe.stop(peak);
    let per_example = energy.value.map(|j| j / done as f64);

    let first_lap = first_lap
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let profile = Profile {
        batch1_pass_s,
        batch1_examples: n1,
        latency_ms: latency::summarise(&e2e_ms).context("no batch-1 latencies")?,
        forward_latency_ms: Some(latency::summarise(&fwd_ms).context("no forward latencies")?),
        latency_samples_ms: latency::samples(&e2e_ms),
        throughput_batch_size: Some(bs),
        throughput_per_s: done as f64 / throughput_s,
        tokens_per_s: done_tokens as f64 / throughput_s,
        throughput_iterations: Some(iterations),
        throughput_s: Some(throughput_s),
        throughput_laps_per_s: laps_per_s,
        warmup_iterations: settings.warmup,
        peak_rss_bytes: peak.value.map(|b| b as u64),
        peak_rss_scope: peak.detail,
        peak_device_memory_bytes: peak_device,
        load_rss_bytes,
        energy_j: energy.value,
        energy_j_per_example: per_example,
        energy_j_per_1k: per_example.map(|j| j * 1000.0),
        energy_source: energy.source.label().to_string(),
        energy_detail: energy.detail,
        flops_per_example: flops / n1 as f64,
        mean_tokens_per_example: tokens as f64 / n1 as f64,
        ttft_ms: None,
        decode_tokens_per_s: None,
    };
    Ok(Profiled { profile, first_lap })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::mock::MockBackend;

    #[test]
    fn protocol_counts_examples_iterations_and_labels_energy() {
        let backend = MockBackend::new("m", Some(vec!["a".into(), "b".into()]));
        let texts = ["one two", "three four five", "six", "seven"];
        let examples: Vec<TextInput> = texts.iter().map(|t| TextInput { a: t, b: None }).collect();
        // Two splits (as MNLI's matched and mismatched): 3 + 1 examples.
        let splits = vec![examples[..3].to_vec(), examples[3..].to_vec()];
        let meter = energy::EnergyMeter::detect(std::path::Path::new("/nonexistent"), 5.0);
        let s = ProfileSettings {
            min_iterations: 7,
            ..ProfileSettings::quick()
        };
        let Profiled {
            profile: p,
            first_lap,
        } = profile_cell(
            &backend,
            Workload {
                task: "sst2",
                splits: &splits,
                kind: RequestKind::Classify,
            },
            2,
            &s,
            &meter,
            None,
        )
        .unwrap();
        assert_eq!(p.batch1_examples, 4);
        assert_eq!(p.latency_ms.n, 4);
        // A lap at batch 2 is 2 + 1 batches; the pass stops after the lap that reaches 7.
        assert_eq!(p.throughput_iterations, Some(9));
        assert_eq!(p.throughput_laps_per_s.len(), 3);
        assert!(p.throughput_laps_per_s.iter().all(|&r| r > 0.0));
        // The first lap is what a scoring pass of each split would have answered.
        assert_eq!(first_lap.len(), 2);
        for (split, out) in splits.iter().zip(&first_lap) {
            let own = call(&backend, "sst2", RequestKind::Classify, split, 2).unwrap();
            assert_eq!(out.rows, own.rows);
            assert_eq!(out.token_counts, own.token_counts);
        }
        assert_eq!(p.throughput_batch_size, Some(2));
        assert_eq!(p.energy_source, "estimated");
        // The mock counts words + 2 special tokens: (4 + 5 + 3 + 3) / 4.
        assert!((p.mean_tokens_per_example - 3.75).abs() < 1e-12);
        assert!(p.throughput_per_s > 0.0);
    }

    #[test]
    fn embeddings_of_pairs_cost_two_inputs_per_example() {
        let backend = MockBackend::new("m", None);
        let examples = vec![TextInput {
            a: "a b",
            b: Some("c"),
        }];
        let meter = energy::EnergyMeter::detect(std::path::Path::new("/nonexistent"), 5.0);
        let p = profile_cell(
            &backend,
            Workload {
                task: "sst2",
                splits: &[examples],
                kind: RequestKind::Embed,
            },
            8,
            &ProfileSettings::quick(),
            &meter,
            None,
        )
        .unwrap();
        // (2 + 2) + (1 + 2) tokens for one example.
        assert!((p.profile.mean_tokens_per_example - 7.0).abs() < 1e-12);
        // Its embeddings: the pair's two texts, a then b.
        assert_eq!(p.first_lap[0].token_counts, vec![4, 3]);
    }
}
