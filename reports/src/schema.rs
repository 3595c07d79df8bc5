//! `results.json`: one file per run, scores as fractions (0-1), times in SI units with the unit
//! in the key. Bump [`SCHEMA_VERSION`] on any change that a reader of an older file would
//! misread, and keep `reports/results.schema.json` in step (a test checks they agree).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the layout below. 2 added several students (`more_students`) and display names.
pub const SCHEMA_VERSION: u32 = 2;

/// Versions this build reads: a version-1 file is a version-2 file with one student and no
/// display names, so it reads as it is.
pub const READABLE_SCHEMA_VERSIONS: [u32; 2] = [1, SCHEMA_VERSION];

/// The whole results file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub schema_version: u32,
    pub harness_version: String,
    /// The harness's git commit when it was built from a checkout.
    pub git_commit: Option<String>,
    pub created_unix_s: u64,
    pub settings: RunSettings,
    /// Where the figures were measured.
    pub environment: Option<Environment>,
    pub teacher: ModelSummary,
    pub student: ModelSummary,
    pub tasks: BTreeMap<String, TaskResult>,
    /// Tasks that could not be scored, with the reason.
    pub skipped: BTreeMap<String, String>,
    /// Mean of each model's primary metrics over the tasks run; absent until a task finishes.
    pub macro_score: Option<MacroScore>,
    /// Present when this file is one shard of a run (`harness run --shard I/N`): the plan's
    /// cells, which shard each belongs to, and which this shard computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRecord>,
    /// Present when this file was made by `harness merge`: what it was merged from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeRecord>,
    /// The second and later students of a run with several (`--student A --student B`), each
    /// compared with the same teacher; `student` and `tasks` above hold the first. Empty for a
    /// one-student run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_students: Vec<StudentRun>,
}

/// One more student of a run with several: its model and its comparison with the teacher on
/// every task (each `TaskResult` holds the teacher's cell too, the same one as in `tasks`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StudentRun {
    pub student: ModelSummary,
    pub tasks: BTreeMap<String, TaskResult>,
    pub skipped: BTreeMap<String, String>,
    pub macro_score: Option<MacroScore>,
    /// The folder (relative to the results file) holding this pair's own results, cells and
    /// predictions.
    pub dir: String,
}

/// One cell of a run's plan: a model's pass over a task, or both models' passes when the
/// student's figures need the teacher's in the same process (`pair`: perplexity fidelity
/// compares full next-token distributions, which are not kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedCell {
    pub task: String,
    /// `teacher`, `student` or `pair`.
    pub role: String,
    /// The shard (0-based) the cell belongs to.
    pub shard: usize,
    /// The cost estimate the cells were balanced by (work units x model size; relative).
    pub cost: u64,
}

impl PlannedCell {
    /// `task.role`, as cell files are named.
    pub fn id(&self) -> String {
        format!("{}.{}", self.task, self.role)
    }
}

/// A shard's part of its run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardRecord {
    /// 0-based.
    pub index: usize,
    pub count: usize,
    /// Every cell of the run's plan, with its shard; the same list in every shard.
    pub planned: Vec<PlannedCell>,
    /// The cells this shard finished (`task.role`, `pair` cells by their task's result), each
    /// with the cache key of its file in `cells/`, so that a merge never takes a stale file.
    #[serde(default)]
    pub finished: BTreeMap<String, String>,
}

/// What a merged file came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergeRecord {
    pub inputs: Vec<MergedInput>,
    /// Cells of the plan that no input had (`--allow-partial`), as `task.role`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_cells: Vec<String>,
    /// Set when the inputs were measured on different machines (`--allow-mixed-env`): speed
    /// figures of different tasks or roles then come from different hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixed_environments: Option<String>,
}

/// One merged file or shard folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedInput {
    pub source: String,
    /// `I/N` for a shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The cells taken from it, as `task.role` (a whole task's result: `task`).
    pub cells: Vec<String>,
    /// Where it was measured, when the inputs differ in that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
}

