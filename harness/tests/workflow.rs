//! The nightly workflow and the deploy examples parse and have the shape their runners need:
//! GitHub Actions triggers and jobs (plan, a matrix of shards, a merge that publishes with
//! `if: always()`), a Kubernetes Indexed Job whose shard count matches its completions, a
//! Slurm array script that bash accepts; and every `harness` command in them is one the
//! harness's own command line accepts.

use clap::Parser;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{rel}: invalid YAML: {e}"))
}

/// Every `harness <subcommand> ...` in a script, one per command: continuation lines joined,
/// shell variables given sample values (numbers where the flag wants one), quotes dropped;
/// each is parsed by the harness's clap definition.
fn harness_commands(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // A command starts its line (an `echo harness ...` is not one).
        let at = 0;
        let Some(first) = words.first().map(|w| w.trim_matches('"')) else {
            continue;
        };
        if !(first == "harness" || first.ends_with("/harness") || first == "$HARNESS") {
            continue;
        }
        let sub = words.get(at + 1).copied().unwrap_or_default();
        if !["run", "plan", "merge", "compare", "report"].contains(&sub) {
            continue;
        }
        let mut argv = vec!["harness".to_string()];
        for w in &words[at + 1..] {
            if [">", ">>", "2>&1", "|", "&&", "||"].contains(w) {
                break;
            }
            let w = w.trim_matches('"').trim_end_matches('"');
            let w = match w {
                "$SHARDS" | "${SHARDS}" => "3".to_string(),
                "$SHARD" => "0/3".to_string(),
                _ => w.replace("$(JOB_COMPLETION_INDEX)", "0"),
            };
            argv.push(w);
        }
        out.push(argv);
    }
    out
}

fn assert_commands_parse(what: &str, script: &str, want: &[&str]) {
    let cmds = harness_commands(script);
    for sub in want {
        assert!(
            cmds.iter().any(|c| c[1] == *sub),
            "{what} has no `harness {sub}`: {cmds:?}"
        );
    }
    for argv in &cmds {
        if let Err(e) = harness::cli::Cli::try_parse_from(argv) {
            panic!("{what}: {argv:?} is not a valid harness command: {e}");
        }
    }
}

fn steps_of(job: &Yaml) -> &Vec<Yaml> {
    let steps = job["steps"].as_vec().expect("steps are a list");
    for (i, step) in steps.iter().enumerate() {
        let uses = step["uses"].as_str().is_some();
        let runs = step["run"].as_str().is_some();
        assert!(
            uses ^ runs,
            "step {i} must have exactly one of uses/run: {step:?}"
        );
    }
    steps
}

