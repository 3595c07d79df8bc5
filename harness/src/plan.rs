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

/// One student of a run: as written on the command line, what it refers to, the block format
/// it is quantized to, and its display name.
#[derive(Debug, Clone)]
pub struct StudentPlan {
    /// The model id results record: as given, or `TEACHER (q8_0)` for the teacher's
    /// quantized copy.
    pub arg: String,
    pub reference: ModelRef,
    pub quantize: Option<GgmlDType>,
    pub name: String,
}

impl StudentPlan {
    /// One `--student`: a model reference with an optional `@FORMAT` suffix (`PATH@q8_0`),
    /// or `teacher@FORMAT` for the teacher's quantized copy. A suffix that is no block format
    /// stays part of the reference (a Hub revision: `org/name@v1`).
    pub fn parse(
        spec: &str,
        teacher_arg: &str,
        teacher: &ModelRef,
        aliases: &AliasTable,
    ) -> Result<Self> {
        let (base, quantize) = match spec.rsplit_once('@') {
            Some((base, q)) => match crate::cli::parse_quant(q) {
                Ok(format) => (base, Some((q, format))),
                Err(_) => (spec, None),
            },
            None => (spec, None),
        };
        if base == "teacher" {
            let Some((q, format)) = quantize else {
                bail!("--student teacher: the teacher as its own student needs a block format, e.g. --student teacher@q8_0");
            };
            return Ok(StudentPlan {
                arg: format!("{teacher_arg} ({q})"),
                reference: teacher.clone(),
                quantize: Some(format),
                name: String::new(),
            });
        }
        Ok(StudentPlan {
            arg: match quantize {
                Some((q, _)) => format!("{base} ({q})"),
                None => spec.to_string(),
            },
            reference: ModelRef::parse(base, aliases)
                .with_context(|| format!("--student {spec}"))?,
            quantize: quantize.map(|(_, f)| f),
            name: String::new(),
        })
    }
}

/// Display names: `--name` gives the teacher's, then each student's in order; the rest come
/// from the model ids (`all-MiniLM-L6-v2`), numbered when two would be alike (`model #2`:
/// the same folder name under two parents). Two given names alike are refused: a name heads a
/// report row and, for the second and later students, a folder. Returns the teacher's.
fn name_models(
    teacher_arg: &str,
    students: &mut [StudentPlan],
    names: &[String],
) -> Result<String> {
    if names.len() > 1 + students.len() {
        bail!(
            "--name gives {} names for {} models (the teacher, then each student in order)",
            names.len(),
            1 + students.len()
        );
    }
    let given = |i: usize| names.get(i).map(|n| n.trim()).filter(|n| !n.is_empty());
    let teacher = given(0).map_or_else(
        || reports::schema::display_name(teacher_arg),
        str::to_string,
    );
    let mut seen = vec![teacher.clone()];
    for (i, s) in students.iter_mut().enumerate() {
        s.name = match given(i + 1) {
            Some(n) if seen.iter().any(|x| x == n) => bail!(
                "--name: two models are named '{n}'; give each model its own name (the teacher, then each student in order)"
            ),
            Some(n) => n.to_string(),
            None => {
                let base = reports::schema::display_name(&s.arg);
                let mut name = base.clone();
                let mut k = 2;
                while seen.contains(&name) {
                    name = format!("{base} #{k}");
                    k += 1;
                }
                name
            }
        };
        seen.push(s.name.clone());
    }
    Ok(teacher)
}

/// A display name as a folder name: letters, digits, `.`, `-` and `_` kept, anything else `-`.
pub fn folder_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Validated inputs of `harness run`.
pub struct RunPlan {
    pub teacher_arg: String,
    pub teacher_name: String,
    /// The student being run now (`students[student_index]`): its id, name, reference and
    /// format; [`RunPlan::select_student`] moves them to the next.
    pub student_arg: String,
    pub student_name: String,
    pub teacher: ModelRef,
    pub student: ModelRef,
    /// Every student of the run, in the order given.
    pub students: Vec<StudentPlan>,
    pub student_index: usize,
    /// `--out`: the run's folder. `out` is the folder of the pair being run: the same for the
    /// first student, `OUT/students/NAME` for each later one.
    pub run_out: PathBuf,
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
    /// Make student `i` the one being run: its fields above and its pair's folder.
    pub fn select_student(&mut self, i: usize) {
        let s = self.students[i].clone();
        self.student_index = i;
        self.student_arg = s.arg;
        self.student_name = s.name.clone();
        self.student = s.reference;
        self.student_quantize = s.quantize;
        self.out = self.pair_dir(i);
    }