/// Settings that change numbers. Batch size is recorded but does not change metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSettings {
    pub batch_size: usize,
    /// Truncation length in tokens; `None` means each model's own maximum.
    pub max_length: Option<usize>,
    pub device: String,
    pub dtype: String,
    /// Where task data came from: a folder, or `hub:nyu-mll/glue`.
    pub data_source: String,
    pub probe_train_rows: usize,
    pub probe_seed: u64,
    pub probe_l2: f64,
    pub probe_iterations: usize,
    /// Settings of the language-modelling tasks, when any ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm: Option<LmSettings>,
    /// `--limit`: only the first N examples of every task were scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// How perplexity and generation were run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LmSettings {
    /// Tokens per sliding window.
    pub context_length: usize,
    /// How far each window moves.
    pub stride: usize,
    /// Tokens of the text evaluated (`None`: all of it).
    pub max_eval_tokens: Option<usize>,
    /// Positions compared for token-level fidelity (disjoint windows from the text's start).
    pub fidelity_tokens: usize,
    /// New tokens per prompt in `generate`.
    pub max_new_tokens: usize,
    /// Answered examples before each multiple-choice question (`--num-fewshot`).
    #[serde(default)]
    pub num_fewshot: usize,
}

/// The machine and build a result was measured on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Environment {
    pub cpu_model: String,
    /// The CPU flags that matter for kernels (AVX2, FMA, AVX-512 ...).
    pub cpu_flags: Vec<String>,
    pub logical_cores: usize,
    pub threads_used: usize,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub candle_version: String,
    /// `release` or `debug`.
    pub build_profile: String,
    /// Target features compiled in (`-C target-cpu` / `target-feature`).
    pub target_features: Vec<String>,
    pub git_commit: Option<String>,
    pub device: String,
    /// The kernel that multiplied each weight format of the run's models on this host
    /// (`q8_0` -> `harness-qgemm-avx2, activations q8_0`): candle's quantized kernels differ
    /// between CPUs, so a quantized score names what produced it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kernels: BTreeMap<String, String>,
}

/// One line per weight format naming the kernel that multiplied it, from several models'
/// [`CheckpointInfo::kernels`]: the kernel where all models agree, else each model's, marked
/// with its name (`teacher: ... / student: ...`). [`Environment::kernels`] holds it.
pub fn kernels_by_format<'a>(
    models: impl IntoIterator<Item = (&'a str, &'a CheckpointInfo)>,
) -> BTreeMap<String, String> {
    let mut by_format: BTreeMap<&String, Vec<(&str, &String)>> = BTreeMap::new();
    for (name, checkpoint) in models {
        for (format, kernel) in &checkpoint.kernels {
            by_format.entry(format).or_default().push((name, kernel));
        }
    }
    by_format
        .into_iter()
        .map(|(format, ks)| {
            let line = if ks.iter().all(|(_, k)| *k == ks[0].1) {
                ks[0].1.clone()
            } else {
                let parts: Vec<String> = ks.iter().map(|(r, k)| format!("{r}: {k}")).collect();
                parts.join(" / ")
            };
            (format.clone(), line)
        })
        .collect()
}

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    /// Absent in files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    pub p99: f64,
    pub mean: f64,
    pub stddev: f64,
    pub n: usize,
}

/// Cost of one model on one task, measured by the harness's profiler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The DistilBERT protocol: one pass over the dev set at batch size 1 (warm-up excluded),
    /// end to end (tokenise + forward + scoring), in seconds.
    pub batch1_pass_s: f64,
    /// Examples in that pass (all of the dev set unless `--quick`).
    pub batch1_examples: usize,
    /// Per-example end-to-end latency at batch size 1.
    pub latency_ms: LatencySummary,
    /// Per-example model-forward latency at batch size 1 (tokenisation excluded). Text tasks;
    /// absent for language-modelling cells, whose one pass is timed end to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_latency_ms: Option<LatencySummary>,
    /// Every example's end-to-end batch-1 latency (ms, in the order run, to the microsecond),
    /// for distribution plots; empty in older files and for language-modelling cells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_samples_ms: Vec<f64>,
    /// Batch size of the throughput pass (the run's `--batch-size`). Text tasks only: a
    /// language-modelling cell has no separate throughput pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_batch_size: Option<usize>,
    /// Examples per second in the throughput pass, end to end (language modelling: windows or
    /// prompts per second of its pass).
    pub throughput_per_s: f64,
    /// Tokens per second in the throughput pass (language modelling: of its pass).
    pub tokens_per_s: f64,
    /// Text tasks only, as `throughput_batch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_iterations: Option<usize>,
    /// Text tasks only, as `throughput_batch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_s: Option<f64>,
    /// Examples per second of each lap over the dev set in the throughput pass, in order: the
    /// spread says whether a change in `throughput_per_s` is larger than the noise. Text tasks;
    /// empty for language-modelling cells and files written before it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throughput_laps_per_s: Vec<f64>,
    pub warmup_iterations: usize,
    /// Peak resident memory while this cell was profiled.
    pub peak_rss_bytes: Option<u64>,
    /// `phase` when the kernel's peak counter was reset for this cell, `process` otherwise.
    pub peak_rss_scope: String,
    /// Peak GPU memory during the throughput pass (NVML, sampled every 10 ms); `None` on CPU.
    pub peak_device_memory_bytes: Option<u64>,
    /// Resident memory added by loading the model.
    pub load_rss_bytes: Option<u64>,
    /// Energy of the throughput pass; `None` when `energy_source` is `missing`.
    pub energy_j: Option<f64>,
    pub energy_j_per_example: Option<f64>,
    pub energy_j_per_1k: Option<f64>,
    /// `rapl`, `nvml`, `estimated` or `missing`.
    pub energy_source: String,
    pub energy_detail: String,
    /// Analytic forward FLOPs per example at the dev set's token lengths.
    pub flops_per_example: f64,
    pub mean_tokens_per_example: f64,
    /// Generation: median time to first token (prompt tokenised, prompt forward, first token
    /// picked), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Generation: tokens after the first, over the time they took (one cached forward each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_tokens_per_s: Option<f64>,
}

