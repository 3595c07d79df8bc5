//! Command-line definitions only (clap). Validation lives in [`crate::plan`].

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "harness",
    version = env!("HARNESS_VERSION_LINE"),
    about = "Score a teacher and a distilled student on the same tasks: what the student keeps and what it saves.",
    after_help = "Exit codes: 0 ok, 1 regression found (compare), 2 error.\nLogging: -v info, -vv debug, -vvv trace on stderr; RUST_LOG (e.g. RUST_LOG=harness=debug) overrides."
)]
pub struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Examples under `harness run --help`.
const RUN_EXAMPLES: &str = "Examples:
  # A sentence-encoder teacher and a distilled student on three GLUE tasks:
  harness run --teacher ../shared/models/all-MiniLM-L6-v2 --student ../shared/models/paraphrase-MiniLM-L3-v2 \\
      --task stsb,sst2,mrpc --data-dir ../shared/data/glue --out demo-results

  # Two students on one table, the second the teacher's own Q8_0 copy, named for the report:
  harness run --teacher bert-base --student distilbert --student teacher@q8_0 \\
      --name BERT,DistilBERT,BERT-q8_0 --task sst2,mrpc --limit 200";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score teacher and student on tasks; write DIR/results.json and DIR/predictions/.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Print the model alias table or the task registry.
    List(ListArgs),
    /// Sweep synthetic shapes: latency, throughput and peak memory per batch size and length.
    Profile(ProfileArgs),
    /// Write reports (Markdown, HTML with charts, CSV, JSON) from a results file.
    Report(ReportArgs),
    /// Compare a results file against a baseline; exit 1 on a regression.
    Compare(CompareArgs),
    /// Merge the shards of one run (or runs of the same pair on other tasks) strictly.
    Merge(MergeArgs),
    /// Print a run's cells and how `--shard I/N` splits them (for a CI matrix or job array).
    Plan(PlanArgs),
    /// Print a shell completion script: `harness completions bash > ~/.local/share/bash-completion/completions/harness`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Number of shards to split the cells into.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// md (tables) or json (`{"count", "cells", "matrix": [{"shard": "I/N", ...}]}`).
    #[arg(long, default_value = "md", value_parser = ["md", "json"])]
    pub format: String,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A results.json written by `harness run`.
    pub results: PathBuf,
    /// Formats, comma-separated: md, html, csv, json.
    #[arg(long, value_delimiter = ',', default_value = "md,html,csv,json")]
    pub format: Vec<String>,
    /// Folder for the reports (default: the results file's folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[arg(long)]
    pub baseline: PathBuf,
    #[arg(long)]
    pub current: PathBuf,
    /// Largest tolerated drop of a primary metric, in points (x100); for perplexity (lower is
    /// better), the largest tolerated rise, in percent.
    #[arg(long, default_value_t = 1.0)]
    pub max_metric_drop: f64,
    /// Largest tolerated batch-1 latency increase, percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_slowdown: f64,
    /// Largest tolerated peak-memory increase, percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_memory_growth: f64,
    /// Significance level of the slowdown test (one-sided Welch).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// md (a table for a job summary) or json (the findings, for scripts).
    #[arg(long, default_value = "md", value_parser = ["md", "json"])]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Shard folders of one run (`run --shard I/N --out DIR`), or results files / folders of
    /// runs of the same pair and settings on different tasks.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Output folder (results.json, predictions/, reports), or a results file path ending in
    /// .json.
    #[arg(long)]
    pub out: PathBuf,
    /// Merge although some planned cells are in no input; their tasks are left out and the
    /// results list the missing cells.
    #[arg(long)]
    pub allow_partial: bool,
    /// Merge inputs measured on different machines; the results then say that speed figures
    /// come from several hosts.
    #[arg(long)]
    pub allow_mixed_env: bool,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// A model folder, an alias or Hub id (its base checkpoint), or a bare config.json (random
    /// weights: profile BERT-base or DistilBERT shapes without downloading weights). Repeatable.
    #[arg(long, required = true)]
    pub model: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batch_sizes: Vec<usize>,
    /// Sequence lengths in tokens, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
    pub seq_lens: Vec<usize>,
    /// Output folder for profile.json.
    #[arg(long, default_value = "harness-profile")]
    pub out: PathBuf,
    /// Minimum timed forward passes per shape.
    #[arg(long, default_value_t = 10)]
    pub min_iterations: usize,
    /// Minimum seconds per shape.
    #[arg(long, default_value_t = 10.0)]
    pub min_time_s: f64,
    /// Untimed forward passes per shape.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Smoke run: 2 iterations, no minimum time, 1 warm-up pass.
    #[arg(long)]
    pub quick: bool,
    /// Quantize every model's linear layers to this block format before profiling (q8_0,
    /// q4_0, q4k, q5k, q6k), as `run --student-quantize` does.
    #[arg(long)]
    pub quantize: Option<String>,
    #[command(flatten)]
    pub models: ModelArgs,
    #[arg(long)]
    pub quiet: bool,
}

