//! `RunPlan`: the command line validated cheaply before anything expensive happens (as
//! ripgrep's low-level then high-level arguments). Task names, model references, the data
//! files of every task and the output folder are all checked here, so bad input fails in
//! milliseconds with one clear line and leaves no results behind.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use tasks::{DataSource, Dataset, EvalSplit, Task};

use crate::cli::RunArgs;
use crate::models::resolve::{AliasTable, ModelRef};

/// One task with its loaded evaluation splits.
pub struct PlannedTask {
    pub task: &'static dyn Task,
    pub splits: Vec<(EvalSplit, Dataset)>,
}

impl PlannedTask {
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
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        if args.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if args.probe_train_rows == 0 {
            bail!("--probe-train-rows must be at least 1");
        }
        if args.max_length.is_some_and(|m| m < 8) {
            bail!("--max-length must be at least 8 tokens");
        }
        let aliases = AliasTable::load(args.models.aliases.as_deref())?;
        let mut picked: Vec<&'static dyn Task> = Vec::new();
        for name in &args.task {
            let task = tasks::find_task(name.trim()).map_err(anyhow::Error::msg)?;
            if !picked.iter().any(|t| t.name() == task.name()) {
                picked.push(task);
            }
        }
        let teacher = ModelRef::parse(&args.teacher, &aliases).context("--teacher")?;
        let student = ModelRef::parse(&args.student, &aliases).context("--student")?;
        let device = parse_device(&args.models.device)?;

        let (data, data_origin) = match &args.data_dir {
            Some(dir) => {
                if !dir.is_dir() {
                    bail!("--data-dir {}: folder not found", dir.display());
                }
                let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
                (
                    DataSource::GlueDir(dir.clone()),
                    canon.display().to_string(),
                )
            }
            None => {
                let names: Vec<&str> = picked.iter().map(|t| t.name()).collect();
                (
                    crate::run::hub_glue_source(&names)?,
                    "hub:nyu-mll/glue".to_string(),
                )
            }
        };
        let mut planned = Vec::new();
        for task in picked {
            let mut splits = Vec::new();
            for split in task.eval_splits() {
                splits.push((*split, task.load(&data, split)?));
            }
            planned.push(PlannedTask { task, splits });
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
        check_writable(&args.out)?;
        Ok(RunPlan {
            teacher_arg: args.teacher.clone(),
            student_arg: args.student.clone(),
            teacher,
            student,
            aliases,
            tasks: planned,
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
        })
    }
}