/// The slowest and fastest of a throughput pass's laps ([`Profile::throughput_laps_per_s`]),
/// when it ran more than one (a single lap has no spread to show).
pub fn lap_range(laps: &[f64]) -> Option<(f64, f64)> {
    (laps.len() >= 2).then(|| {
        laps.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    })
}

/// `harness profile`: a sweep of synthetic shapes per model (`OUT/profile.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProfileSweep {
    pub schema_version: u32,
    pub harness_version: String,
    pub created_unix_s: u64,
    pub environment: Environment,
    pub settings: SweepSettings,
    pub models: Vec<SweepModel>,
}

/// How the sweep measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepSettings {
    pub warmup_iterations: usize,
    pub min_iterations: usize,
    pub min_time_s: f64,
}

/// One model's sweep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepModel {
    pub id: String,
    pub checkpoint: CheckpointInfo,
    pub points: Vec<SweepPoint>,
    /// Shapes left out, with why (e.g. longer than the position embeddings).
    pub skipped: Vec<String>,
}

/// One (batch size, sequence length) shape: forward passes of random token ids, no padding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SweepPoint {
    pub batch_size: usize,
    pub seq_len: usize,
    pub iterations: usize,
    /// Per forward pass (one batch).
    pub latency_ms: LatencySummary,
    pub sequences_per_s: f64,
    pub tokens_per_s: f64,
    pub flops_per_sequence: f64,
    pub gflops_per_s: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// A model as the user named it, with what it resolved to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelSummary {
    /// As given: alias, Hub id or path.
    pub id: String,
    /// `alias`, `hub` or `local`.
    pub source: String,
    /// The checkpoint of the first task run (aliases use one checkpoint per task; each cell
    /// records its own).
    pub checkpoint: Option<CheckpointInfo>,
    /// Display name in reports (`--name`, or derived from `id`: `all-MiniLM-L6-v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ModelSummary {
    /// The name reports show: `name`, or one derived from `id` ([`display_name`]).
    pub fn display(&self) -> String {
        self.name.clone().unwrap_or_else(|| display_name(&self.id))
    }
}

/// A short display name for a model reference: the folder or file name of a path, the name
/// part of a Hub id (revision dropped), an alias as it is, a mock's name; a quantized copy
/// (`id (q8_0)`) keeps its format (`all-MiniLM-L6-v2 q8_0`).
pub fn display_name(id: &str) -> String {
    let (base, quant) = match id.strip_suffix(')').and_then(|s| s.rsplit_once(" (")) {
        Some((base, q)) => (base, Some(q)),
        None => (id, None),
    };
    let short = if let Some(rest) = base.strip_prefix("mock:") {
        format!("mock:{}", rest.split(':').next().unwrap_or_default())
    } else {
        let last = base
            .trim_end_matches(['/', '\\'])
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(base);
        let last = last.split('@').next().unwrap_or(last);
        last.strip_suffix(".gguf").unwrap_or(last).to_string()
    };
    let short = if short.is_empty() {
        base.to_string()
    } else {
        short
    };
    match quant {
        Some(q) => format!("{short} {q}"),
        None => short,
    }
}

