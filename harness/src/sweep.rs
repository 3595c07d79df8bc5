//! `harness profile`: forward passes of synthetic inputs over a grid of batch sizes and
//! sequence lengths, per model, with latency percentiles, throughput, achieved GFLOP/s and
//! peak memory. Models come from folders, aliases, Hub ids, or bare `config.json` files (random
//! weights, so BERT-base and DistilBERT shapes can be profiled without their weights).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use reports::{ProfileSweep, SweepModel, SweepPoint, SweepSettings};

use crate::cli::ProfileArgs;
use crate::models::resolve::{self, AliasTable, ModelRef};
use crate::models::{Backend, EncoderBackend, LoadOptions};
use crate::profile::probe::{PeakRssProbe, Probe};
use crate::profile::{flops, latency};

fn load(arg: &str, aliases: &AliasTable, device: &candle_core::Device) -> Result<EncoderBackend> {
    let path = Path::new(arg);
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "json") {
            return EncoderBackend::random_from_config(path, device);
        }
        bail!("{arg}: expected a model folder or a config.json file");
    }
    let opts = LoadOptions {
        device: device.clone(),
        max_length: None,
    };
    match ModelRef::parse(arg, aliases)? {
        ModelRef::Local(dir) => EncoderBackend::load(arg, &dir, &opts),
        ModelRef::Hub { file: Some(f), .. } => {
            bail!("{arg}: `harness profile` times encoders; {f} is a GGUF file (a causal LM)")
        }
        ModelRef::Hub {
            repo,
            revision,
            file: None,
        } => {
            let (dir, _) = resolve::download(&repo, revision.as_deref())?;
            EncoderBackend::load(&repo, &dir, &opts)
        }
        ModelRef::Alias(name) => {
            let base = &aliases.0[&name].base;
            let (dir, _) = resolve::download(base, None)?;
            EncoderBackend::load(base, &dir, &opts)
        }
        ModelRef::Mock(spec) => {
            bail!("mock:{spec}: `harness profile` times real encoders; a mock has no weights")
        }
    }
}

/// Run the sweep and write `OUT/profile.json`.
pub fn run(args: &ProfileArgs) -> Result<ProfileSweep> {
    if args.batch_sizes.contains(&0) || args.seq_lens.contains(&0) {
        bail!("--batch-sizes and --seq-lens must be positive");
    }
    let quantize = crate::cli::parse_quant_flag(args.quantize.as_deref(), "--quantize")
        .map_err(anyhow::Error::msg)?;
    let device = crate::plan::parse_device(&args.models.device)?;
    let aliases = AliasTable::load(args.models.aliases.as_deref())?;
    let (warmup, min_iter, min_time) = if args.quick {
        (1, 2, 0.0)
    } else {
        (args.warmup, args.min_iterations.max(1), args.min_time_s)
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("output folder {} cannot be created", args.out.display()))?;
    let mut models = Vec::new();
    for arg in &args.model {
        let mut model = load(arg, &aliases, &device)?;
        if let Some(dtype) = quantize {
            model.quantize(dtype)?;
        }
        let dims = model.dims().context("model has no layer sizes")?;
        let mut points = Vec::new();
        let mut skipped = Vec::new();
        for &seq in &args.seq_lens {
            if seq > model.max_positions() {
                skipped.push(format!(
                    "seq_len {seq}: longer than the model's {} positions",
                    model.max_positions()
                ));
                continue;
            }
            for &bs in &args.batch_sizes {
                for i in 0..warmup {
                    model.forward_synthetic(bs, seq, i as u64)?;
                }
                let peak = PeakRssProbe.start();
                let mut times = Vec::new();
                let started = Instant::now();
                while times.len() < min_iter || started.elapsed().as_secs_f64() < min_time {
                    times.push(model.forward_synthetic(bs, seq, times.len() as u64 + 100)? * 1e3);
                }
                let total_s = times.iter().sum::<f64>() / 1e3;
                let per_seq = flops::encoder_flops(dims, seq);
                let point = SweepPoint {
                    batch_size: bs,
                    seq_len: seq,
                    iterations: times.len(),
                    latency_ms: latency::summarise(&times).expect("at least one iteration"),
                    sequences_per_s: (bs * times.len()) as f64 / total_s,
                    tokens_per_s: (bs * seq * times.len()) as f64 / total_s,
                    flops_per_sequence: per_seq,
                    gflops_per_s: per_seq * (bs * times.len()) as f64 / total_s / 1e9,
                    peak_rss_bytes: PeakRssProbe.stop(peak).value.map(|b| b as u64),
                };
                if !args.quiet {
                    eprintln!(
                        "{}: batch {bs} x {seq} tokens: {:.2} sequences/s, p50 {:.1} ms, {:.0} GFLOP/s",
                        model.info().id,
                        point.sequences_per_s,
                        point.latency_ms.p50,
                        point.gflops_per_s
                    );
                }
                points.push(point);
            }
        }
        models.push(SweepModel {
            id: arg.clone(),
            checkpoint: model.info().clone(),
            points,
            skipped,
        });
    }
    let mut environment = crate::profile::fingerprint::collect(&args.models.device);
    environment.kernels =
        reports::schema::kernels_by_format(models.iter().map(|m| (m.id.as_str(), &m.checkpoint)));
    let sweep = ProfileSweep {
        schema_version: reports::SCHEMA_VERSION,
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment,
        settings: SweepSettings {
            warmup_iterations: warmup,
            min_iterations: min_iter,
            min_time_s: min_time,
        },
        models,
    };
    let path = args.out.join("profile.json");
    reports::io::write_json_atomic(&path, &sweep)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The throughput-against-batch-size curves beside it.
    let page = args.out.join("profile.html");
    reports::io::write_atomic(&page, reports::export::sweep_page(&sweep).as_bytes())
        .with_context(|| format!("cannot write {}", page.display()))?;
    Ok(sweep)
}

/// The sweep as a Markdown table.
pub fn markdown(sweep: &ProfileSweep) -> String {
    let mut rows = Vec::new();
    for m in &sweep.models {
        for p in &m.points {
            rows.push(vec![
                m.id.clone(),
                format!("{:.1}M", m.checkpoint.parameters as f64 / 1e6),
                format!("{} x {}", p.batch_size, p.seq_len),
                format!("{:.2}", p.sequences_per_s),
                format!("{:.1}", p.latency_ms.p50),
                format!("{:.1}", p.latency_ms.p99),
                format!("{:.0}", p.gflops_per_s),
                p.peak_rss_bytes.map_or("n/a".into(), |b| {
                    format!("{:.0}", b as f64 / (1 << 20) as f64)
                }),
            ]);
        }
    }
    use reports::export::table::{markdown_table, Align::*};
    markdown_table(
        &[
            "model",
            "params",
            "batch x seq",
            "sequences/s",
            "p50 ms",
            "p99 ms",
            "GFLOP/s",
            "peak RSS MiB",
        ],
        &[Left, Right, Right, Right, Right, Right, Right, Right],
        &rows,
    )
}
