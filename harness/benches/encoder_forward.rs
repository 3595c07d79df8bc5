//! Forward-pass throughput of BERT-base- and DistilBERT-sized encoders (random weights from
//! their `config.json`, f32, CPU) at batch 1 and 32, 128 tokens, in sequences per second; and
//! the profiler's own overhead on a measured forward pass.
//!
//!     cargo bench -p harness --bench encoder_forward
//!
//! Results on the project machine are in BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use harness::models::EncoderBackend;
use harness::profile::{energy, memory};

fn config(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

fn forward(c: &mut Criterion) {
    for (name, file) in [
        ("bert-base", "bert-base-uncased.json"),
        ("distilbert", "distilbert-base-uncased.json"),
    ] {
        let model = EncoderBackend::random_from_config(&config(file), &Device::Cpu).unwrap();
        let mut group = c.benchmark_group(format!("{name}/seq128"));
        // Multi-second iterations: flat sampling, ten samples.
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(2));
        group.measurement_time(Duration::from_secs(15));
        for batch in [1usize, 32] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
                b.iter(|| model.forward_synthetic(batch, 128, 7).unwrap())
            });
        }
        group.finish();
    }
}

/// The profiler wraps each measured example in a clock read; per pass it also reads peak RSS
/// and the energy counters. This compares a bare forward with one carrying all of those probes
/// on every call (more than the profiler does), to bound its overhead.
fn profiler_overhead(c: &mut Criterion) {
    let model =
        EncoderBackend::random_from_config(&config("distilbert-base-uncased.json"), &Device::Cpu)
            .unwrap();
    let meter = energy::EnergyMeter::detect(
        std::path::Path::new("/sys/class/powercap"),
        energy::DEFAULT_WATTS_PER_CORE,
    );
    let mut group = c.benchmark_group("profiler-overhead/distilbert-1x128");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("bare", |b| {
        b.iter(|| model.forward_synthetic(1, 128, 7).unwrap())
    });
    group.bench_function("probed", |b| {
        b.iter(|| {
            memory::reset_peak();
            let e = meter.start();
            let t = Instant::now();
            model.forward_synthetic(1, 128, 7).unwrap();
            let elapsed = t.elapsed();
            let _ = meter.stop(e);
            let _ = memory::peak_rss_bytes();
            elapsed
        })
    });
    group.finish();
}

/// The probes alone, without a forward: what the profiler adds to each measured pass (and,
/// for the clock read, to each example). Compared with a forward of 100+ ms this is the
/// precise form of the overhead figure; the bare/probed pair above is dominated by
/// run-to-run noise on a shared 2-core machine.
fn probes_only(c: &mut Criterion) {
    let meter = energy::EnergyMeter::detect(
        std::path::Path::new("/sys/class/powercap"),
        energy::DEFAULT_WATTS_PER_CORE,
    );
    let mut group = c.benchmark_group("profiler-overhead");
    group.bench_function("probes-per-pass", |b| {
        b.iter(|| {
            memory::reset_peak();
            let e = meter.start();
            let _ = meter.stop(e);
            memory::peak_rss_bytes()
        })
    });
    group.bench_function("clock-per-example", |b| b.iter(|| Instant::now().elapsed()));
    group.finish();
}

criterion_group!(benches, forward, profiler_overhead, probes_only);
criterion_main!(benches);