/// One loaded checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointInfo {
    /// Hub id or local path.
    pub id: String,
    /// Resolved Hub revision (commit) or canonical local path.
    pub resolved: String,
    /// `bert`, `distilbert`, `mpnet`.
    pub architecture: String,
    /// Floating-point parameters counted from the weight file.
    pub parameters: u64,
    /// Weight file bytes.
    pub bytes_on_disk: u64,
    /// Label names of the classification head, if any.
    pub head_labels: Option<Vec<String>>,
    /// Bytes the weights take as the model runs (quantized blocks at their real size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bytes: Option<u64>,
    /// How the weights are stored as the model runs: `q8_0 (quantized at load)`,
    /// `q4_1 (gguf)`, ...; absent for f32 checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// The kernel that multiplied each weight format of this model's linear layers on the
    /// host that ran it, by row count where that changes it (see [`Environment::kernels`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kernels: BTreeMap<String, String>,
    /// Where the tokenizer came from: `tokenizer.json`, `vocab.txt`, `gguf metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

/// How a model was scored on a task.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The checkpoint's own task head.
    Head,
    /// Cosine similarity of pooled sentence embeddings (STS-B with an encoder).
    Cosine,
    /// Logistic regression fitted on frozen pooled embeddings of the train split.
    Probe,
    /// Log-likelihood of a text in sliding windows (perplexity tasks).
    LogLikelihood,
    /// Greedy continuations of prompts.
    Generate,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Head => "head",
            Mode::Cosine => "cosine",
            Mode::Probe => "probe",
            Mode::LogLikelihood => "log_likelihood",
            Mode::Generate => "generate",
        }
    }
}

/// One model on one task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub checkpoint: CheckpointInfo,
    pub mode: Mode,
    pub metrics: BTreeMap<String, f64>,
    /// Examples whose token count exceeded the maximum length and were cut.
    pub n_truncated: usize,
    /// Probe details, when `mode` is `probe`.
    pub probe: Option<ProbeInfo>,
    /// Wall time of the cell (load excluded), seconds.
    pub elapsed_s: f64,
    /// Everything that determines this cell's numbers; a rerun with the same key is skipped.
    pub cache_key: String,
    /// Cost figures; absent with `--no-profile`.
    pub profile: Option<Profile>,
    /// Which pass over the data produced the metrics (`throughput pass, first lap (batch
    /// 32)`, or `scoring pass (batch 32)` when nothing is profiled); absent in files written
    /// before it was recorded and for language-model cells, whose one pass is also measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scored_by: Option<String>,
}

/// How a probe was fitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeInfo {
    pub train_origin: String,
    pub train_rows: usize,
    pub features: String,
}

/// Teacher and student on one task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskResult {
    pub task_version: u32,
    pub primary_metric: String,
    /// The scoring mode, or `mixed` when teacher and student differ (each cell has its own).
    pub mode: String,
    pub n_examples: usize,
    pub teacher: Cell,
    pub student: Cell,
    /// Student over teacher on the primary metric; `None` when the teacher's is not positive.
    pub retention: Option<f64>,
    /// Teacher's batch-1 dev-pass time over the student's (DistilBERT's "60% faster" is 1.6).
    pub speedup: Option<f64>,
    /// Student's throughput over the teacher's, at the run's batch size.
    pub speedup_throughput: Option<f64>,
    /// Student's parameters over the teacher's.
    pub size_ratio: f64,
    /// Student's peak memory over the teacher's.
    pub memory_ratio: Option<f64>,
    /// Student's energy per example over the teacher's (same source for both, else `None`).
    pub energy_ratio: Option<f64>,
    /// Paired statistics and fidelity of student against teacher, on the primary split.
    pub comparison: Option<Comparison>,
    /// Whether a smaller primary metric is better (perplexity); retention is then teacher
    /// over student, so that it still reads "fraction of the teacher's quality kept".
    #[serde(default)]
    pub lower_is_better: bool,
    /// Student's weight bytes (as run) over the teacher's: what quantization saves, which
    /// `size_ratio` (parameters) cannot show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bytes_ratio: Option<f64>,
    /// Token-level fidelity of a causal LM student to its teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<TokenFidelity>,
}

/// How closely a causal LM student follows its teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFidelity {
    /// Whether both models tokenize identically; token-level figures need it.
    pub same_tokenizer: bool,
    /// Positions compared (perplexity tasks) or prompts (generate).
    pub positions: usize,
    /// Mean KL(teacher || student) of next-token distributions, nats.
    pub kl: Option<f64>,
    /// Fraction of positions where the most likely next token is the same.
    pub top1_agreement: Option<f64>,
    /// Generate: fraction of generated positions holding the same token.
    pub greedy_token_match: Option<f64>,
    /// Generate: fraction of prompts continued identically (as text when tokenizers differ).
    pub greedy_exact_match: Option<f64>,
    /// What was and was not compared.
    pub note: String,
    /// The statistics of llama.cpp's `llama-perplexity --kl-divergence` over the same
    /// positions (perplexity tasks with a shared tokenizer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_stats: Option<KlStats>,
}

