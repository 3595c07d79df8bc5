//! `harness merge`: join the results of separate runs (whole tasks, e.g. one job per task) or
//! the shards of one run (`harness run --shard I/N`), strictly.
//!
//! Strict means that a merged file never claims what its inputs do not say: inputs of other
//! settings, schema, harness version or commit, task versions or models are refused, as are
//! two different copies of one cell and (unless `--allow-partial`) a cell of the plan that no
//! input has; inputs measured on different machines are refused unless `--allow-mixed-env`,
//! and then the file says that its speed figures come from several hosts. Shards' cells are
//! joined and each task's result, paired statistics included, is computed again from the two
//! cells' per-example outputs by the same functions `harness run` uses, so a merge of N shards
//! gives the numbers of the unsharded run. Each shard leaves the per-example data those
//! statistics need in `cells/<task>.data.json`, so a merge needs neither models nor data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reports::{MergeRecord, MergedInput, Results, TaskResult};
use serde::{Deserialize, Serialize};
use tasks::generation::tasks::LmData;
use tasks::{AnyTask, Dataset};

use crate::cells::{cell_path, CellFile, Role};
use crate::lm::LmCellFile;
use crate::plan::{PlannedLmTask, PlannedTask, RunPlan};

/// What a shard leaves of a task's data for the merge to compute paired statistics with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskData {
    /// A text task's evaluation splits, in the task's order.
    Text {
        task: String,
        version: u32,
        splits: Vec<Dataset>,
    },
    /// A multiple-choice task's examples ([`tasks::choice::ChoiceSet::reference`]).
    Choice {
        task: String,
        version: u32,
        set: tasks::choice::ChoiceSet,
    },
}

/// Write `cells/<task>.data.json` for every text and multiple-choice task of which `mine`
/// accepts a cell.
pub fn write_task_data(plan: &RunPlan, mine: &dyn Fn(&str, Role) -> bool) -> Result<()> {
    let any = |name: &str| mine(name, Role::Teacher) || mine(name, Role::Student);
    for pt in &plan.tasks {
        let name = pt.task.name();
        if any(name) {
            let data = TaskData::Text {
                task: name.to_string(),
                version: pt.task.version(),
                splits: pt.splits.iter().map(|(_, d)| d.clone()).collect(),
            };
            reports::io::write_json_atomic(&cell_path(&plan.out, name, "data"), &data)?;
        }
    }
    for pt in &plan.lm_tasks {
        let name = pt.task.name();
        if let (LmData::Choices(set), true) = (&pt.data, any(name)) {
            let data = TaskData::Choice {
                task: name.to_string(),
                version: pt.task.version(),
                set: set.reference(),
            };
            reports::io::write_json_atomic(&cell_path(&plan.out, name, "data"), &data)?;
        }
    }
    Ok(())
}

/// How strict a merge is.
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeOptions {
    /// Merge although some planned cells are in no input (their tasks are left out).
    pub allow_partial: bool,
    /// Merge inputs measured on different machines.
    pub allow_mixed_env: bool,
}

/// One input: its results and the folder its `cells/` and `predictions/` are in.
struct Input {
    name: String,
    dir: PathBuf,
    results: Results,
}