fn runs_of(job: &Yaml) -> String {
    steps_of(job)
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn nightly_workflow_plans_runs_shards_and_merges() {
    let w = yaml_docs(".github/workflows/nightly.yml").remove(0);
    assert!(w["name"].as_str().is_some());
    let on = &w["on"];
    assert!(on["schedule"][0]["cron"].as_str().is_some(), "scheduled");
    assert!(
        !on["workflow_dispatch"].is_badvalue(),
        "manually dispatchable"
    );
    assert!(
        w["env"]["HF_TOKEN"]
            .as_str()
            .unwrap()
            .contains("secrets.HF_TOKEN"),
        "the Hub token comes from a secret"
    );
    assert!(w["env"]["HARNESS_HUB_RETRIES"].as_str().is_some());
    let jobs = &w["jobs"];
    // plan: prints the matrix as a job output.
    let plan = &jobs["plan"];
    assert!(plan["outputs"]["matrix"]
        .as_str()
        .unwrap()
        .contains("steps.plan.outputs.matrix"));
    assert_commands_parse("plan job", &runs_of(plan), &["plan"]);
    assert!(runs_of(plan).contains("--format json"));
    // shard: one job per matrix entry, each running its slice; uploads even on failure.
    let shard = &jobs["shard"];
    assert_eq!(shard["needs"].as_str(), Some("plan"));
    assert!(shard["strategy"]["matrix"]
        .as_str()
        .unwrap()
        .contains("fromJSON(needs.plan.outputs.matrix)"));
    assert_eq!(shard["strategy"]["fail-fast"].as_bool(), Some(false));
    let shard_runs = runs_of(shard);
    assert_commands_parse("shard job", &shard_runs, &["run"]);
    assert!(shard_runs.contains("--shard \"$SHARD\""), "{shard_runs}");
    let upload = steps_of(shard)
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
        })
        .expect("shards are uploaded");
    assert_eq!(upload["if"].as_str(), Some("always()"));
    // merge: after every shard, even failed ones; merges, compares, publishes, gates.
    let merge = &jobs["merge"];
    assert!(merge["if"].as_str().unwrap().contains("always()"));
    let needs: Vec<&str> = merge["needs"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(needs.contains(&"shard"));
    let merge_runs = runs_of(merge);
    assert_commands_parse("merge job", &merge_runs, &["merge", "compare"]);
    assert!(merge_runs.contains("GITHUB_STEP_SUMMARY"));
    for s in steps_of(merge) {
        let name = s["name"].as_str().unwrap_or_default();
        if name == "Job summary" || name == "Upload reports" {
            assert_eq!(s["if"].as_str(), Some("always()"), "{name}");
        }
    }
    // The baseline it compares against is committed.
    let baseline = w["env"]["BASELINE"].as_str().unwrap();
    assert!(root().join(baseline).exists(), "{baseline}");
}

#[test]
fn kubernetes_indexed_job_and_its_merge_are_consistent() {
    let docs = yaml_docs("deploy/k8s/indexed-job.yaml");
    let job = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Job"))
        .expect("a Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_i64().unwrap();
    let container = &spec["template"]["spec"]["containers"][0];
    let count = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("HARNESS_SHARD_COUNT"))
        .and_then(|e| e["value"].as_str())
        .expect("HARNESS_SHARD_COUNT");
    assert_eq!(
        count.parse::<i64>().unwrap(),
        completions,
        "shard count = completions"
    );
    let args = container["args"][0].as_str().unwrap();
    assert!(args.contains("--shard auto"), "{args}");
    assert_commands_parse("indexed job", args, &["run"]);
    // Shards and merge share the volume.
    let claim = &docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("PersistentVolumeClaim"))
        .unwrap()["metadata"]["name"];
    let merge = yaml_docs("deploy/k8s/merge-job.yaml").remove(0);
    let vol = |j: &Yaml| {
        j["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"].clone()
    };
    assert_eq!(&vol(job), claim);
    assert_eq!(&vol(&merge), claim);
    let merge_args = merge["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert_commands_parse("merge job", merge_args, &["merge"]);
}

#[test]
fn slurm_array_script_is_valid_bash_and_runs_shards_then_a_merge() {
    let path = root().join("deploy/slurm/harness-array.sh");
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .expect("bash runs");
    assert!(status.success(), "bash -n {}", path.display());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("#SBATCH"), "Slurm directives");
    assert!(text.contains("--array=0-"), "a job array");
    assert!(
        text.contains("--dependency=afterany"),
        "the merge waits for the array"
    );
    // The merge is inside --wrap="..."; lift it out to parse it.
    let wrapped = text
        .split("--wrap=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a wrapped merge")
        .to_string();
    assert_commands_parse("slurm merge", &wrapped, &["merge"]);
    assert_commands_parse("slurm shard", &text, &["run"]);
    assert!(text.contains("--shard auto"));
}

#[test]
fn committed_baseline_matches_the_results_schema() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../baselines/minilm-l6-vs-l3.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(reports::schema_check::RESULTS_SCHEMA).unwrap();
    let errors = reports::schema_check::validate(&schema, &doc);
    assert!(errors.is_empty(), "{errors:#?}");
    // And it reads as results, with both tasks of the nightly run.
    let r: reports::Results = serde_json::from_value(doc).unwrap();
    assert_eq!(r.tasks.keys().collect::<Vec<_>>(), ["sst2", "stsb"]);
}