/// Token fidelity as llama.cpp reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlStats {
    /// Mean KL(teacher || student) per position, nats, and its standard error.
    pub kl_mean: f64,
    pub kl_stderr: Option<f64>,
    /// KL at max, 99.9%, 99%, 95%, 90%, median, 10%, 5%, 1%, 0.1% and min, in that order.
    pub kl_percentiles: Vec<KlPercentile>,
    /// Fraction of positions where both models' most likely next token is the same, and its
    /// binomial standard error.
    pub same_top: f64,
    pub same_top_stderr: f64,
    /// p_student - p_teacher of the actual next token (llama.cpp's Δp): mean, its standard
    /// error, and RMS.
    pub delta_p_target_mean: Option<f64>,
    pub delta_p_target_stderr: Option<f64>,
    pub delta_p_target_rms: Option<f64>,
    /// p_student - p_teacher of the teacher's most likely token: mean and RMS.
    pub delta_p_top_mean: f64,
    pub delta_p_top_rms: f64,
    /// Pearson correlation of the two models' ln PPL over windows.
    pub ln_ppl_correlation: Option<f64>,
    /// PPL(student) / PPL(teacher) over the same next tokens.
    pub ppl_ratio: Option<f64>,
    /// Windows the correlation is over.
    pub windows: usize,
}

/// One KL percentile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlPercentile {
    pub label: String,
    pub kl: f64,
}

/// Teacher and student compared example by example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Student minus teacher on the primary metric, with a paired bootstrap interval.
    pub primary_diff: crate::stats::Interval,
    /// Examples only the teacher got right (classification).
    /// Each model's own 95% interval on the primary metric, from the resamples of
    /// `primary_diff`; absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_interval: Option<crate::stats::Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_interval: Option<crate::stats::Interval>,
    pub teacher_only_correct: Option<u64>,
    /// Examples only the student got right (classification).
    pub student_only_correct: Option<u64>,
    /// McNemar's exact two-sided p-value on those discordant pairs.
    pub mcnemar_p: Option<f64>,
    /// Fraction of examples where the student's top-1 label equals the teacher's.
    pub top1_agreement: Option<f64>,
    /// Mean KL(teacher || student) over the output distributions, nats (the distillation loss).
    pub mean_kl: Option<f64>,
    /// Teacher label (rows) by student label (columns), counts.
    pub confusion: Option<Vec<Vec<u64>>>,
    /// The first examples where the two disagree, with text.
    pub disagreements: Vec<Disagreement>,
    pub teacher_calibration: Option<Calibration>,
    pub student_calibration: Option<Calibration>,
}

/// One example the models answer differently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disagreement {
    pub id: String,
    pub text_a: String,
    pub text_b: Option<String>,
    pub gold: String,
    pub teacher: String,
    pub student: String,
}

/// Calibration of predicted probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Expected calibration error, 15 equal-width bins.
    pub ece: f64,
    pub brier: f64,
}

/// Macro average of primary metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MacroScore {
    pub tasks: Vec<String>,
    pub teacher: f64,
    pub student: f64,
    pub retention: Option<f64>,
}

/// Student over teacher, defined only for a positive teacher score.
pub fn retention(teacher: f64, student: f64) -> Option<f64> {
    (teacher > 0.0 && teacher.is_finite() && student.is_finite()).then(|| student / teacher)
}

