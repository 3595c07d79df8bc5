//! `RunPlan`: the command line validated cheaply before anything expensive happens (as
//! ripgrep's low-level then high-level arguments). Task names, model references, the data
//! files of every task and the output folder are all checked here, so bad input fails in
//! milliseconds with one clear line and leaves no results behind.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use tasks::generation::tasks::{LmSource, LmTask, LoadOptions};
use tasks::{AnyTask, DataSource, Dataset, EvalSplit, Task};

use crate::cli::RunArgs;
use crate::models::resolve::{AliasTable, ModelRef};

/// One language-modelling task with its loaded data.
pub struct PlannedLmTask {
    pub task: &'static dyn LmTask,
    pub data: tasks::generation::tasks::LmData,
}

/// Tasks of a plan whose data comes from the Hub.
pub struct HubPending {
    pub text: Vec<&'static dyn Task>,
    pub lm: Vec<&'static dyn LmTask>,
}

impl PlannedLmTask {
    /// The task with its data read from `source`.
    pub fn load(
        task: &'static dyn LmTask,
        source: &LmSource,
        options: &LoadOptions,
    ) -> Result<Self> {
        Ok(PlannedLmTask {
            task,
            data: task.load(source, options)?,
        })
    }
}

/// One task with its loaded evaluation splits.
pub struct PlannedTask {
    pub task: &'static dyn Task,
    pub splits: Vec<(EvalSplit, Dataset)>,
}

impl PlannedTask {
    /// The task with every evaluation split read from `data`.
    pub fn load(task: &'static dyn Task, data: &DataSource, limit: Option<usize>) -> Result<Self> {
        let mut splits = Vec::new();
        for split in task.eval_splits() {
            let mut ds = task.load(data, split)?;
            if let Some(n) = limit {
                ds.examples.truncate(n);
            }
            splits.push((*split, ds));
        }
        Ok(PlannedTask { task, splits })
    }

    pub fn n_examples(&self) -> usize {
        self.splits.iter().map(|(_, d)| d.examples.len()).sum()
    }
}

/// Validated inputs of `harness run`.
pub struct RunPlan {
    pub teacher_arg: String,
    pub student_arg: String,
    pub teacher: ModelRef,
    pub student: ModelRef,
    pub aliases: AliasTable,
    pub tasks: Vec<PlannedTask>,
    /// Perplexity and generation tasks (causal LMs).
    pub lm_tasks: Vec<PlannedLmTask>,
    /// Tasks whose data is still to be fetched from the Hub (no `--data-dir`); empty once
    /// [`crate::hub_data::fetch_planned`] has run.
    pub hub_pending: Option<HubPending>,
    pub lm: reports::LmSettings,
    /// `--limit` and `--num-fewshot`, as every task is loaded with them.
    pub load_options: LoadOptions,
    pub student_quantize: Option<GgmlDType>,
    pub dequantize_teacher: bool,
    pub data: DataSource,
    pub data_origin: String,
    pub out: PathBuf,
    pub batch_size: usize,
    pub max_length: Option<usize>,
    pub probe: tasks::probe_fit::ProbeConfig,
    pub device: Device,
    pub device_name: String,
    pub quiet: bool,
    /// `None` with `--no-profile`.
    pub profile: Option<crate::profile::ProfileSettings>,
    /// `--shard I/N`: run only this slice of the plan's cells.
    pub shard: Option<crate::shard::ShardSpec>,
}

pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ordinal: usize = n
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse()
                .context("--device cuda:N needs a number")?;
            if !candle_core::utils::cuda_is_available() {
                bail!("--device {n}: this harness was built without CUDA; rebuild with `cargo build --release --features cuda`");
            }
            Ok(Device::new_cuda(ordinal)?)
        }
        "metal" => {
            if !candle_core::utils::metal_is_available() {
                bail!("--device metal: this harness was built without Metal; rebuild with `--features metal`");
            }
            Ok(Device::new_metal(0)?)
        }
        other => bail!("unknown --device '{other}' (cpu, cuda, cuda:N or metal)"),
    }
}

/// Check that `out` can be created and written, without leaving anything behind.
fn check_writable(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("output folder {} cannot be created", out.display()))?;
    let probe = out.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder {} is not writable", out.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

impl RunPlan {
    /// The part of a cell's cache key that `--limit` and `--num-fewshot` add (empty without
    /// them, so that the keys of earlier runs still match).
    pub fn load_options_key(&self) -> String {
        let o = &self.load_options;
        let mut key = String::new();
        if let Some(n) = o.limit {
            key += &format!(";limit={n}");
        }
        if o.num_fewshot > 0 {
            key += &format!(";fewshot={}", o.num_fewshot);
        }
        key
    }

