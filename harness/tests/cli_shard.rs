//! `harness run --shard I/N`, `harness plan` and `harness merge` end to end on the mock
//! backend: the shards of a run merge to the unsharded run's numbers for every N from 1 to 5,
//! and a merge refuses what does not belong together.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{harness, write};

const SST2: &str = "sentence\tlabel\na good film .\t1\nbad .\t0\nit was fun\t1\nterrible and long\t0\nthe best\t1\nnot good at all\t0\n";
const ARC: &str = r#"{"id": "a", "question": {"stem": "pick", "choices": [{"text": "1", "label": "A"}, {"text": "5", "label": "B"}, {"text": "0", "label": "C"}]}, "answerKey": "B"}
{"id": "b", "question": {"stem": "pick", "choices": [{"text": "5", "label": "A"}, {"text": "1", "label": "B"}]}, "answerKey": "B"}
{"id": "c", "question": {"stem": "pick", "choices": [{"text": "0", "label": "A"}, {"text": "9", "label": "B"}, {"text": "1", "label": "C"}]}, "answerKey": "A"}
"#;

/// Data for a text task, a multiple-choice task and a perplexity task (a `pair` cell).
fn data(tmp: &Path) -> PathBuf {
    let d = tmp.join("data");
    write(&d, "SST-2/dev.tsv", SST2);
    write(&d, "arc/ARC-Easy-Test.jsonl", ARC);
    write(
        &d,
        "wikitext-2/wiki.test.raw",
        "the cat sat on the mat and then the dog sat on the cat",
    );
    d
}

fn run_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "run",
        "--no-profile",
        "--quiet",
        "--teacher",
        "mock:t:labels=negative,positive",
        "--student",
        "mock:s:labels=positive,negative:sharpness=2",
        "--task",
        "sst2,arc_easy,wikitext2",
        "--context-length",
        "64",
        "--stride",
        "64",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn ok(args: &[String], envs: &[(&str, &str)]) -> String {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = harness(&refs, envs);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit code and stderr of a command that should fail.
fn fails(args: &[&str]) -> (Option<i32>, String) {
    let out = harness(args, &[]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn results(dir: &Path) -> Value {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let schema: Value = serde_json::from_str(reports::schema_check::RESULTS_SCHEMA).unwrap();
    let errors = reports::schema_check::validate(&schema, &v);
    assert!(errors.is_empty(), "{errors:#?}");
    v
}

/// A task's result without what differs between two runs of the same cells (timing).
fn numbers(task: &Value) -> Value {
    let mut t = task.clone();
    for role in ["teacher", "student"] {
        t[role].as_object_mut().unwrap().remove("elapsed_s");
    }
    t
}

fn shard_runs(data: &Path, root: &Path, n: usize, extra: &[&str]) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let out = root.join(format!("shard-{i}-of-{n}"));
            let shard = format!("{i}/{n}");
            let mut e = vec!["--shard", shard.as_str()];
            e.extend_from_slice(extra);
            ok(&run_args(data, &out, &e), &[]);
            out
        })
        .collect()
}