impl TaskResult {
    pub fn new(
        task_version: u32,
        primary_metric: &str,
        n_examples: usize,
        teacher: Cell,
        student: Cell,
    ) -> Self {
        let mode = if teacher.mode == student.mode {
            teacher.mode.as_str().to_string()
        } else {
            "mixed".to_string()
        };
        let t = teacher
            .metrics
            .get(primary_metric)
            .copied()
            .unwrap_or(f64::NAN);
        let s = student
            .metrics
            .get(primary_metric)
            .copied()
            .unwrap_or(f64::NAN);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
            _ => None,
        };
        let (tp, sp) = (teacher.profile.as_ref(), student.profile.as_ref());
        let speedup = ratio(tp.map(|p| p.batch1_pass_s), sp.map(|p| p.batch1_pass_s));
        let speedup_throughput = ratio(
            sp.map(|p| p.throughput_per_s),
            tp.map(|p| p.throughput_per_s),
        );
        let memory_ratio = ratio(
            sp.and_then(|p| p.peak_rss_bytes).map(|b| b as f64),
            tp.and_then(|p| p.peak_rss_bytes).map(|b| b as f64),
        );
        let energy_ratio = match (tp, sp) {
            (Some(a), Some(b)) if a.energy_source == b.energy_source => {
                ratio(b.energy_j_per_example, a.energy_j_per_example)
            }
            _ => None,
        };
        let size_ratio = if teacher.checkpoint.parameters > 0 {
            student.checkpoint.parameters as f64 / teacher.checkpoint.parameters as f64
        } else {
            f64::NAN
        };
        let weight_bytes_ratio = match (
            teacher.checkpoint.weight_bytes,
            student.checkpoint.weight_bytes,
        ) {
            (Some(t), Some(s)) if t > 0 => Some(s as f64 / t as f64),
            _ => None,
        };
        TaskResult {
            comparison: None,
            lower_is_better: false,
            weight_bytes_ratio,
            fidelity: None,
            speedup,
            speedup_throughput,
            size_ratio,
            memory_ratio,
            energy_ratio,
            task_version,
            primary_metric: primary_metric.to_string(),
            mode,
            n_examples,
            retention: retention(t, s),
            teacher,
            student,
        }
    }

    /// Mark the primary metric as lower-is-better (perplexity): retention becomes teacher
    /// over student.
    pub fn lower_is_better(mut self) -> Self {
        self.lower_is_better = true;
        let (t, s) = self.primary();
        self.retention = retention(1.0 / t, 1.0 / s);
        self
    }

    /// Whether the task counts towards the macro score: quality metrics where higher is
    /// better, as GLUE's (perplexity and generation are reported on their own).
    pub fn in_macro(&self) -> bool {
        !self.lower_is_better && self.mode != Mode::Generate.as_str()
    }

    pub fn primary(&self) -> (f64, f64) {
        let get = |c: &Cell| {
            c.metrics
                .get(&self.primary_metric)
                .copied()
                .unwrap_or(f64::NAN)
        };
        (get(&self.teacher), get(&self.student))
    }
}

impl Results {
    /// How many students the run compared with the teacher.
    pub fn n_students(&self) -> usize {
        1 + self.more_students.len()
    }

    /// Each student's comparison with the teacher as a one-student results file (the first is
    /// this file without `more_students`), so every pair-wise view and check serves each.
    pub fn pairs(&self) -> Vec<Results> {
        let mut first = self.clone();
        first.more_students.clear();
        let mut out = vec![first.clone()];
        for s in &self.more_students {
            let mut r = first.clone();
            r.student = s.student.clone();
            r.tasks = s.tasks.clone();
            r.skipped = s.skipped.clone();
            r.macro_score = s.macro_score.clone();
            out.push(r);
        }
        out
    }

    /// Copy the kernels the two models ran on into the environment (one line per weight
    /// format; where teacher and student differ, both, marked).
    pub fn note_kernels(&mut self) {
        let Some(env) = self.environment.as_mut() else {
            return;
        };
        env.kernels = kernels_by_format(
            [("teacher", &self.teacher), ("student", &self.student)]
                .into_iter()
                .filter_map(|(role, summary)| Some((role, summary.checkpoint.as_ref()?))),
        );
    }

