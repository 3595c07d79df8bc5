//! Task data from the Hub: the parquet files of the dataset a task declares (one folder per
//! config, `validation-00000-of-00001.parquet` and so on), fetched through hf-hub like models
//! and read into rows of column name to JSON value for the task to pick its fields from. Which
//! repository, config and split is the task's business, never this module's.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::Value;

/// A parquet value as JSON: nested structs (ARC's `choices {text, label}`) become objects and
/// lists (HellaSwag's `endings`, MMLU's `choices`) arrays, so tasks read Hub rows with the
/// same field paths as their jsonl files.
fn json_of(field: &Field) -> Value {
    match field {
        Field::Str(s) => Value::from(s.as_str()),
        Field::Byte(i) => Value::from(*i),
        Field::Short(i) => Value::from(*i),
        Field::Int(i) => Value::from(*i),
        Field::Long(i) => Value::from(*i),
        Field::UByte(i) => Value::from(*i),
        Field::UShort(i) => Value::from(*i),
        Field::UInt(i) => Value::from(*i),
        Field::ULong(i) => Value::from(*i),
        Field::Float(f) => Value::from(*f as f64),
        Field::Double(f) => Value::from(*f),
        Field::Bool(b) => Value::from(*b),
        Field::Null => Value::Null,
        Field::Group(row) => Value::Object(
            row.get_column_iter()
                .map(|(k, v)| (k.clone(), json_of(v)))
                .collect(),
        ),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(json_of).collect()),
        other => Value::from(other.to_string()),
    }
}

/// Rows of one parquet file.
pub fn read_parquet_rows(path: &Path) -> Result<Vec<BTreeMap<String, Value>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a readable parquet file", path.display()))?;
    let mut rows = Vec::new();
    for row in reader
        .get_row_iter(None)
        .with_context(|| format!("{}: cannot read rows", path.display()))?
    {
        let row = row.with_context(|| format!("{}: corrupt row", path.display()))?;
        let map = row
            .get_column_iter()
            .map(|(name, field)| (name.clone(), json_of(field)))
            .collect();
        rows.push(map);
    }
    Ok(rows)
}

/// The `text` column of a text dataset's split on the Hub (`Salesforce/wikitext`), one row
/// per line of the original file.
pub fn text_rows(
    repo: &str,
    config: &str,
    split: &str,
) -> Result<tasks::generation::tasks::LmSource> {
    let file = tasks::parquet_file(config, split);
    let paths = crate::models::resolve::fetch_dataset_files(repo, std::slice::from_ref(&file))?;
    let rows = read_parquet_rows(&paths[0])?
        .into_iter()
        .map(|mut r| match r.remove("text") {
            Some(Value::String(s)) => Ok(s),
            _ => anyhow::bail!("{}: rows without a text column", paths[0].display()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(tasks::generation::tasks::LmSource::HubRows {
        origin: format!("hub:{repo}/{config}/{split}"),
        rows,
    })
}

/// Whole rows of a Hub dataset's split (multiple-choice tasks), and of its few-shot split.
pub fn record_rows(
    repo: &str,
    config: &str,
    split: &str,
    fewshot_split: Option<&str>,
) -> Result<tasks::generation::tasks::LmSource> {
    let mut files = vec![tasks::parquet_file(config, split)];
    files.extend(fewshot_split.map(|s| tasks::parquet_file(config, s)));
    let paths = crate::models::resolve::fetch_dataset_files(repo, &files)?;
    Ok(tasks::generation::tasks::LmSource::HubRecords {
        origin: format!("hub:{repo}/{config}/{split}"),
        rows: read_parquet_rows(&paths[0])?,
        fewshot: match paths.get(1) {
            Some(p) => read_parquet_rows(p)?,
            None => Vec::new(),
        },
    })
}

/// The Hub's evaluation splits of the text tasks `task_names`, from the parquet files of the
/// dataset each task declares ([`tasks::Task::hub_dataset`]).
pub fn hub_glue_source(task_names: &[&str]) -> Result<tasks::DataSource> {
    let mut splits: BTreeMap<String, Vec<BTreeMap<String, Value>>> = BTreeMap::new();
    for name in task_names {
        let task = tasks::find_task(name).map_err(anyhow::Error::msg)?;
        for split in task.eval_splits() {
            splits.extend(hub_split(task, split.hub_split)?);
        }
    }
    Ok(tasks::DataSource::Records(splits))
}

/// One split of a text task from the Hub (an evaluation split, or a probe's train split),
/// keyed by its split name.
pub fn hub_split(
    task: &dyn tasks::Task,
    hub_split: &str,
) -> Result<BTreeMap<String, Vec<BTreeMap<String, Value>>>> {
    let Some(hub) = task.hub_dataset() else {
        anyhow::bail!("{} has no Hub dataset; pass --data-dir", task.name());
    };
    let file = hub.parquet_file(hub_split);
    let paths = crate::models::resolve::fetch_dataset_files(hub.repo, &[file])?;
    let mut rows = BTreeMap::new();
    rows.insert(hub_split.to_string(), read_parquet_rows(&paths[0])?);
    Ok(rows)
}

/// Fetch the data of every task of `plan` that comes from the Hub (a plan made without
/// `--data-dir`), after the plan is validated and before any model loads.
pub fn fetch_planned(plan: &mut crate::plan::RunPlan) -> Result<()> {
    use crate::plan::{PlannedLmTask, PlannedTask};
    use tasks::generation::tasks::{LmKind, LmSource};
    let Some(pending) = plan.hub_pending.take() else {
        return Ok(());
    };
    if !pending.text.is_empty() {
        let names: Vec<&str> = pending.text.iter().map(|t| t.name()).collect();
        plan.data = hub_glue_source(&names)?;
        for task in pending.text {
            plan.tasks.push(PlannedTask::load(
                task,
                &plan.data,
                plan.load_options.limit,
            )?);
        }
    }
    for task in pending.lm {
        let source = match task.hub_dataset() {
            Some((repo, config, split)) if task.kind() == LmKind::Choice => {
                let fewshot = task
                    .fewshot_split()
                    .filter(|_| plan.load_options.num_fewshot > 0);
                record_rows(repo, config, split, fewshot)?
            }
            Some((repo, config, split)) => text_rows(repo, config, split)?,
            None => LmSource::HubRows {
                origin: "built in".into(),
                rows: Vec::new(),
            },
        };
        plan.lm_tasks
            .push(PlannedLmTask::load(task, &source, &plan.load_options)?);
    }
    Ok(())
}