fn read_input(path: &Path) -> Result<Input> {
    let (file, dir) = if path.is_dir() {
        (path.join("results.json"), path.to_path_buf())
    } else {
        (
            path.to_path_buf(),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let results = crate::report::read_results(&file)?;
    Ok(Input {
        name: path.display().to_string(),
        dir,
        results,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: unreadable", path.display()))
}

/// The first field in which two JSON values differ, as `a.b.c`, with both values.
fn first_difference(
    path: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        _ if a == b => None,
        _ => Some((path.to_string(), a.to_string(), b.to_string())),
    }
}

/// Refuse inputs that are not parts of one run (or of runs with the same settings).
fn check_same_run(inputs: &[Input]) -> Result<()> {
    let first = &inputs[0];
    let f = &first.results;
    for other in &inputs[1..] {
        let r = &other.results;
        let differ = |field: &str, a: &str, b: &str| -> anyhow::Error {
            anyhow::anyhow!(
                "cannot merge: {field} is {a} in {} and {b} in {}; merge only the shards or runs of one plan",
                first.name,
                other.name
            )
        };
        if r.schema_version != f.schema_version {
            return Err(differ(
                "schema_version",
                &f.schema_version.to_string(),
                &r.schema_version.to_string(),
            ));
        }
        if r.harness_version != f.harness_version {
            return Err(differ(
                "harness_version",
                &f.harness_version,
                &r.harness_version,
            ));
        }
        if let (Some(a), Some(b)) = (&f.git_commit, &r.git_commit) {
            if a != b {
                return Err(differ("git_commit", a, b));
            }
        }
        for (role, a, b) in [
            ("teacher", &f.teacher.id, &r.teacher.id),
            ("student", &f.student.id, &r.student.id),
        ] {
            if a != b {
                return Err(differ(role, &format!("'{a}'"), &format!("'{b}'")));
            }
        }
        let (a, b) = (
            serde_json::to_value(&f.settings)?,
            serde_json::to_value(&r.settings)?,
        );
        if let Some((field, x, y)) = first_difference("settings", &a, &b) {
            return Err(differ(&field, &x, &y));
        }
        match (&f.shard, &r.shard) {
            (None, None) => {}
            (Some(x), Some(y)) => {
                if x.count != y.count {
                    return Err(differ(
                        "the shard count",
                        &x.count.to_string(),
                        &y.count.to_string(),
                    ));
                }
                if x.planned != y.planned {
                    bail!(
                        "cannot merge: {} and {} are shards of different plans (their planned cells differ: other tasks, models or data)",
                        first.name,
                        other.name
                    );
                }
            }
            _ => bail!(
                "cannot merge: {} is a shard (--shard) and {} is not; merge the shards of one run, or whole runs",
                if f.shard.is_some() { &first.name } else { &other.name },
                if f.shard.is_some() { &other.name } else { &first.name }
            ),
        }
        // Task versions: the same task must have been scored by the same task code.
        for (task, t) in &r.tasks {
            if let Some(ft) = f.tasks.get(task) {
                if ft.task_version != t.task_version {
                    return Err(differ(
                        &format!("the version of task '{task}'"),
                        &ft.task_version.to_string(),
                        &t.task_version.to_string(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Why the inputs' speed figures cannot be put in one file, if they cannot.
fn mixed_environments(inputs: &[Input]) -> Option<String> {
    let first = &inputs[0];
    inputs[1..].iter().find_map(|other| {
        reports::compare::speed_not_comparable(&first.results, &other.results)
            .map(|why| format!("{} and {}: {why}", first.name, other.name))
    })
}

/// Copy `predictions/<task>.*` of an input into `out`'s.
fn copy_predictions(input: &Input, task: &str, out: &Path) -> Result<()> {
    let dir = input.dir.join("predictions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let target = out.join("predictions");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.split('.').next() == Some(task) {
            std::fs::create_dir_all(&target)?;
            let bytes = std::fs::read(e.path())?;
            reports::io::write_atomic(&target.join(&name), &bytes)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
    }
    Ok(())
}

/// A cell file from the input that finished it, and that input's index.
struct Found<T> {
    input: usize,
    file: T,
}

/// The folder (predictions, reports) and the results file of `--out`: a folder, or a path
/// ending in `.json` whose parent is the folder.
pub fn output_paths(out: &Path) -> (PathBuf, PathBuf) {
    if out.extension().is_some_and(|e| e == "json") {
        (
            out.parent().map(Path::to_path_buf).unwrap_or_default(),
            out.to_path_buf(),
        )
    } else {
        (out.to_path_buf(), out.join("results.json"))
    }
}

/// Merge `paths` (results files or run folders) into `out` (a folder, or a `.json` file whose
/// folder gets `predictions/`). Returns the merged results, already written.
pub fn merge(paths: &[PathBuf], out: &Path, opts: MergeOptions) -> Result<Results> {
    if paths.is_empty() {
        bail!("nothing to merge: give results files or run folders");
    }
    let inputs: Vec<Input> = paths.iter().map(|p| read_input(p)).collect::<Result<_>>()?;
    // Runs of several students are one pair folder per extra student; merging those is not
    // built yet, and dropping their students silently would be worse than refusing.
    if let Some(i) = inputs.iter().find(|i| !i.results.more_students.is_empty()) {
        bail!(
            "cannot merge {}: it compares {} students with the teacher, and merge joins one-student runs only; merge the runs of each student (`harness run` with one --student) instead",
            i.dir.display(),
            i.results.n_students()
        );
    }
    check_same_run(&inputs)?;
    let mixed = mixed_environments(&inputs);
    if let (Some(why), false) = (&mixed, opts.allow_mixed_env) {
        bail!("cannot merge: the inputs were measured on different machines ({why}), so their speed figures do not belong in one table; pass --allow-mixed-env to merge anyway (the results then say so)");
    }
    let (out_dir, out_file) = output_paths(out);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    let first = &inputs[0].results;
    let mut merged = Results {
        tasks: BTreeMap::new(),
        skipped: BTreeMap::new(),
        macro_score: None,
        shard: None,
        merge: None,
        more_students: Vec::new(),
        created_unix_s: inputs
            .iter()
            .map(|i| i.results.created_unix_s)
            .max()
            .unwrap_or(0),
        ..first.clone()
    };
    let mut taken: Vec<Vec<String>> = vec![Vec::new(); inputs.len()];
    let mut missing = Vec::new();
    if first.shard.is_some() {
        merge_shards(&inputs, &out_dir, &mut merged, &mut taken, &mut missing)?;
        if !missing.is_empty() && !opts.allow_partial {
            bail!(
                "cannot merge: no input has the cell(s) {} of the plan (a shard not given, not finished, or given twice in place of another); pass every shard, or --allow-partial to merge what there is",
                missing.join(", ")
            );
        }
    } else {
        merge_whole_runs(&inputs, &out_dir, &mut merged, &mut taken)?;
    }
    for input in &inputs {
        for (task, why) in &input.results.skipped {
            if !merged.tasks.contains_key(task) {
                merged
                    .skipped
                    .entry(task.clone())
                    .or_insert_with(|| why.clone());
            }
        }
    }
    // The models' summaries as `harness run` gives them: the first task of the plan's (an
    // alias may name a checkpoint per task). Whole runs keep the first input's.
    if let Some(s) = &first.shard {
        let lead = s.planned.iter().find_map(|c| merged.tasks.get(&c.task));
        merged.teacher.checkpoint = lead.map(|t| t.teacher.checkpoint.clone());
        merged.student.checkpoint = lead.map(|t| t.student.checkpoint.clone());
    }
    merged.note_kernels();
    merged.update_macro();
    merged.merge = Some(MergeRecord {
        inputs: inputs
            .iter()
            .zip(taken)
            .map(|(i, cells)| MergedInput {
                source: i.name.clone(),
                shard: i
                    .results
                    .shard
                    .as_ref()
                    .map(|s| format!("{}/{}", s.index, s.count)),
                cells,
                environment: mixed.as_ref().and(i.results.environment.clone()),
            })
            .collect(),
        missing_cells: missing,
        mixed_environments: mixed,
    });
    reports::io::write_json_atomic(&out_file, &merged)
        .with_context(|| format!("cannot write {}", out_file.display()))?;
    Ok(merged)
}

/// Whole runs: their tasks joined; one task in two inputs must be the same result.
fn merge_whole_runs(
    inputs: &[Input],
    out: &Path,
    merged: &mut Results,
    taken: &mut [Vec<String>],
) -> Result<()> {
    let mut from: BTreeMap<String, usize> = BTreeMap::new();
    for (k, input) in inputs.iter().enumerate() {
        for (task, t) in &input.results.tasks {
            match merged.tasks.get(task) {
                Some(existing) if !same_numbers(existing, t) => bail!(
                    "cannot merge: task '{task}' conflicts between {} and {} (different metrics for the same cell)",
                    inputs[from[task]].name,
                    input.name
                ),
                Some(_) => {}
                None => {
                    merged.tasks.insert(task.clone(), t.clone());
                    from.insert(task.clone(), k);
                    taken[k].push(task.clone());
                    copy_predictions(input, task, out)?;
                }
            }
        }
    }
    Ok(())
}

/// Two results of one task agree in everything but how long they took.
fn same_numbers(a: &TaskResult, b: &TaskResult) -> bool {
    a.teacher.metrics == b.teacher.metrics
        && a.student.metrics == b.student.metrics
        && a.n_examples == b.n_examples
}

/// Shards of one plan: each planned cell from the shard that finished it, each task's result
/// computed again from its two cells.
fn merge_shards(
    inputs: &[Input],
    out: &Path,
    merged: &mut Results,
    taken: &mut [Vec<String>],
    missing: &mut Vec<String>,
) -> Result<()> {
    let planned = inputs[0]
        .results
        .shard
        .as_ref()
        .expect("shards")
        .planned
        .clone();
    // Plan order, each task once.
    let mut task_names: Vec<String> = Vec::new();
    for c in &planned {
        if !task_names.contains(&c.task) {
            task_names.push(c.task.clone());
        }
    }
    let say = |_: String| {};
    for task in &task_names {
        let roles: Vec<&str> = planned
            .iter()
            .filter(|c| &c.task == task)
            .map(|c| c.role.as_str())
            .collect();
        if roles == ["pair"] {
            // Both passes ran in one shard, which put the whole result together.
            let id = format!("{task}.pair");
            let have: Vec<usize> = (0..inputs.len())
                .filter(|&k| finished_key(&inputs[k], &id).is_some())
                .collect();
            let Some(&k) = have.first() else {
                if !skipped_anywhere(inputs, task) {
                    missing.push(id);
                }
                continue;
            };
            // A hand-edited or truncated shard file may claim the cell without its result.
            let result_of = |k: usize| {
                inputs[k].results.tasks.get(task).with_context(|| {
                    format!(
                        "cannot merge: {} records {id} as finished but has no result for '{task}'; rerun that shard",
                        inputs[k].name
                    )
                })
            };
            let t = result_of(k)?;
            for &other in &have[1..] {
                if !same_numbers(t, result_of(other)?) {
                    bail!(
                        "cannot merge: cell {id} conflicts between {} and {} (different metrics)",
                        inputs[k].name,
                        inputs[other].name
                    );
                }
            }
            merged.tasks.insert(task.clone(), t.clone());
            taken[k].push(id);
            copy_predictions(&inputs[k], task, out)?;
            continue;
        }
        let data = task_data(inputs, task)?;
        match data {
            None => {
                for role in roles {
                    if !skipped_anywhere(inputs, task) {
                        missing.push(format!("{task}.{role}"));
                    }
                }
            }
            Some(TaskData::Text {
                task: name,
                version,
                splits,
            }) => {
                let Some((t, s)) = find_pair::<CellFile>(inputs, &name, missing)? else {
                    continue;
                };
                let Some(AnyTask::Text(def)) = tasks::find_any_task(&name).ok() else {
                    bail!("cannot merge: task '{name}' is not a text task of this harness");
                };
                same_version(&name, version, def.version())?;
                if splits.len() != def.eval_splits().len() {
                    bail!("cannot merge: task '{name}' has {} evaluation splits in the shards' data and {} in this harness", splits.len(), def.eval_splits().len());
                }
                let pt = PlannedTask {
                    task: def,
                    splits: def.eval_splits().iter().copied().zip(splits).collect(),
                };
                for (role, cf) in [("teacher", &t.file), ("student", &s.file)] {
                    let sizes: Vec<usize> = cf.predictions.iter().map(Vec::len).collect();
                    let want: Vec<usize> =
                        pt.splits.iter().map(|(_, d)| d.examples.len()).collect();
                    if sizes != want {
                        bail!("cannot merge: the {role} cell of '{name}' has {sizes:?} predictions per split, the data {want:?}");
                    }
                }
                let tr = crate::run::text_task_result(out, &pt, &t.file, &s.file)?;
                merged.tasks.insert(name.clone(), tr);
                taken[t.input].push(format!("{name}.teacher"));
                taken[s.input].push(format!("{name}.student"));
            }
            Some(TaskData::Choice {
                task: name,
                version,
                set,
            }) => {
                let Some((t, s)) = find_pair::<LmCellFile>(inputs, &name, missing)? else {
                    continue;
                };
                let Some(AnyTask::Lm(def)) = tasks::find_any_task(&name).ok() else {
                    bail!(
                        "cannot merge: task '{name}' is not a language-model task of this harness"
                    );
                };
                same_version(&name, version, def.version())?;
                let pt = PlannedLmTask {
                    task: def,
                    data: LmData::Choices(set),
                };
                let (ti, si) = (t.input, s.input);
                let tr = crate::lm::lm_task_result(out, &pt, t.file, s.file, None, &say)?;
                merged.tasks.insert(name.clone(), tr);
                taken[ti].push(format!("{name}.teacher"));
                taken[si].push(format!("{name}.student"));
            }
        }
    }
    Ok(())
}

/// The shards' task code must be this harness's: the data and scoring are reread here.
fn same_version(task: &str, shards: u32, here: u32) -> Result<()> {
    if shards != here {
        bail!("cannot merge: task '{task}' is version {shards} in the shards and {here} in this harness");
    }
    Ok(())
}

/// Both cells of a task, or `None` with the absent ones noted as missing.
fn find_pair<T: for<'de> Deserialize<'de>>(
    inputs: &[Input],
    task: &str,
    missing: &mut Vec<String>,
) -> Result<Option<(Found<T>, Found<T>)>> {
    let t = find_cell::<T>(inputs, task, Role::Teacher)?;
    let s = find_cell::<T>(inputs, task, Role::Student)?;
    Ok(match (t, s) {
        (Some(t), Some(s)) => Some((t, s)),
        (t, s) => {
            note_missing(inputs, task, [t.is_none(), s.is_none()], missing);
            None
        }
    })
}

fn skipped_anywhere(inputs: &[Input], task: &str) -> bool {
    inputs.iter().any(|i| i.results.skipped.contains_key(task))
}

fn note_missing(inputs: &[Input], task: &str, absent: [bool; 2], missing: &mut Vec<String>) {
    if skipped_anywhere(inputs, task) {
        return;
    }
    for (role, absent) in ["teacher", "student"].into_iter().zip(absent) {
        if absent {
            missing.push(format!("{task}.{role}"));
        }
    }
}

/// The cache key an input's shard record gives for a finished cell.
fn finished_key<'a>(input: &'a Input, id: &str) -> Option<&'a String> {
    input.results.shard.as_ref()?.finished.get(id)
}

/// The task's data file from the inputs that have one; all copies must agree.
fn task_data(inputs: &[Input], task: &str) -> Result<Option<TaskData>> {
    let mut found: Option<(usize, TaskData)> = None;
    for (k, input) in inputs.iter().enumerate() {
        let has_cell = ["teacher", "student"]
            .iter()
            .any(|r| finished_key(input, &format!("{task}.{r}")).is_some());
        if !has_cell {
            continue;
        }
        let path = cell_path(&input.dir, task, "data");
        let data: TaskData = read_json(&path).with_context(|| {
            format!(
                "{}: the shard finished a cell of '{task}' but its data file is unreadable",
                input.name
            )
        })?;
        match &found {
            Some((j, d)) if *d != data => bail!(
                "cannot merge: {} and {} read different data for task '{task}'",
                inputs[*j].name,
                input.name
            ),
            Some(_) => {}
            None => found = Some((k, data)),
        }
    }
    Ok(found.map(|(_, d)| d))
}

/// The cell of `role` from the inputs that finished it (its file must hold the key the shard
/// recorded); two inputs with different copies (metrics or per-example outputs) are a
/// conflict.
fn find_cell<T: for<'de> Deserialize<'de>>(
    inputs: &[Input],
    task: &str,
    role: Role,
) -> Result<Option<Found<T>>> {
    let id = format!("{task}.{}", role.name());
    // The first copy, with the input it came from.
    let mut first: Option<(usize, serde_json::Value)> = None;
    for (k, input) in inputs.iter().enumerate() {
        let Some(key) = finished_key(input, &id) else {
            continue;
        };
        let path = cell_path(&input.dir, task, role.name());
        let value: serde_json::Value = read_json(&path)?;
        if value.pointer("/cell/cache_key").and_then(|v| v.as_str()) != Some(key.as_str()) {
            bail!(
                "cannot merge: {} is not the cell {} recorded as finished (it was overwritten by another run); rerun that shard",
                path.display(),
                input.name
            );
        }
        match &first {
            Some((j, v)) => {
                if strip_timing(v.clone()) != strip_timing(value) {
                    bail!(
                        "cannot merge: cell {id} conflicts between {} and {} (different outputs for the same cell)",
                        inputs[*j].name,
                        input.name
                    );
                }
            }
            None => first = Some((k, value)),
        }
    }
    first
        .map(|(k, value)| {
            let file = serde_json::from_value(value)
                .with_context(|| format!("{}: cell {id} is unreadable", inputs[k].name))?;
            Ok(Found { input: k, file })
        })
        .transpose()
}

/// A cell's per-example outputs and metrics without what differs between two runs of it.
fn strip_timing(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(cell) = v.get_mut("cell").and_then(|c| c.as_object_mut()) {
        for k in ["profile", "elapsed_s", "checkpoint"] {
            cell.remove(k);
        }
    }
    v
}