/// Where models come from and where they run; shared by `run` and `profile`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// An alias table to use instead of the built-in one (same format as harness/aliases.toml).
    #[arg(long, help_heading = "Models")]
    pub aliases: Option<PathBuf>,
    /// cpu, or cuda / cuda:N / metal when built with that feature.
    #[arg(long, default_value = "cpu", help_heading = "Models")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Teacher: an alias (bert-base), a Hub id (org/name[@revision], org/name-GGUF:FILE.gguf),
    /// a local folder or a .gguf file.
    #[arg(long, help_heading = "Models")]
    pub teacher: String,
    /// Student: an alias (distilbert), a Hub id (org/name-GGUF:FILE.gguf for one file of a GGUF
    /// repository), a local folder or a .gguf file. Repeat it
    /// for several students, each compared with the teacher on one table. `SPEC@q8_0`
    /// quantizes that student (q8_0, q4_0, q4k, q5k, q6k); `teacher@q8_0` is the teacher's
    /// quantized copy. May be left out with --student-quantize: the student is then the
    /// teacher, quantized.
    #[arg(
        long,
        help_heading = "Models",
        required_unless_present = "student_quantize",
        value_name = "SPEC"
    )]
    pub student: Vec<String>,
    /// Display names in reports, comma-separated: the teacher's, then each student's in
    /// order (default: from the checkpoint, e.g. all-MiniLM-L6-v2).
    #[arg(
        help_heading = "Models",
        long,
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub name: Vec<String>,
    /// Quantize the student's linear layers with candle's quantizer: q8_0, q4_0, q4k, q5k or
    /// q6k (embeddings and norms stay f32). Without --student, the teacher is quantized.
    #[arg(long, help_heading = "Models")]
    pub student_quantize: Option<String>,
    /// Load a GGUF teacher dequantized to f32 (a GGUF student always runs as stored).
    #[arg(long, help_heading = "Models")]
    pub dequantize_teacher: bool,
    /// The .gguf file to take from a GGUF repository on the Hub, for every Hub id given
    /// without its own (`--teacher org/name-GGUF --gguf-file name-Q8_0.gguf`); one model's
    /// own file is spelt `org/name-GGUF:name-Q4_K_M.gguf`.
    #[arg(long, help_heading = "Models", value_name = "NAME.gguf")]
    pub gguf_file: Option<String>,
    #[command(flatten)]
    pub models: ModelArgs,
    /// Score only the first N examples of every task (MMLU: of every subject; generate: the
    /// first N prompts; WikiText: the first N articles), for smoke runs and CI. Recorded in the
    /// results.
    #[arg(long, help_heading = "Data")]
    pub limit: Option<usize>,
    /// Tasks, comma-separated (see `harness list tasks`).
    #[arg(help_heading = "Data", long, value_delimiter = ',', required = true)]
    pub task: Vec<String>,
    /// Folder in the GLUE layout (SST-2/dev.tsv, ...). Without it, data comes from the Hub
    /// dataset nyu-mll/glue.
    #[arg(long, help_heading = "Data")]
    pub data_dir: Option<PathBuf>,
    /// Examples per forward pass. Metrics do not depend on it.
    #[arg(help_heading = "Data", long, default_value_t = 32)]
    pub batch_size: usize,
    /// Truncate inputs to this many tokens (default: each model's maximum).
    #[arg(long, help_heading = "Data")]
    pub max_length: Option<usize>,
    /// Rows of the train split used to fit a probe for checkpoints without a task head.
    #[arg(help_heading = "Data", long, default_value_t = 2000)]
    pub probe_train_rows: usize,
    /// Smoke-run profiling: 20 examples at batch size 1, 2 throughput iterations, no minimum time.
    #[arg(long, help_heading = "Profiling")]
    pub quick: bool,
    /// Skip profiling (scores only).
    #[arg(help_heading = "Profiling", long, conflicts_with = "quick")]
    pub no_profile: bool,
    /// Minimum iterations of the throughput pass.
    #[arg(long, help_heading = "Profiling")]
    pub min_iterations: Option<usize>,
    /// Minimum seconds of the throughput pass.
    #[arg(long, help_heading = "Profiling")]
    pub min_time_s: Option<f64>,
    /// Watts per busy core for the energy estimate when RAPL cannot be read
    /// (default 10.6: codecarbon's 85 W fallback TDP over 8 cores).
    #[arg(long, help_heading = "Profiling")]
    pub watts_per_core: Option<f64>,
    /// Perplexity: tokens per sliding window (capped by each model's maximum).
    #[arg(help_heading = "Language models", long, default_value_t = 1024)]
    pub context_length: usize,
    /// Perplexity: how far each window moves (the Hugging Face guide uses half the context).
    #[arg(help_heading = "Language models", long, default_value_t = 512)]
    pub stride: usize,
    /// Perplexity: evaluate only the text the teacher's first N tokens cover (default: all).
    #[arg(long, help_heading = "Language models")]
    pub max_eval_tokens: Option<usize>,
    /// Perplexity: positions compared for token-level fidelity (KL, top-1 agreement).
    #[arg(help_heading = "Language models", long, default_value_t = 4096)]
    pub fidelity_tokens: usize,
    /// Generate: new tokens per prompt (greedy).
    #[arg(help_heading = "Language models", long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Multiple-choice tasks with a few-shot split (MMLU's dev): answered examples put before
    /// each question, lm-eval's first-N sampler.
    #[arg(help_heading = "Language models", long, default_value_t = 0)]
    pub num_fewshot: usize,
    /// Output folder for results.json, predictions/ and the per-cell cache.
    #[arg(help_heading = "Output", long, default_value = "harness-results")]
    pub out: PathBuf,
    /// Run only the I-th (from 0) of N cost-balanced slices of the plan's (model, task) cells,
    /// for a CI matrix or a job array; `auto` reads SLURM_ARRAY_TASK_ID / _COUNT or
    /// JOB_COMPLETION_INDEX with HARNESS_SHARD_COUNT. Join the shards with `harness merge`.
    #[arg(help_heading = "Output", long, value_name = "I/N|auto")]
    pub shard: Option<String>,
    /// No progress lines on stderr.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub what: ListWhat,
    /// An alias table to list instead of the built-in one.
    #[arg(long)]
    pub aliases: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListWhat {
    Models,
    Tasks,
}