    /// The plan of `harness run`; checks that the output folder can be written.
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        let plan = Self::without_output(args)?;
        check_writable(&args.out)?;
        Ok(plan)
    }

    /// The plan without touching the output folder (`harness plan` only prints it).
    pub fn without_output(args: &RunArgs) -> Result<Self> {
        if args.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if args.probe_train_rows == 0 {
            bail!("--probe-train-rows must be at least 1");
        }
        if args.max_length.is_some_and(|m| m < 8) {
            bail!("--max-length must be at least 8 tokens");
        }
        if args.context_length < 2 {
            bail!("--context-length must be at least 2 tokens");
        }
        if args.stride == 0 || args.stride > args.context_length {
            bail!(
                "--stride must be between 1 and --context-length ({})",
                args.context_length
            );
        }
        if args.max_eval_tokens.is_some_and(|m| m < 2) {
            bail!("--max-eval-tokens must be at least 2");
        }
        if args.max_new_tokens == 0 {
            bail!("--max-new-tokens must be at least 1");
        }
        if args.limit == Some(0) {
            bail!("--limit must be at least 1 example");
        }
        let shard = args
            .shard
            .as_deref()
            .map(|s| crate::shard::ShardSpec::parse(s, &|k| std::env::var(k).ok()))
            .transpose()?;
        let load_options = LoadOptions {
            limit: args.limit,
            num_fewshot: args.num_fewshot,
        };
        let student_quantize =
            crate::cli::parse_quant_flag(args.student_quantize.as_deref(), "--student-quantize")
                .map_err(anyhow::Error::msg)?;
        let aliases = AliasTable::load(args.models.aliases.as_deref())?;
        let mut picked: Vec<&'static dyn Task> = Vec::new();
        let mut picked_lm: Vec<&'static dyn tasks::generation::tasks::LmTask> = Vec::new();
        for name in &args.task {
            match tasks::find_any_task(name.trim()).map_err(anyhow::Error::msg)? {
                AnyTask::Text(task) => {
                    if !picked.iter().any(|t| t.name() == task.name()) {
                        picked.push(task);
                    }
                }
                AnyTask::Lm(task) => {
                    if !picked_lm.iter().any(|t| t.name() == task.name()) {
                        picked_lm.push(task);
                    }
                }
            }
        }
        let teacher = ModelRef::parse(&args.teacher, &aliases).context("--teacher")?;
        let (student, student_arg) = match &args.student {
            Some(s) => (
                ModelRef::parse(s, &aliases).context("--student")?,
                s.clone(),
            ),
            None => (
                teacher.clone(),
                format!(
                    "{} ({})",
                    args.teacher,
                    args.student_quantize.as_deref().unwrap_or_default()
                ),
            ),
        };
        // Encoders score text tasks, causal LMs perplexity and generation: check local
        // models now rather than after loading them.
        for (flag, model) in [("--teacher", &teacher), ("--student", &student)] {
            if let ModelRef::Local(p) = model {
                let decoder = crate::models::decoder::is_decoder(p)?;
                if decoder && !picked.is_empty() {
                    bail!("{flag} {} is a causal language model; {} needs an encoder (BERT, DistilBERT, MPNet)", p.display(), picked[0].name());
                }
                if !decoder && !picked_lm.is_empty() {
                    bail!("{flag} {} is not a causal language model (GPT-2, Llama, Qwen2, Mistral or a .gguf file); {} needs one", p.display(), picked_lm[0].name());
                }
            }
        }
        let device = parse_device(&args.models.device)?;

        // Local data is read and checked here (cheap, and a malformed row should fail before
        // any model loads); data on the Hub is fetched by `hub_data::fetch_planned` after the
        // plan is made, so that making a plan never downloads.
        let (data, data_origin, hub_pending) = match &args.data_dir {
            Some(dir) => {
                if !dir.is_dir() {
                    bail!("--data-dir {}: folder not found", dir.display());
                }
                let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                (
                    DataSource::GlueDir(dir.clone()),
                    canon.display().to_string(),
                    None,
                )
            }
            None => (
                DataSource::Records(Default::default()),
                if picked.is_empty() {
                    "hub"
                } else {
                    "hub:nyu-mll/glue"
                }
                .to_string(),
                Some(HubPending {
                    text: std::mem::take(&mut picked),
                    lm: std::mem::take(&mut picked_lm),
                }),
            ),
        };
        let mut lm_tasks = Vec::new();
        if let Some(dir) = &args.data_dir {
            for task in picked_lm {
                lm_tasks.push(PlannedLmTask::load(
                    task,
                    &LmSource::Dir(dir.clone()),
                    &load_options,
                )?);
            }
        }
        let mut planned = Vec::new();
        for task in picked {
            planned.push(PlannedTask::load(task, &data, args.limit)?);
        }
        let profile = if args.no_profile {
            None
        } else {
            let mut s = if args.quick {
                crate::profile::ProfileSettings::quick()
            } else {
                crate::profile::ProfileSettings::full()
            };
            if let Some(n) = args.min_iterations {
                s.min_iterations = n.max(1);
            }
            if let Some(t) = args.min_time_s {
                if !(t >= 0.0 && t.is_finite()) {
                    bail!("--min-time-s must be a non-negative number of seconds");
                }
                s.min_time_s = t;
            }
            s.show_progress = !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stdout());
            if let Some(w) = args.watts_per_core {
                if !(w > 0.0 && w.is_finite()) {
                    bail!("--watts-per-core must be a positive number");
                }
                s.watts_per_core = w;
            }
            Some(s)
        };
        Ok(RunPlan {
            teacher_arg: args.teacher.clone(),
            student_arg,
            teacher,
            student,
            aliases,
            tasks: planned,
            lm_tasks,
            hub_pending,
            lm: reports::LmSettings {
                context_length: args.context_length,
                stride: args.stride,
                max_eval_tokens: args.max_eval_tokens,
                fidelity_tokens: args.fidelity_tokens,
                max_new_tokens: args.max_new_tokens,
                num_fewshot: args.num_fewshot,
            },
            load_options,
            student_quantize,
            dequantize_teacher: args.dequantize_teacher,
            data,
            data_origin,
            out: args.out.clone(),
            batch_size: args.batch_size,
            max_length: args.max_length,
            probe: tasks::probe_fit::ProbeConfig {
                train_rows: args.probe_train_rows,
                ..Default::default()
            },
            device,
            device_name: args.models.device.clone(),
            quiet: args.quiet,
            profile,
            shard,
        })
    }
}
