//! Sharding a run: the plan's cells split into N deterministic, cost-balanced slices, so that
//! a GitHub Actions matrix, a Kubernetes Indexed Job or a Slurm job array runs one slice per
//! job and `harness merge` joins them.
//!
//! A cell is one model's pass over one task (`teacher`, `student`), so the teacher and the
//! student of a task may run on different machines. Perplexity and generation tasks are one
//! `pair` cell: the student's token-level fidelity compares its full next-token distributions
//! with the teacher's, which only the process that ran the teacher has.
//!
//! Balancing is the longest-processing-time rule (largest estimated cost first, each to the
//! least loaded shard, ties to the lower index) over an estimate of each cell's cost: the
//! characters its model reads times the model's weight-file size. Every input of the estimate
//! is in the plan, so every shard computes the same assignment without talking to the others.

use anyhow::{bail, Context, Result};
use reports::PlannedCell;
use tasks::generation::tasks::{LmData, LmKind};

use crate::cells::Role;
use crate::models::loader::ModelSpec;
use crate::models::resolve::ModelRef;
use crate::plan::RunPlan;

/// The slice of the plan one process runs: `index` of `count`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

fn parse_index(what: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse()
        .with_context(|| format!("{what} is '{value}', not a whole number"))
}

impl ShardSpec {
    /// `I/N` (0-based I), or `auto`: from a Slurm job array (`SLURM_ARRAY_TASK_ID` less
    /// `SLURM_ARRAY_TASK_MIN`, of `SLURM_ARRAY_TASK_COUNT`) or a Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX` of `HARNESS_SHARD_COUNT`, which the manifest sets to its
    /// `completions`). `env` reads a variable (the process environment in `harness`).
    pub fn parse(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ShardSpec> {
        let spec = if value.trim() == "auto" {
            if let Some(id) = env("SLURM_ARRAY_TASK_ID") {
                let id = parse_index("SLURM_ARRAY_TASK_ID", &id)?;
                let min = match env("SLURM_ARRAY_TASK_MIN") {
                    Some(m) => parse_index("SLURM_ARRAY_TASK_MIN", &m)?,
                    None => 0,
                };
                let count = env("SLURM_ARRAY_TASK_COUNT").context(
                    "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not",
                )?;
                ShardSpec {
                    index: id.checked_sub(min).context(
                        "--shard auto: SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN",
                    )?,
                    count: parse_index("SLURM_ARRAY_TASK_COUNT", &count)?,
                }
            } else if let Some(index) = env("JOB_COMPLETION_INDEX") {
                let count = env("HARNESS_SHARD_COUNT").context(
                    "--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but HARNESS_SHARD_COUNT is not; set it to the Job's completions",
                )?;
                ShardSpec {
                    index: parse_index("JOB_COMPLETION_INDEX", &index)?,
                    count: parse_index("HARNESS_SHARD_COUNT", &count)?,
                }
            } else {
                bail!("--shard auto: no job index in the environment (SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX); pass --shard I/N")
            }
        } else {
            let (i, n) = value
                .split_once('/')
                .with_context(|| format!("--shard '{value}': expected I/N (e.g. 0/3) or auto"))?;
            ShardSpec {
                index: parse_index("--shard's I", i)?,
                count: parse_index("--shard's N", n)?,
            }
        };
        if spec.count == 0 {
            bail!("--shard {spec}: N must be at least 1");
        }
        if spec.index >= spec.count {
            bail!(
                "--shard {spec}: I counts from 0 and must be below N (0 to {})",
                spec.count - 1
            );
        }
        Ok(spec)
    }
}

/// Weight-file size in MB of a local checkpoint, for the cost estimate.
fn weights_mb(r: &ModelRef) -> Option<u64> {
    let ModelRef::Local(dir) = r else {
        return None;
    };
    let (bytes, _) = crate::cells::weights_stamp(dir)?;
    Some((bytes / 1_000_000).max(1))
}

/// Characters a model reads for a text task, plus a per-example overhead (tokenisation,
/// one forward call) that dominates for short sentences.
fn text_work(plan: &RunPlan, ti: usize) -> u64 {
    plan.tasks[ti]
        .splits
        .iter()
        .flat_map(|(_, ds)| &ds.examples)
        .map(|e| (e.text_a.len() + e.text_b.as_ref().map_or(0, String::len) + 64) as u64)
        .sum()
}

/// Characters a model reads for a language-modelling task (a shared context once).
fn lm_work(plan: &RunPlan, li: usize) -> u64 {
    match &plan.lm_tasks[li].data {
        LmData::Text(t) => t.text.len() as u64,
        LmData::Prompts(p) => p
            .iter()
            .map(|p| (p.len() + plan.lm.max_new_tokens * 32) as u64)
            .sum(),
        LmData::Choices(set) => set
            .docs
            .iter()
            .map(|d| {
                let mut contexts: Vec<&str> =
                    d.requests.iter().map(|r| r.context.as_str()).collect();
                contexts.dedup();
                let c: usize = contexts.iter().map(|c| c.len()).sum();
                let k: usize = d.requests.iter().map(|r| r.continuation.len() + 16).sum();
                (c + k) as u64
            })
            .sum(),
    }
}

/// One cell before it is given a shard: its id, cost and model(s).
struct Unplaced {
    task: String,
    role: &'static str,
    cost_work: u64,
    models: Vec<ModelSpec>,
}

/// Every cell of the plan with its estimated cost and its shard among `count`, in plan order
/// (text tasks, then language-modelling tasks; teacher before student).
pub fn plan_cells(plan: &RunPlan, count: usize) -> Vec<PlannedCell> {
    let mut cells = Vec::new();
    for (ti, pt) in plan.tasks.iter().enumerate() {
        let work = text_work(plan, ti);
        for role in [Role::Teacher, Role::Student] {
            cells.push(Unplaced {
                task: pt.task.name().to_string(),
                role: role.name(),
                cost_work: work,
                models: vec![crate::run::text_spec(plan, role, pt.task.name())],
            });
        }
    }
    for (li, pt) in plan.lm_tasks.iter().enumerate() {
        let name = pt.task.name();
        let work = lm_work(plan, li);
        if pt.task.kind() == LmKind::Choice {
            for role in [Role::Teacher, Role::Student] {
                cells.push(Unplaced {
                    task: name.to_string(),
                    role: role.name(),
                    cost_work: work,
                    models: vec![crate::lm::spec_of(plan, name, role)],
                });
            }
        } else {
            cells.push(Unplaced {
                task: name.to_string(),
                role: "pair",
                cost_work: work,
                models: vec![
                    crate::lm::spec_of(plan, name, Role::Teacher),
                    crate::lm::spec_of(plan, name, Role::Student),
                ],
            });
        }
    }
    // Sizes count only when every model has one; otherwise every model weighs the same, so
    // that a Hub model (size unknown before download) does not look free next to a local one.
    let sizes: Option<Vec<Vec<u64>>> = cells
        .iter()
        .map(|c| c.models.iter().map(|m| weights_mb(&m.ckpt)).collect())
        .collect();
    let cost = |i: usize| -> u64 {
        let weight: u64 = match &sizes {
            Some(s) => s[i].iter().sum(),
            None => cells[i].models.len() as u64,
        };
        cells[i].cost_work.max(1).saturating_mul(weight)
    };
    let costs: Vec<u64> = (0..cells.len()).map(cost).collect();
    let shards = assign(&costs, count);
    cells
        .iter()
        .zip(costs.iter().zip(shards))
        .map(|(c, (&cost, shard))| PlannedCell {
            task: c.task.clone(),
            role: c.role.to_string(),
            shard,
            cost,
        })
        .collect()
}

/// The longest-processing-time rule: the shard of each cost, by index.
pub fn assign(costs: &[u64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    // Stable sort: equal costs keep plan order, so the assignment is the same everywhere.
    order.sort_by(|&a, &b| costs[b].cmp(&costs[a]));
    let mut load = vec![0u64; count.max(1)];
    let mut out = vec![0; costs.len()];
    for i in order {
        let (least, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(s, &l)| (l, s))
            .expect("at least one shard");
        out[i] = least;
        load[least] = load[least].saturating_add(costs[i]);
    }
    out
}

/// The Markdown table `harness plan` prints: each cell's shard and cost, then each shard's
/// share.
pub fn markdown(cells: &[PlannedCell], count: usize) -> String {
    let total: u64 = cells.iter().map(|c| c.cost).sum::<u64>().max(1);
    let mut out = String::from("| shard | task | role | cost | share |\n|---|---|---|---:|---:|\n");
    let mut sorted: Vec<&PlannedCell> = cells.iter().collect();
    sorted.sort_by_key(|c| c.shard);
    for c in sorted {
        out += &format!(
            "| {}/{count} | {} | {} | {} | {:.1}% |\n",
            c.shard,
            c.task,
            c.role,
            c.cost,
            c.cost as f64 * 100.0 / total as f64
        );
    }
    out += "\n| shard | cells | share of the estimated cost |\n|---|---:|---:|\n";
    for s in 0..count {
        let mine: Vec<&PlannedCell> = cells.iter().filter(|c| c.shard == s).collect();
        let cost: u64 = mine.iter().map(|c| c.cost).sum();
        out += &format!(
            "| {s}/{count} | {} | {:.1}% |\n",
            mine.len(),
            cost as f64 * 100.0 / total as f64
        );
    }
    out
}

/// The JSON `harness plan --format json` prints: the cells, and one matrix entry per shard
/// (`{"shard": "I/N", "index": I, "cells": [...]}`) for a workflow's `strategy.matrix`.
pub fn json(cells: &[PlannedCell], count: usize) -> serde_json::Value {
    let matrix: Vec<serde_json::Value> = (0..count)
        .map(|s| {
            let ids: Vec<String> = cells
                .iter()
                .filter(|c| c.shard == s)
                .map(PlannedCell::id)
                .collect();
            serde_json::json!({"shard": format!("{s}/{count}"), "index": s, "cells": ids})
        })
        .collect();
    serde_json::json!({"count": count, "cells": cells, "matrix": matrix})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn explicit_shards_parse_and_bad_ones_say_why() {
        let none = env_of(&[]);
        assert_eq!(
            ShardSpec::parse("1/3", &none).unwrap(),
            ShardSpec { index: 1, count: 3 }
        );
        let err = |s: &str| ShardSpec::parse(s, &none).unwrap_err().to_string();
        assert!(
            err("3/3").contains("must be below N (0 to 2)"),
            "{}",
            err("3/3")
        );
        assert!(err("0/0").contains("N must be at least 1"));
        assert!(err("2").contains("expected I/N"));
        assert!(err("a/3").contains("not a whole number"));
        assert!(err("auto").contains("no job index in the environment"));
    }

    #[test]
    fn auto_reads_slurm_arrays_and_indexed_jobs() {
        let slurm = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            ShardSpec::parse("auto", &slurm).unwrap(),
            ShardSpec { index: 2, count: 4 }
        );
        let k8s = env_of(&[("JOB_COMPLETION_INDEX", "0"), ("HARNESS_SHARD_COUNT", "5")]);
        assert_eq!(
            ShardSpec::parse("auto", &k8s).unwrap(),
            ShardSpec { index: 0, count: 5 }
        );
        let half = env_of(&[("JOB_COMPLETION_INDEX", "0")]);
        let err = ShardSpec::parse("auto", &half).unwrap_err().to_string();
        assert!(err.contains("HARNESS_SHARD_COUNT is not"), "{err}");
    }

    #[test]
    fn longest_first_balances_and_is_deterministic() {
        // 8, 7, 6, 5, 4 over two shards: 8 -> 0, 7 -> 1, 6 -> 1 (7 < 8), 5 -> 0 (8 < 13),
        // 4 -> 0 (13 = 13: the lower index).
        assert_eq!(assign(&[5, 8, 4, 7, 6], 2), vec![0, 0, 0, 1, 1]);
        // Equal costs go round in plan order.
        assert_eq!(assign(&[1, 1, 1, 1], 3), vec![0, 1, 2, 0]);
        // More shards than cells: the extra shards are empty.
        assert_eq!(assign(&[3, 2], 4), vec![0, 1]);
        assert_eq!(assign(&[], 2), Vec::<usize>::new());
    }
}
