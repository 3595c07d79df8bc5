//! The nightly workflow parses as YAML and has the shape GitHub Actions needs: triggers, one
//! job whose steps each `uses` an action or `run`s a command, and the gate that fails on a
//! regression.

use yaml_rust2::{Yaml, YamlLoader};

fn workflow() -> Yaml {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.github/workflows/nightly.yml"
    );
    let text = std::fs::read_to_string(path).expect("nightly.yml exists");
    YamlLoader::load_from_str(&text)
        .expect("valid YAML")
        .remove(0)
}

#[test]
fn nightly_workflow_is_valid() {
    let w = workflow();
    assert!(w["name"].as_str().is_some());
    let on = &w["on"];
    assert!(on["schedule"][0]["cron"].as_str().is_some(), "scheduled");
    assert!(
        !on["workflow_dispatch"].is_badvalue(),
        "manually dispatchable"
    );
    let job = &w["jobs"]["nightly"];
    assert!(job["runs-on"].as_str().is_some());
    let steps = job["steps"].as_vec().expect("steps are a list");
    assert!(steps.len() >= 5);
    for (i, step) in steps.iter().enumerate() {
        let uses = step["uses"].as_str().is_some();
        let runs = step["run"].as_str().is_some();
        assert!(
            uses ^ runs,
            "step {i} must have exactly one of uses/run: {step:?}"
        );
    }
    let all_runs: String = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "harness run",
        "harness compare",
        "harness report",
        "GITHUB_STEP_SUMMARY",
    ] {
        assert!(all_runs.contains(needle), "workflow lacks {needle}");
    }
    let uses: Vec<&str> = steps.iter().filter_map(|s| s["uses"].as_str()).collect();
    assert!(
        uses.iter().any(|u| u.starts_with("actions/cache")),
        "caches cargo and the Hub"
    );
    assert!(
        uses.iter()
            .any(|u| u.starts_with("actions/upload-artifact")),
        "uploads reports"
    );
    // The baseline it compares against is committed.
    let baseline = w["env"]["BASELINE"].as_str().unwrap();
    assert!(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join(baseline)
            .exists(),
        "{baseline}"
    );
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