    /// Recompute the macro score from the task results.
    pub fn update_macro(&mut self) {
        let counted: Vec<&TaskResult> = self.tasks.values().filter(|r| r.in_macro()).collect();
        if counted.is_empty() {
            self.macro_score = None;
            return;
        }
        let n = counted.len() as f64;
        let (mut t, mut s) = (0.0, 0.0);
        for r in &counted {
            let (a, b) = r.primary();
            t += a / n;
            s += b / n;
        }
        self.macro_score = Some(MacroScore {
            tasks: self
                .tasks
                .iter()
                .filter(|(_, r)| r.in_macro())
                .map(|(k, _)| k.clone())
                .collect(),
            teacher: t,
            student: s,
            retention: retention(t, s),
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn cell(mode: Mode, metric: &str, value: f64) -> Cell {
        Cell {
            checkpoint: CheckpointInfo {
                id: "m".into(),
                resolved: "/m".into(),
                architecture: "bert".into(),
                parameters: 10,
                bytes_on_disk: 40,
                head_labels: None,
                weight_bytes: None,
                quantization: None,
                tokenizer: None,
                kernels: Default::default(),
            },
            mode,
            metrics: [(metric.to_string(), value)].into_iter().collect(),
            n_truncated: 0,
            probe: None,
            elapsed_s: 1.0,
            cache_key: "k".into(),
            profile: None,
            scored_by: None,
        }
    }

    /// Give every cell of `r` a profile, for tests of the cost views.
    pub fn add_profiles(r: &mut Results) {
        let lat = |p50: f64| LatencySummary {
            p50,
            p90: p50 * 1.5,
            p95: Some(p50 * 1.75),
            p99: p50 * 2.0,
            mean: p50 * 1.1,
            stddev: p50 / 4.0,
            n: 100,
        };
        for t in r.tasks.values_mut() {
            for (cell, scale) in [(&mut t.teacher, 2.0), (&mut t.student, 1.0)] {
                cell.profile = Some(Profile {
                    batch1_pass_s: 10.0 * scale,
                    batch1_examples: 100,
                    latency_ms: lat(10.0 * scale),
                    forward_latency_ms: Some(lat(9.0 * scale)),
                    latency_samples_ms: (1..=20).map(|i| scale * (5.0 + i as f64)).collect(),
                    throughput_batch_size: Some(32),
                    throughput_per_s: 100.0 / scale,
                    tokens_per_s: 2000.0 / scale,
                    throughput_iterations: Some(10),
                    throughput_s: Some(10.0),
                    throughput_laps_per_s: Vec::new(),
                    warmup_iterations: 3,
                    peak_rss_bytes: Some((100 << 20) * scale as u64),
                    peak_rss_scope: "phase".into(),
                    peak_device_memory_bytes: None,
                    load_rss_bytes: Some(50 << 20),
                    energy_j: Some(50.0 * scale),
                    energy_j_per_example: Some(0.05 * scale),
                    energy_j_per_1k: Some(50.0 * scale),
                    energy_source: "estimated".into(),
                    energy_detail: "test".into(),
                    flops_per_example: 1e9 * scale,
                    mean_tokens_per_example: 20.0,
                    ttft_ms: None,
                    decode_tokens_per_s: None,
                });
            }
            *t = TaskResult::new(
                t.task_version,
                &t.primary_metric.clone(),
                t.n_examples,
                t.teacher.clone(),
                t.student.clone(),
            );
        }
    }

    /// `sample()` with two more students (`student-2`, `student-3`): the first keeps 90% of
    /// each task's teacher score and runs 3x faster, the second keeps 50% and ties.
    pub fn several_students() -> Results {
        let mut r = sample();
        add_profiles(&mut r);
        for (name, keep, speed) in [("student-2", 0.9, 3.0), ("student-3", 0.5, 1.0)] {
            let mut tasks = BTreeMap::new();
            for (task, t) in &r.tasks {
                let mut student = t.teacher.clone();
                for v in student.metrics.values_mut() {
                    *v *= keep;
                }
                if let Some(p) = student.profile.as_mut() {
                    p.batch1_pass_s /= speed;
                    p.throughput_per_s *= speed;
                    p.latency_ms.mean /= speed;
                    p.latency_ms.p50 /= speed;
                    p.latency_ms.p99 /= speed;
                }
                let result = TaskResult::new(
                    t.task_version,
                    &t.primary_metric,
                    t.n_examples,
                    t.teacher.clone(),
                    student,
                );
                tasks.insert(task.clone(), result);
            }
            let mut run = StudentRun {
                student: ModelSummary {
                    id: format!("../models/{name}"),
                    source: "local".into(),
                    checkpoint: None,
                    name: None,
                },
                tasks,
                skipped: BTreeMap::new(),
                macro_score: None,
                dir: format!("students/{name}"),
            };
            let mut view = r.clone();
            view.tasks = run.tasks.clone();
            view.update_macro();
            run.macro_score = view.macro_score;
            r.more_students.push(run);
        }
        r
    }

    #[test]
    fn display_names_are_short() {
        for (id, name) in [
            ("../shared/models/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"),
            ("../shared/models/all-MiniLM-L6-v2/", "all-MiniLM-L6-v2"),
            (
                "../shared/models/all-MiniLM-L6-v2 (q8_0)",
                "all-MiniLM-L6-v2 q8_0",
            ),
            (
                "distilbert/distilbert-base-uncased@main",
                "distilbert-base-uncased",
            ),
            ("bert-base", "bert-base"),
            ("models/tiny.Q8_0.gguf", "tiny.Q8_0"),
            ("mock:s:labels=a,b:sharpness=2", "mock:s"),
        ] {
            assert_eq!(display_name(id), name, "{id}");
        }
        let mut m = sample().student;
        assert_eq!(m.display(), "student");
        m.name = Some("DistilBERT".into());
        assert_eq!(m.display(), "DistilBERT");
    }

    #[test]
    fn each_student_is_a_pair_with_the_same_teacher() {
        let r = several_students();
        let pairs = r.pairs();
        assert_eq!((r.n_students(), pairs.len()), (3, 3));
        assert!(pairs.iter().all(|p| p.more_students.is_empty()));
        assert!(pairs.iter().all(|p| p.teacher == r.teacher));
        assert_eq!(pairs[0].student, r.student);
        assert_eq!(pairs[2].student.id, "../models/student-3");
        // student-3 keeps half of each teacher score: its macro retention is exactly 50%.
        let m = pairs[2].macro_score.as_ref().unwrap();
        assert!((m.retention.unwrap() - 0.5).abs() < 1e-12, "{m:?}");
        assert_eq!(pairs[1].tasks["sst2"].speedup, Some(3.0));
    }

    pub fn sample() -> Results {
        let mut r = Results {
            schema_version: SCHEMA_VERSION,
            harness_version: "0.1.0".into(),
            git_commit: Some("abc123".into()),
            created_unix_s: 1_800_000_000,
            settings: RunSettings {
                batch_size: 32,
                max_length: None,
                device: "cpu".into(),
                dtype: "f32".into(),
                data_source: "../shared/data/glue".into(),
                probe_train_rows: 2000,
                probe_seed: 42,
                probe_l2: 1e-3,
                probe_iterations: 300,
                lm: None,
                limit: None,
            },
            environment: None,
            teacher: ModelSummary {
                id: "teacher".into(),
                source: "local".into(),
                checkpoint: None,
                name: None,
            },
            student: ModelSummary {
                id: "student".into(),
                source: "local".into(),
                checkpoint: None,
                name: None,
            },
            tasks: BTreeMap::new(),
            skipped: [("mrpc".to_string(), "student: no train split".to_string())]
                .into_iter()
                .collect(),
            macro_score: None,
            shard: None,
            merge: None,
            more_students: Vec::new(),
        };
        r.tasks.insert(
            "stsb".into(),
            TaskResult::new(
                1,
                "spearman",
                1500,
                cell(Mode::Cosine, "spearman", 0.8),
                cell(Mode::Cosine, "spearman", 0.76),
            ),
        );
        r.tasks.insert(
            "sst2".into(),
            TaskResult::new(
                1,
                "accuracy",
                872,
                cell(Mode::Probe, "accuracy", 0.8),
                cell(Mode::Head, "accuracy", 0.6),
            ),
        );
        r.update_macro();
        r
    }

    #[test]
    fn retention_and_macro_by_hand() {
        let r = sample();
        assert!((r.tasks["stsb"].retention.unwrap() - 0.95).abs() < 1e-12);
        assert_eq!(r.tasks["sst2"].mode, "mixed");
        assert_eq!(r.tasks["stsb"].mode, "cosine");
        let m = r.macro_score.as_ref().unwrap();
        assert!((m.teacher - 0.8).abs() < 1e-12);
        assert!((m.student - 0.68).abs() < 1e-12);
        assert!((m.retention.unwrap() - 0.85).abs() < 1e-12);
    }

    #[test]
    fn retention_undefined_for_non_positive_teacher() {
        assert_eq!(retention(0.0, 0.5), None);
        assert_eq!(retention(-0.1, 0.5), None);
        assert_eq!(retention(0.5, 0.25), Some(0.5));
    }

    #[test]
    fn round_trips_through_json() {
        let r = sample();
        let text = serde_json::to_string(&r).unwrap();
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn kernels_of_both_models_go_into_the_environment() {
        let mut r = sample();
        r.environment = Some(Environment {
            cpu_model: "cpu".into(),
            cpu_flags: Vec::new(),
            logical_cores: 1,
            threads_used: 1,
            memory_bytes: None,
            os: "linux".into(),
            candle_version: "0.11.1".into(),
            build_profile: "release".into(),
            target_features: Vec::new(),
            git_commit: None,
            device: "cpu".into(),
            kernels: BTreeMap::new(),
        });
        let ckpt = |kernels: &[(&str, &str)]| {
            let mut c = r.tasks["stsb"].teacher.checkpoint.clone();
            c.kernels = kernels
                .iter()
                .map(|(f, k)| (f.to_string(), k.to_string()))
                .collect();
            c
        };
        let teacher = ckpt(&[("f32", "sgemm"), ("q8_0", "qgemm")]);
        let student = ckpt(&[("f32", "sgemm"), ("q8_0", "candle")]);
        r.teacher.checkpoint = Some(teacher);
        r.student.checkpoint = Some(student);
        r.note_kernels();
        let k = &r.environment.as_ref().unwrap().kernels;
        assert_eq!(k["f32"], "sgemm");
        assert_eq!(k["q8_0"], "teacher: qgemm / student: candle");
    }
}
