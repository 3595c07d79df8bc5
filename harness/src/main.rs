//! `harness`: score a teacher and a distilled student on the same tasks.
//!
//! Reads as a list of steps: parse flags, validate them into a plan (cheap), execute the plan
//! (expensive), print the summary. Errors become one line on stderr and exit code 2.

use std::process::ExitCode;

use clap::Parser;
use harness::cli::{
    Cli, Command, CompareArgs, ListArgs, ListWhat, MergeArgs, PlanArgs, ProfileArgs, ReportArgs,
    RunArgs,
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
    let outcome = harness::run::execute(&mut plan)?;
    // 4. Reports beside the results, and the summary on stdout.
    harness::report::write_reports(&outcome.results, &plan.out, &["md", "html", "csv"])?;
    print!("{}", MarkdownReport.render(&outcome.results));
    for (task, reason) in &outcome.results.skipped {
        println!("\nNot scored: {task}: {reason}");
    }
    println!("\nResults: {}", outcome.results_path.display());
    if let Some(s) = &outcome.results.shard {
        let cells: Vec<&str> = s.finished.keys().map(String::as_str).collect();
        println!(
            "Shard {}/{}: finished {}; join the shards with `harness merge SHARD_DIR... --out DIR`",
            s.index,
            s.count,
            if cells.is_empty() {
                "no cells".to_string()
            } else {
                cells.join(", ")
            }
        );
    }
    Ok(())
}

fn plan(args: &PlanArgs) -> anyhow::Result<()> {
    if args.shards == 0 {
        anyhow::bail!("--shards must be at least 1");
    }
    let mut plan = RunPlan::without_output(&args.run)?;
    if plan.students.len() > 1 {
        anyhow::bail!("harness plan shows how --shard splits a run of one student; give one --student (each student of a run is sharded as a run of its own)");
    }
    harness::hub_data::fetch_planned(&mut plan)?;
    let cells = harness::shard::plan_cells(&plan, args.shards);
    if args.format == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&harness::shard::json(&cells, args.shards))?
        );
    } else {
        print!("{}", harness::shard::markdown(&cells, args.shards));
    }
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
    println!(
        "\nResults: {} (curves: {})",
        args.out.join("profile.json").display(),
        args.out.join("profile.html").display()
    );
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
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        anyhow::bail!("--alpha must be between 0 and 1 (e.g. 0.05)");
    }
    let th = reports::compare::Thresholds {
        max_metric_drop: args.max_metric_drop,
        max_slowdown: args.max_slowdown,
        max_memory_growth: args.max_memory_growth,
        alpha: args.alpha,
    };
    let report = reports::compare::compare_report(&baseline, &current, &th)?;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let text = reports::compare::report_markdown(&report);
        if colour_stdout() {
            print!("{}", reports::compare::colour_regressions(&text));
        } else {
            print!("{text}");
        }
    }
    Ok(report.regressions > 0)
}

fn merge(args: &MergeArgs) -> anyhow::Result<()> {
    let opts = harness::merge::MergeOptions {
        allow_partial: args.allow_partial,
        allow_mixed_env: args.allow_mixed_env,
    };
    let merged = harness::merge::merge(&args.inputs, &args.out, opts)?;
    let (dir, file) = harness::merge::output_paths(&args.out);
    harness::report::write_reports(&merged, &dir, &["md", "html", "csv"])?;
    print!("{}", MarkdownReport.render(&merged));
    if let Some(m) = &merged.merge {
        if !m.missing_cells.is_empty() {
            println!(
                "\nMissing (--allow-partial): {}",
                m.missing_cells.join(", ")
            );
        }
        if let Some(why) = &m.mixed_environments {
            println!("\nSpeed figures come from several machines (--allow-mixed-env): {why}");
        }
    }
    println!(
        "\nMerged {} input(s), {} task(s): {}",
        args.inputs.len(),
        merged.tasks.len(),
        file.display()
    );
    Ok(())
}

/// Whether stdout gets colour: a terminal without `NO_COLOR`, or `CLICOLOR_FORCE` set (not 0),
/// as the usual conventions (no-color.org, bixense.com/clicolors) have it.
fn colour_stdout() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty() && v != "0");
    if set("CLICOLOR_FORCE") {
        return true;
    }
    std::env::var_os("NO_COLOR").is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout())
}

fn main() -> ExitCode {
    harness::alloc::tune_for_inference();
    let cli = Cli::parse();
    harness::logging::init(cli.verbose);
    tracing::debug!(args = ?std::env::args().collect::<Vec<_>>(), version = env!("HARNESS_VERSION_LINE"), "harness started");
    // A bad kernel setting is refused before any work, not at the first product.
    if let Err(e) = harness::kernels::check_env() {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_ERROR);
    }
    let result = match &cli.command {
        Command::Run(args) => run(args),
        Command::List(args) => list(args),
        Command::Profile(args) => profile(args),
        Command::Report(args) => report(args),
        Command::Merge(args) => merge(args),
        Command::Plan(args) => plan(args),
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut cmd, "harness", &mut std::io::stdout());
            Ok(())
        }
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