    /// The folder of student `i`'s pair: the run's own for the first student.
    pub fn pair_dir(&self, i: usize) -> PathBuf {
        if i == 0 {
            self.run_out.clone()
        } else {
            self.run_out
                .join("students")
                .join(folder_name(&self.students[i].name))
        }
    }

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
        if args.student.len() > 1 && student_quantize.is_some() {
            bail!("--student-quantize quantizes the one student of a run; with several students, put the format after the one to quantize: --student teacher@q8_0 or --student PATH@q4_0");
        }
        if args.student.len() > 1 && shard.is_some() {
            bail!("--shard splits a run of one student; run one sharded run per student (each with one --student) and merge each");
        }
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
        if let Some(f) = &args.gguf_file {
            if !crate::models::resolve::is_gguf_file_name(f) {
                bail!("--gguf-file {f}: the name of one .gguf file of a Hub repository (model-Q8_0.gguf)");
            }
        }
        let gguf_file = args.gguf_file.as_deref();
        let teacher = ModelRef::parse(&args.teacher, &aliases)
            .context("--teacher")?
            .with_gguf_file(gguf_file);
        let mut students = Vec::new();
        if args.student.is_empty() {
            // Only --student-quantize: the student is the teacher, quantized.
            students.push(StudentPlan {
                arg: format!(
                    "{} ({})",
                    args.teacher,
                    args.student_quantize.as_deref().unwrap_or_default()
                ),
                reference: teacher.clone(),
                quantize: student_quantize,
                name: String::new(),
            });
        }
        for s in &args.student {
            let mut student = StudentPlan::parse(s, &args.teacher, &teacher, &aliases)?;
            student.reference = student.reference.with_gguf_file(gguf_file);
            if student_quantize.is_some() {
                if student.quantize.is_some() {
                    bail!("--student {s} names a format already; leave out --student-quantize");
                }
                student.quantize = student_quantize;
            }
            students.push(student);
        }
        let teacher_name = name_models(&args.teacher, &mut students, &args.name)?;
        // Encoders score text tasks, causal LMs perplexity and generation: check local
        // models now rather than after loading them.
        let models = std::iter::once(("--teacher", &teacher))
            .chain(students.iter().map(|s| ("--student", &s.reference)));
        for (flag, model) in models {
            if let (ModelRef::Hub { file: Some(f), .. }, Some(task)) = (model, picked.first()) {
                bail!("{flag}: {f} is a GGUF file (a causal language model); {} needs an encoder (BERT, DistilBERT, MPNet)", task.name());
            }
            if let ModelRef::Local(p) = model {
                let decoder = crate::models::decoder::is_decoder(p)?;
                if decoder && !picked.is_empty() {
                    bail!("{flag} {} is a causal language model; {} needs an encoder (BERT, DistilBERT, MPNet)", p.display(), picked[0].name());
                }
                if !decoder && !picked_lm.is_empty() {
                    bail!("{flag} {} is not a causal language model (GPT-2, Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma 2 or 3, or a .gguf file); {} needs one", p.display(), picked_lm[0].name());
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
            s.show_progress = crate::progress::wanted(args.quiet);
            if let Some(w) = args.watts_per_core {
                if !(w > 0.0 && w.is_finite()) {
                    bail!("--watts-per-core must be a positive number");
                }
                s.watts_per_core = w;
            }
            Some(s)
        };
        let first = students[0].clone();
        Ok(RunPlan {
            teacher_arg: args.teacher.clone(),
            teacher_name,
            student_arg: first.arg,
            student_name: first.name,
            teacher,
            student: first.reference,
            students,
            student_index: 0,
            run_out: args.out.clone(),
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
            student_quantize: first.quantize,
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

#[cfg(test)]
mod naming_tests {
    use super::*;

    fn student(arg: &str) -> StudentPlan {
        StudentPlan {
            arg: arg.into(),
            reference: ModelRef::Mock(arg.into()),
            quantize: None,
            name: String::new(),
        }
    }

    #[test]
    fn names_come_from_the_ids_and_alike_ones_are_numbered() {
        let mut s = vec![student("a/model"), student("b/model"), student("c/other")];
        let t = name_models("x/model", &mut s, &[]).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            (t.as_str(), names),
            ("model", vec!["model #2", "model #3", "other"])
        );
        let t = name_models(
            "x/model",
            &mut s,
            &["BERT".into(), "".into(), "small".into()],
        )
        .unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            (t.as_str(), names),
            ("BERT", vec!["model", "small", "other"])
        );
        assert_eq!(
            folder_name("all-MiniLM-L6-v2 q8_0"),
            "all-MiniLM-L6-v2-q8_0"
        );
        assert_eq!(folder_name("a/b:c"), "a-b-c");
    }
}
