//! `harness`: score a teacher and a distilled student on the same tasks.
//!
//! Reads as a list of steps: parse flags, validate them into a plan (cheap), execute the plan
//! (expensive), print the summary. Errors become one line on stderr and exit code 2.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::{Cli, Command, ListArgs, ListWhat, ProfileArgs, RunArgs};
use harness::error::{one_line, EXIT_ERROR, EXIT_OK};
use harness::models::resolve::AliasTable;
use harness::plan::RunPlan;
use reports::export::{Exporter, MarkdownReport};

fn run(args: &RunArgs) -> anyhow::Result<()> {
    // 1. Validate every input cheaply: tasks, models, data files, output folder.
    let plan = RunPlan::from_args(args)?;
    // 2. Load models and score every (model, task) cell, writing results as cells finish.
    let outcome = harness::run::execute(&plan)?;
    // 3. Summarise.
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
            for t in tasks::REGISTRY {
                println!(
                    "| {} | {} | {} | {} |",
                    t.name(),
                    t.version(),
                    t.primary_metric(),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run(args),
        Command::List(args) => list(args),
        Command::Profile(args) => profile(args),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