fn merge(inputs: &[PathBuf], out: &Path, extra: &[&str]) -> std::process::Output {
    let mut a = vec!["merge".to_string()];
    a.extend(inputs.iter().map(|p| p.display().to_string()));
    a.extend(["--out".to_string(), out.display().to_string()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    harness(&refs, &[])
}

#[test]
fn shards_merge_to_the_unsharded_run_for_every_n_from_1_to_5() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let full_dir = tmp.path().join("full");
    ok(&run_args(&data, &full_dir, &[]), &[]);
    let full = results(&full_dir);
    assert_eq!(full["tasks"].as_object().unwrap().len(), 3);
    for n in 1..=5 {
        let root = tmp.path().join(format!("n{n}"));
        let shards = shard_runs(&data, &root, n, &[]);
        // Every planned cell is in exactly one shard, and each shard says which it has.
        let planned = results(&shards[0])["shard"]["planned"].clone();
        assert_eq!(planned.as_array().unwrap().len(), 5, "{planned}");
        let mut finished = 0;
        for (i, s) in shards.iter().enumerate() {
            let r = results(s);
            assert_eq!(r["shard"]["index"], i);
            assert_eq!(r["shard"]["planned"], planned);
            finished += r["shard"]["finished"].as_object().unwrap().len();
        }
        assert_eq!(finished, 5, "n = {n}");
        let out = root.join("merged");
        let m = merge(&shards, &out, &[]);
        assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
        let merged = results(&out);
        for (task, want) in full["tasks"].as_object().unwrap() {
            assert_eq!(
                numbers(&merged["tasks"][task]),
                numbers(want),
                "n = {n}, {task}"
            );
        }
        assert_eq!(merged["macro_score"], full["macro_score"], "n = {n}");
        assert_eq!(merged["settings"], full["settings"]);
        for role in ["teacher", "student"] {
            assert_eq!(merged[role], full[role], "n = {n}, {role}");
        }
        assert_eq!(merged["merge"]["inputs"].as_array().unwrap().len(), n);
        for file in ["sst2.jsonl", "arc_easy.jsonl"] {
            let read =
                |d: &Path| std::fs::read_to_string(d.join("predictions").join(file)).unwrap();
            assert_eq!(read(&out), read(&full_dir), "n = {n}, {file}");
        }
        // And the gate agrees: the merged file against the unsharded one is no regression.
        let base = full_dir.join("results.json").display().to_string();
        let cur = out.join("results.json").display().to_string();
        let cmp: Value = serde_json::from_str(&ok(
            &[
                "compare",
                "--baseline",
                &base,
                "--current",
                &cur,
                "--format",
                "json",
            ]
            .map(String::from),
            &[],
        ))
        .unwrap();
        assert_eq!(cmp["regressions"], 0, "n = {n}: {cmp}");
    }
}

#[test]
fn a_teacher_and_its_student_may_run_in_different_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let shards = shard_runs(&data, tmp.path(), 2, &[]);
    let planned = results(&shards[0])["shard"]["planned"].clone();
    let shard_of = |task: &str, role: &str| {
        planned
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["task"] == task && c["role"] == role)
            .map(|c| c["shard"].as_u64().unwrap())
            .unwrap()
    };
    // The two largest cells (SST-2's, equal costs) are spread before anything else.
    assert_ne!(shard_of("sst2", "teacher"), shard_of("sst2", "student"));
    // A shard with one cell of a task has no result for it, only the cell.
    let r = results(&shards[shard_of("sst2", "teacher") as usize]);
    assert!(r["tasks"].get("sst2").is_none(), "{}", r["tasks"]);
    assert!(r["shard"]["finished"].get("sst2.teacher").is_some());
}