/// An optional block-format flag (`--student-quantize`, `--quantize`), checked before
/// anything is loaded; the error names the flag.
pub fn parse_quant_flag(value: Option<&str>, flag: &str) -> Result<Option<GgmlDType>, String> {
    value
        .map(parse_quant)
        .transpose()
        .map_err(|e| format!("{flag}: {e}"))
}

/// The quantization formats `--student-quantize` accepts.
pub fn parse_quant(name: &str) -> Result<GgmlDType, String> {
    match name.to_ascii_lowercase().as_str() {
        "q8_0" => Ok(GgmlDType::Q8_0),
        "q4_0" => Ok(GgmlDType::Q4_0),
        "q4k" | "q4_k" => Ok(GgmlDType::Q4K),
        "q5k" | "q5_k" => Ok(GgmlDType::Q5K),
        "q6k" | "q6_k" => Ok(GgmlDType::Q6K),
        other => Err(format!(
            "unknown quantization '{other}' (q8_0, q4_0, q4k, q5k or q6k)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_names_parse() {
        assert_eq!(parse_quant("q8_0").unwrap(), GgmlDType::Q8_0);
        assert_eq!(parse_quant("Q4K").unwrap(), GgmlDType::Q4K);
        assert_eq!(parse_quant("q6_k").unwrap(), GgmlDType::Q6K);
        let err = parse_quant("q3").unwrap_err();
        assert!(err.contains("unknown quantization 'q3'"), "{err}");
    }
}
