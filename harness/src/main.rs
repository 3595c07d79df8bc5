//! `harness`: score a teacher and a distilled student on the same tasks.
//!
//! Reads as a list of steps: parse flags, validate them into a plan (cheap), execute the plan
//! (expensive), print the summary. Errors become one line on stderr and exit code 2.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::{
    Cli, Command, CompareArgs, ListArgs, ListWhat, MergeArgs, ProfileArgs, ReportArgs, RunArgs,
};
use harness::error::{one_line, EXIT_ERROR, EXIT_OK, EXIT_REGRESSION};
use harness::models::resolve::AliasTable;
use harness::plan::RunPlan;
use reports::export::{Exporter, MarkdownReport};

fn run(args: &RunArgs) -> anyhow::Result<()> {
    // 1. Validate every input cheaply: tasks, models, data files, output folder.
    let mut plan = RunPlan::from_args(args)?;
    // 2. Fetch the data that is on the Hub (no --data-dir).
    harness::hub_data::fetch_planned(&mut plan)?;
    // 3. Load models and score every (model, task) cell, writing results as cells finish.
    let outcome = harness::run::execute(&plan)?;
    // 4. Reports beside the results, and the summary on stdout.
    harness::report::write_reports(&outcome.results, &plan.out, &["md", "html", "csv"])?;
    print!("{}", MarkdownReport.render(&outcome.results));
    for (task, reason) in &outcome.results.skipped {
        println!("\nNot scored: {task}: {reason}");
    }
    println!("\nResults: {}", outcome.results_path.display());
    Ok(())
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    match args.what {
        ListWhat::Tasks => {
            println!("| task | version | primary metric | description |\n|---|---|---|---|");
            for t in tasks::registry::all_tasks() {
                let primary = match t {
                    tasks::AnyTask::Text(t) => t.primary_metric(),
                    tasks::AnyTask::Lm(t) => t.primary_metric(),
                };
                println!(
                    "| {} | {} | {} | {} |",
                    t.name(),
                    t.version(),
                    primary,
                    t.description()
                );
            }
        }
        ListWhat::Models => {
            let table = AliasTable::load(args.aliases.as_deref())?;
            println!("| alias | task | checkpoint |\n|---|---|---|");
            for (name, alias) in &table.0 {
                println!("| {name} | (base) | {} |", alias.base);
                for (task, id) in &alias.tasks {
                    println!("| {name} | {task} | {id} |");
                }
            }
        }
    }
    Ok(())
}

fn profile(args: &ProfileArgs) -> anyhow::Result<()> {
    let sweep = harness::sweep::run(args)?;
    print!("{}", harness::sweep::markdown(&sweep));
    println!("\nResults: {}", args.out.join("profile.json").display());
    Ok(())
}

fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let results = harness::report::read_results(&args.results)?;
    let out = args.out.clone().unwrap_or_else(|| {
        args.results
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    });
    let formats: Vec<&str> = args.format.iter().map(|s| s.trim()).collect();
    for path in harness::report::write_reports(&results, &out, &formats)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Returns whether a regression was found.
fn compare(args: &CompareArgs) -> anyhow::Result<bool> {
    let baseline = harness::report::read_results(&args.baseline)?;
    let current = harness::report::read_results(&args.current)?;
    let th = reports::compare::Thresholds {
        max_metric_drop: args.max_metric_drop,
        max_slowdown: args.max_slowdown,
        max_memory_growth: args.max_memory_growth,
        ..Default::default()
    };
    let findings = reports::compare::compare(&baseline, &current, &th)?;
    print!("{}", reports::compare::markdown(&findings, &th));
    Ok(findings.iter().any(|f| f.regression))
}

fn merge(args: &MergeArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for f in &args.files {
        files.push((f.display().to_string(), harness::report::read_results(f)?));
    }
    let merged = reports::compare::merge(&files).map_err(anyhow::Error::msg)?;
    reports::io::write_json_atomic(&args.out, &merged)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
    println!("{}: {} tasks", args.out.display(), merged.tasks.len());
    Ok(())
}

fn main() -> ExitCode {
    harness::alloc::tune_for_inference();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run(args),
        Command::List(args) => list(args),
        Command::Profile(args) => profile(args),
        Command::Report(args) => report(args),
        Command::Merge(args) => merge(args),
        Command::Compare(args) => match compare(args) {
            Ok(true) => return ExitCode::from(EXIT_REGRESSION),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