#[test]
fn plan_prints_the_shard_matrix_and_shard_auto_reads_the_job_index() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let mut args = run_args(&data, &tmp.path().join("unused"), &[]);
    args[0] = "plan".into();
    args.extend(["--shards", "3", "--format", "json"].map(String::from));
    let plan: Value = serde_json::from_str(&ok(&args, &[])).unwrap();
    assert!(!tmp.path().join("unused").exists(), "plan writes nothing");
    let matrix = plan["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 3);
    assert_eq!(matrix[1]["shard"], "1/3");
    let mut ids: Vec<String> = matrix
        .iter()
        .flat_map(|m| m["cells"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "arc_easy.student",
            "arc_easy.teacher",
            "sst2.student",
            "sst2.teacher",
            "wikitext2.pair"
        ]
    );
    // A Kubernetes Indexed Job's pod 1 of 3 runs what the matrix gives shard 1/3.
    let out = tmp.path().join("pod1");
    ok(
        &run_args(&data, &out, &["--shard", "auto"]),
        &[("JOB_COMPLETION_INDEX", "1"), ("HARNESS_SHARD_COUNT", "3")],
    );
    let r = results(&out);
    assert_eq!(r["shard"]["index"], 1);
    let mut got: Vec<String> = r["shard"]["finished"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    got.sort();
    let mut want: Vec<String> = matrix[1]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Bad shard specs fail before anything runs.
    let (code, err) = fails(
        &run_args(&data, &out, &["--shard", "3/3"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("must be below N"), "{err}");
}

/// Edit a results file in place.
fn edit(dir: &Path, f: impl FnOnce(&mut Value)) {
    let path = dir.join("results.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn merge_refuses_what_does_not_belong_together() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let shards = shard_runs(&data, tmp.path(), 3, &[]);
    let out = tmp.path().join("merged");
    let refused = |inputs: &[PathBuf], extra: &[&str], want: &str| {
        let m = merge(inputs, &out, extra);
        let err = String::from_utf8_lossy(&m.stderr).into_owned();
        assert_eq!(m.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "want '{want}' in: {err}");
    };

    // Different settings: a shard run with another batch size.
    let other = tmp.path().join("bs8");
    ok(
        &run_args(&data, &other, &["--shard", "2/3", "--batch-size", "8"]),
        &[],
    );
    refused(
        &[shards[0].clone(), shards[1].clone(), other],
        &[],
        "settings.batch_size is 32 in",
    );

    // Another harness version.
    let old = tmp.path().join("old-harness");
    copy_dir(&shards[2], &old);
    edit(&old, |v| v["harness_version"] = "0.0.1".into());
    refused(
        &[shards[0].clone(), shards[1].clone(), old],
        &[],
        "harness_version is",
    );

    // A missing cell: shard 1 of 3 not given. --allow-partial merges the rest and says so.
    refused(
        &[shards[0].clone(), shards[2].clone()],
        &[],
        "no input has the cell",
    );
    let m = merge(
        &[shards[0].clone(), shards[2].clone()],
        &out,
        &["--allow-partial"],
    );
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let partial = results(&out);
    let missing = partial["merge"]["missing_cells"].as_array().unwrap();
    assert!(!missing.is_empty());
    for cell in missing {
        let task = cell.as_str().unwrap().split('.').next().unwrap();
        assert!(
            partial["tasks"].get(task).is_none(),
            "{task} without all its cells"
        );
    }

    // A duplicate cell that conflicts: the same shard twice, one copy with other outputs.
    let dup = tmp.path().join("dup");
    copy_dir(&shards[0], &dup);
    let finished = results(&dup)["shard"]["finished"].clone();
    let (id, _) = finished.as_object().unwrap().iter().next().unwrap();
    let cell_path = dup.join("cells").join(format!("{id}.json"));
    let mut cell: Value =
        serde_json::from_str(&std::fs::read_to_string(&cell_path).unwrap()).unwrap();
    let metrics = cell["cell"]["metrics"].as_object_mut().unwrap();
    let (name, _) = metrics
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    metrics.insert(name, Value::from(0.123));
    std::fs::write(&cell_path, cell.to_string()).unwrap();
    refused(
        &[shards[0].clone(), shards[1].clone(), shards[2].clone(), dup],
        &[],
        &format!("cell {id} conflicts"),
    );
    // The same shard given twice, unchanged, is not a conflict.
    let m = merge(
        &[
            shards[0].clone(),
            shards[0].clone(),
            shards[1].clone(),
            shards[2].clone(),
        ],
        &out,
        &[],
    );
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));

    // Another machine: refused for its speed figures unless --allow-mixed-env.
    let moved = tmp.path().join("moved");
    copy_dir(&shards[2], &moved);
    edit(&moved, |v| {
        v["environment"]["cpu_model"] = "Another CPU".into()
    });
    let inputs = [shards[0].clone(), shards[1].clone(), moved];
    refused(&inputs, &[], "measured on different machines");
    let m = merge(&inputs, &out, &["--allow-mixed-env"]);
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let mixed = results(&out);
    assert!(mixed["merge"]["mixed_environments"]
        .as_str()
        .unwrap()
        .contains("CPU"));
    assert_eq!(
        mixed["merge"]["inputs"][2]["environment"]["cpu_model"],
        "Another CPU"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("several machines"), "{md}");

    // A shard and a whole run do not mix.
    let whole = tmp.path().join("whole");
    ok(&run_args(&data, &whole, &[]), &[]);
    refused(&[shards[0].clone(), whole], &[], "is a shard (--shard) and");
}
