//! End-to-end tests of the `harness` binary on the committed tiny checkpoints and small GLUE
//! folders written here: results, modes, resumption, batch-size invariance, and one test per
//! kind of bad input (exit code 2, one line on stderr, no results file).

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{fixture, harness, write, Run};

const POSITIVE: &[&str] = &[
    "it was a great movie, very fun.",
    "a good film.",
    "great fun!",
    "the film was very good.",
    "a great and fun movie.",
    "good, very good.",
];
const NEGATIVE: &[&str] = &[
    "a terrible, boring film!",
    "the movie was bad.",
    "boring and terrible.",
    "a very bad film.",
    "bad, bad, bad.",
    "terrible movie, not fun.",
];

/// A small GLUE folder: SST-2 (dev and train), STS-B dev, MNLI (dev and train), MRPC dev only.
fn glue_dir(dir: &Path) {
    let mut sst_dev = String::from("sentence\tlabel\n");
    let mut sst_train = String::from("sentence\tlabel\n");
    for (i, (p, n)) in POSITIVE.iter().zip(NEGATIVE).enumerate() {
        sst_dev += &format!("{p} \t1\n{n} \t0\n");
        for k in 0..3 {
            sst_train += &format!(
                "{}{p} \t1\n{}{n} \t0\n",
                "the ".repeat(k),
                "a ".repeat((i + k) % 3)
            );
        }
    }
    write(dir, "SST-2/dev.tsv", &sst_dev);
    write(dir, "SST-2/train.tsv", &sst_train);

    let mut sts = String::from("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\r\n");
    let pairs = [
        (
            "a man is dancing.",
            "a man wearing a hat is dancing.",
            "4.2",
        ),
        (
            "a child is riding a horse.",
            "a child is riding a horse.",
            "5.000",
        ),
        ("a dog is playing.", "a cat is dancing.", "1.1"),
        ("the woman is riding.", "a man is playing.", "0.6"),
        (
            "he said the company does not fit.",
            "our growth strategy is very long.",
            "0.2",
        ),
        ("a cat is playing.", "the cat is playing.", "4.8"),
        ("what is this?", "this is a question.", "2.5"),
        ("a woman is dancing.", "a woman dancing.", "4.6"),
    ];
    for (i, (a, b, s)) in pairs.iter().enumerate() {
        sts +=
            &format!("{i}\tmain-captions\tMSRvid\t2012test\t{i:04}\tnone\tnone\t{a}\t{b}\t{s}\r\n");
    }
    write(dir, "STS-B/dev.tsv", &sts);

    let header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n";
    let nli = [
        ("a man is dancing.", "a man is dancing.", "entailment"),
        (
            "a man is dancing.",
            "a woman is riding a horse.",
            "contradiction",
        ),
        (
            "a child is playing.",
            "a child is playing with a dog.",
            "neutral",
        ),
        ("the cat is very fun.", "the cat is fun.", "entailment"),
        ("a dog is riding.", "no dog is riding.", "contradiction"),
        ("she said yes.", "she said it was a good film.", "neutral"),
    ];
    for file in ["dev_matched.tsv", "dev_mismatched.tsv", "train.tsv"] {
        let mut text = String::from(header);
        for (i, (a, b, l)) in nli.iter().enumerate() {
            text += &format!(
                "{i}\t{i}\t{i}{}\tfiction\t\t\t\t\t{a}\t{b}\t{l}\t{l}\n",
                &l[..1]
            );
        }
        write(dir, &format!("MNLI/{file}"), &text);
    }
    write(
        dir,
        "MRPC/dev.tsv",
        "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta man is dancing.\ta man is \"dancing.\n0\t3\t4\ta dog.\ta cat.\n",
    );
}

fn run(tmp: &Path, out: &str, teacher: &str, student: &str, tasks: &str, extra: &[&str]) -> Run {
    let data = tmp.join("glue");
    if !data.exists() {
        glue_dir(&data);
    }
    let out = tmp.join(out);
    let mut args = vec![
        "run",
        "--quick",
        "--teacher",
        teacher,
        "--student",
        student,
        "--task",
        tasks,
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = harness(&args, &[]);
    Run { out, output }
}

#[test]
fn encoders_are_scored_by_probe_and_cosine_and_results_match_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(
        tmp.path(),
        "out",
        &fixture("bert-encoder-tiny"),
        &fixture("mpnet-encoder-tiny"),
        "stsb,sst2,mrpc",
        &[],
    );
    let res = r.checked_results();

    assert_eq!(res["tasks"]["stsb"]["mode"], "cosine");
    assert_eq!(res["tasks"]["sst2"]["mode"], "probe");
    assert_eq!(res["tasks"]["sst2"]["n_examples"], 12);
    assert_eq!(res["tasks"]["sst2"]["teacher"]["probe"]["train_rows"], 36);
    assert_eq!(res["teacher"]["checkpoint"]["architecture"], "bert");
    assert_eq!(res["student"]["checkpoint"]["architecture"], "mpnet");
    // MRPC has no train split here: it is reported as not scored, with the reason.
    let why = res["skipped"]["mrpc"].as_str().unwrap();
    assert!(
        why.contains("train split") && why.contains("MRPC/train.tsv"),
        "{why}"
    );
    assert!(res["tasks"].get("mrpc").is_none());

    for task in ["stsb", "sst2"] {
        let t = &res["tasks"][task];
        let (a, b) = (
            t["teacher"]["metrics"][t["primary_metric"].as_str().unwrap()]
                .as_f64()
                .unwrap(),
            t["student"]["metrics"][t["primary_metric"].as_str().unwrap()]
                .as_f64()
                .unwrap(),
        );
        match t["retention"].as_f64() {
            Some(ret) => assert!((ret - b / a).abs() < 1e-12),
            None => assert!(a <= 0.0),
        }
    }
    let preds = std::fs::read_to_string(r.out.join("predictions/sst2.jsonl")).unwrap();
    let lines: Vec<Value> = preds
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert!(lines[0]["teacher"]["probs"].as_array().unwrap().len() == 2);
    assert!(lines[0]["student"]["label"].is_u64());
    let sts = std::fs::read_to_string(r.out.join("predictions/stsb.jsonl")).unwrap();
    assert!(sts.lines().next().unwrap().contains("\"score\"") || sts.contains("\"value\""));
    // Cost figures: both models profiled, energy estimated here and labelled so, speedup derived.
    for role in ["teacher", "student"] {
        let p = &res["tasks"]["stsb"][role]["profile"];
        assert_eq!(p["batch1_examples"], 8);
        assert!(p["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(
            p["latency_ms"]["p99"].as_f64().unwrap() >= p["latency_ms"]["p50"].as_f64().unwrap()
        );
        assert!(p["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert!(p["flops_per_example"].as_f64().unwrap() > 0.0);
        assert!(["estimated", "rapl"].contains(&p["energy_source"].as_str().unwrap()));
        assert!(p["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
    let t = &res["tasks"]["stsb"];
    let speedup = t["speedup"].as_f64().unwrap();
    let expected = t["teacher"]["profile"]["batch1_pass_s"].as_f64().unwrap()
        / t["student"]["profile"]["batch1_pass_s"].as_f64().unwrap();
    assert!((speedup - expected).abs() < 1e-9);
    assert!(res["environment"]["cpu_model"].is_string());
    // The Markdown summary is on stdout.
    assert!(r.stdout().contains("| stsb "), "{}", r.stdout());
    assert!(r.stdout().contains("**macro**"));
}

#[test]
fn heads_are_mapped_by_label_name_and_mnli_reports_both_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(
        tmp.path(),
        "out",
        &fixture("distilbert-mnli-tiny"),
        &fixture("bert-encoder-tiny"),
        "mnli",
        &[],
    );
    assert!(r.output.status.success(), "{}", r.stderr());
    let res = r.results();
    let t = &res["tasks"]["mnli"];
    assert_eq!(t["teacher"]["mode"], "head");
    assert_eq!(t["student"]["mode"], "probe");
    assert_eq!(t["mode"], "mixed");
    assert_eq!(t["n_examples"], 12);
    assert_eq!(t["primary_metric"], "accuracy_matched");
    for m in ["accuracy_matched", "accuracy_mismatched"] {
        let v = t["teacher"]["metrics"][m].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v));
    }
    // Probabilities are in the task's label order (entailment, neutral, contradiction), and the
    // predicted label is their argmax.
    let preds = std::fs::read_to_string(r.out.join("predictions/mnli.jsonl")).unwrap();
    for line in preds.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let probs: Vec<f64> = v["teacher"]["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        let best = (0..3)
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
            .unwrap();
        assert_eq!(v["teacher"]["label"], best);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    }
}

fn all_metrics(res: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for (task, t) in res["tasks"].as_object().unwrap() {
        for role in ["teacher", "student"] {
            for (m, v) in t[role]["metrics"].as_object().unwrap() {
                out.push((format!("{task}.{role}.{m}"), v.as_f64().unwrap()));
            }
        }
    }
    out
}

#[test]
fn metrics_are_the_same_at_batch_size_1_and_32() {
    let tmp = tempfile::tempdir().unwrap();
    // Every mode: regression head vs cosine, classification head vs probe, reordered MNLI head.
    let cases = [
        ("bert-stsb-tiny", "mpnet-encoder-tiny", "stsb"),
        ("bert-sst2-tiny", "mpnet-encoder-tiny", "sst2"),
        ("distilbert-mnli-tiny", "bert-encoder-tiny", "mnli"),
    ];
    for (i, (teacher, student, task)) in cases.iter().enumerate() {
        let (teacher, student) = (fixture(teacher), fixture(student));
        let one = run(
            tmp.path(),
            &format!("bs1-{i}"),
            &teacher,
            &student,
            task,
            &["--batch-size", "1"],
        );
        let many = run(
            tmp.path(),
            &format!("bs32-{i}"),
            &teacher,
            &student,
            task,
            &["--batch-size", "32"],
        );
        assert!(one.output.status.success(), "{}", one.stderr());
        assert!(many.output.status.success(), "{}", many.stderr());
        let (a, b) = (all_metrics(&one.results()), all_metrics(&many.results()));
        assert_eq!(a.len(), b.len());
        assert!(a.len() >= 2, "{a:?}");
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-4,
                "{name}: {x} at batch 1, {y} at batch 32"
            );
        }
    }
}

#[test]
fn a_rerun_reuses_finished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, s) = (fixture("bert-encoder-tiny"), fixture("mpnet-encoder-tiny"));
    let first = run(tmp.path(), "out", &t, &s, "stsb", &[]);
    assert!(first.output.status.success(), "{}", first.stderr());
    let second = run(tmp.path(), "out", &t, &s, "stsb", &[]);
    assert!(second.output.status.success(), "{}", second.stderr());
    assert_eq!(
        second.stderr().matches("reusing the finished cell").count(),
        2,
        "{}",
        second.stderr()
    );
    assert!(
        !second.stderr().contains("loaded "),
        "no model is loaded: {}",
        second.stderr()
    );
    assert_eq!(
        all_metrics(&first.results()),
        all_metrics(&second.results())
    );
    // A changed setting that affects numbers recomputes.
    let first_results = first.results();
    let third = run(tmp.path(), "out", &t, &s, "stsb", &["--max-length", "8"]);
    assert!(third.output.status.success(), "{}", third.stderr());
    assert!(!third.stderr().contains("reusing"), "{}", third.stderr());
    // Inputs longer than 8 tokens were cut, and counted (each sentence of a pair separately).
    let res = third.results();
    assert_eq!(res["settings"]["max_length"], 8);
    let cut = res["tasks"]["stsb"]["teacher"]["n_truncated"]
        .as_u64()
        .unwrap();
    assert!(cut > 0 && cut <= 16, "{cut}");
    assert_eq!(first_results["tasks"]["stsb"]["teacher"]["n_truncated"], 0);
}

/// Run with bad input; assert exit code 2, one `error:` line mentioning `needle`, no results.
fn fails_with(args: &[&str], envs: &[(&str, &str)], out: &Path, needle: &str) {
    let output = harness(args, envs);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !out.join("results.json").exists(),
        "no results file on bad input"
    );
}

/// Copy a fixture folder so a test can damage it.
fn copy_fixture(name: &str, to: &Path) -> PathBuf {
    let dst = to.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let e = entry.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    dst
}

fn bad_run(tmp: &Path, teacher: &str, student: &str, task: &str, needle: &str) {
    let data = tmp.join("glue");
    if !data.exists() {
        glue_dir(&data);
    }
    let out = tmp.join("out");
    fails_with(
        &[
            "run",
            "--quick",
            "--teacher",
            teacher,
            "--student",
            student,
            "--task",
            task,
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ],
        &[],
        &out,
        needle,
    );
}

#[test]
fn missing_model_folder() {
    let tmp = tempfile::tempdir().unwrap();
    bad_run(
        tmp.path(),
        "./no/such/model",
        &fixture("bert-encoder-tiny"),
        "stsb",
        "model folder not found: ./no/such/model",
    );
}

#[test]
fn missing_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture("bert-encoder-tiny", tmp.path());
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    bad_run(
        tmp.path(),
        dir.to_str().unwrap(),
        &fixture("bert-encoder-tiny"),
        "stsb",
        "no weights found (expected model.safetensors, model.safetensors.index.json with its shards, pytorch_model.bin, or pytorch_model.bin.index.json with its shards)",
    );
}

#[test]
fn truncated_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture("bert-encoder-tiny", tmp.path());
    let w = dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    bad_run(
        tmp.path(),
        &fixture("bert-encoder-tiny"),
        dir.to_str().unwrap(),
        "stsb",
        "truncated or corrupt",
    );
}

#[test]
fn truncated_pytorch_bin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture("distilbert-mnli-tiny", tmp.path());
    let w = dir.join("pytorch_model.bin");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 3]).unwrap();
    bad_run(
        tmp.path(),
        dir.to_str().unwrap(),
        &fixture("bert-encoder-tiny"),
        "mnli",
        "truncated or corrupt",
    );
}

#[test]
fn unsupported_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture("bert-encoder-tiny", tmp.path());
    let cfg = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"bert\"", "\"xlnet\"");
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    bad_run(
        tmp.path(),
        dir.to_str().unwrap(),
        &fixture("bert-encoder-tiny"),
        "stsb",
        "unsupported architecture model_type 'xlnet' (supported: bert, distilbert, mpnet)",
    );
}

#[test]
fn tokenizer_that_does_not_fit_the_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_fixture("distilbert-mnli-tiny", tmp.path());
    let mut vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    for i in 0..500 {
        vocab += &format!("extra{i}\n");
    }
    std::fs::write(dir.join("vocab.txt"), vocab).unwrap();
    bad_run(
        tmp.path(),
        dir.to_str().unwrap(),
        &fixture("bert-encoder-tiny"),
        "mnli",
        "the tokenizer does not belong to this checkpoint",
    );
}

#[test]
fn malformed_tsv_row() {
    let tmp = tempfile::tempdir().unwrap();
    glue_dir(&tmp.path().join("glue"));
    let p = tmp.path().join("glue/SST-2/dev.tsv");
    let mut text = std::fs::read_to_string(&p).unwrap();
    text += "a row without its label\n";
    std::fs::write(&p, text).unwrap();
    bad_run(
        tmp.path(),
        &fixture("bert-encoder-tiny"),
        &fixture("mpnet-encoder-tiny"),
        "sst2",
        "SST-2/dev.tsv:14: expected at least 2 tab-separated fields, found 1",
    );
}

#[test]
fn empty_data_set() {
    let tmp = tempfile::tempdir().unwrap();
    glue_dir(&tmp.path().join("glue"));
    std::fs::write(tmp.path().join("glue/SST-2/dev.tsv"), "sentence\tlabel\n").unwrap();
    bad_run(
        tmp.path(),
        &fixture("bert-encoder-tiny"),
        &fixture("mpnet-encoder-tiny"),
        "sst2",
        "the data set is empty",
    );
}

#[test]
fn unknown_task_suggests_the_closest_name() {
    let tmp = tempfile::tempdir().unwrap();
    bad_run(
        tmp.path(),
        &fixture("bert-encoder-tiny"),
        &fixture("mpnet-encoder-tiny"),
        "stsb,mnlj",
        "unknown task 'mnlj' (did you mean 'mnli'?)",
    );
}

#[test]
fn unknown_alias_suggests_the_closest_name() {
    let tmp = tempfile::tempdir().unwrap();
    bad_run(
        tmp.path(),
        "bert-bsae",
        &fixture("mpnet-encoder-tiny"),
        "stsb",
        "unknown model alias 'bert-bsae' (did you mean 'bert-base'?)",
    );
}

#[test]
fn head_for_another_task_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    bad_run(
        tmp.path(),
        &fixture("bert-sst2-tiny"),
        &fixture("mpnet-encoder-tiny"),
        "mnli",
        "head has 2 outputs (NEGATIVE, POSITIVE) but mnli has 3 labels",
    );
}

#[test]
fn unwritable_output_folder() {
    let tmp = tempfile::tempdir().unwrap();
    glue_dir(&tmp.path().join("glue"));
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let out = blocker.join("out");
    fails_with(
        &[
            "run",
            "--quick",
            "--teacher",
            &fixture("bert-encoder-tiny"),
            "--student",
            &fixture("mpnet-encoder-tiny"),
            "--task",
            "stsb",
            "--data-dir",
            tmp.path().join("glue").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        &out,
        "cannot be created",
    );
}

#[test]
fn aliases_without_network_fail_with_the_offline_message() {
    let tmp = tempfile::tempdir().unwrap();
    bad_run(
        tmp.path(),
        "bert-base",
        "distilbert",
        "sst2",
        "cannot reach the Hugging Face Hub",
    );
    let out = tmp.path().join("out");
    let data = tmp.path().join("glue");
    let home = tmp.path().join("hf-home");
    fails_with(
        &["run", "--quick", "--teacher", "bert-base", "--student", "distilbert", "--task", "sst2",
          "--data-dir", data.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
        &out,
        "HF_HUB_OFFLINE is set and 'gchhablani/bert-base-cased-finetuned-sst2' (revision main) is not in the Hub cache",
    );
}

/// Lay out a fixture as the Hub cache stores a model snapshot.
fn fake_hub_cache(home: &Path, repo: &str, fixture_name: &str) {
    common::fake_hub_snapshot(home, "models", repo, &fixture(fixture_name));
}

#[test]
fn hub_ids_load_from_a_hub_snapshot_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    glue_dir(&tmp.path().join("glue"));
    let home = tmp.path().join("hf-home");
    fake_hub_cache(&home, "tiny-org/bert-encoder", "bert-encoder-tiny");
    fake_hub_cache(&home, "tiny-org/mpnet-encoder", "mpnet-encoder-tiny");
    let out = tmp.path().join("out");
    let res = common::run_results(
        &[
            "run",
            "--quick",
            "--teacher",
            "tiny-org/bert-encoder",
            "--student",
            "tiny-org/mpnet-encoder",
            "--task",
            "stsb",
            "--data-dir",
            tmp.path().join("glue").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
        &out,
    );
    assert_eq!(res["teacher"]["source"], "hub");
    assert_eq!(
        res["tasks"]["stsb"]["teacher"]["checkpoint"]["resolved"],
        "tiny-org/bert-encoder@0123456789abcdef0123456789abcdef01234567"
    );
}

#[test]
fn a_sharded_pytorch_bin_loads_from_a_hub_snapshot_and_scores_as_the_single_file() {
    // Older large checkpoints are pytorch_model-0000N-of-0000M.bin shards with an index.
    let tmp = tempfile::tempdir().unwrap();
    glue_dir(&tmp.path().join("glue"));
    let home = tmp.path().join("hf-home");
    fake_hub_cache(
        &home,
        "tiny-org/distilbert-sharded",
        "distilbert-mnli-tiny-sharded",
    );
    let data = tmp.path().join("glue");
    let score = |out: &str, teacher: &str, envs: &[(&str, &str)]| {
        let out = tmp.path().join(out);
        let student = fixture("bert-encoder-tiny");
        let args = [
            "run",
            "--quick",
            "--teacher",
            teacher,
            "--student",
            &student,
            "--task",
            "mnli",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        common::run_results(&args, envs, &out)["tasks"]["mnli"]["teacher"].clone()
    };
    let hub = score(
        "hub",
        "tiny-org/distilbert-sharded",
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
    );
    let single = score("single", &fixture("distilbert-mnli-tiny"), &[]);
    assert_eq!(hub["mode"], "head");
    assert_eq!(hub["metrics"], single["metrics"]);
    assert_eq!(
        hub["checkpoint"]["parameters"],
        single["checkpoint"]["parameters"]
    );
}

#[test]
fn list_prints_tasks_and_models() {
    let out = harness(&["list", "tasks"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for t in [
        "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli",
    ] {
        assert!(text.contains(&format!("| {t} |")), "{text}");
    }
    let out = harness(&["list", "models"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "| distilbert | sst2 | distilbert/distilbert-base-uncased-finetuned-sst-2-english |"
        ),
        "{text}"
    );
}

#[test]
fn glue_comes_from_the_hub_parquet_files_without_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    // The dataset cache layout: datasets--nyu-mll--glue/{refs/main, snapshots/<commit>/sst2/*.parquet}
    common::fake_hub_snapshot(&home, "datasets", "nyu-mll/glue", &fixture("hub-glue"));
    let out = tmp.path().join("out");
    let res = common::run_results(
        &[
            "run",
            "--quick",
            "--teacher",
            &fixture("bert-sst2-tiny"),
            "--student",
            &fixture("bert-encoder-tiny"),
            "--task",
            "sst2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
        &out,
    );
    assert_eq!(res["settings"]["data_source"], "hub:nyu-mll/glue");
    assert_eq!(res["tasks"]["sst2"]["n_examples"], 4);
    assert_eq!(res["tasks"]["sst2"]["student"]["mode"], "probe");
    assert_eq!(res["tasks"]["sst2"]["student"]["probe"]["train_rows"], 6);
    let preds = std::fs::read_to_string(out.join("predictions/sst2.jsonl")).unwrap();
    let first: Value = serde_json::from_str(preds.lines().next().unwrap()).unwrap();
    assert_eq!(first["text_a"], "it was a great movie, very fun.");
    assert_eq!(first["gold"], 1);
}

#[test]
fn without_data_dir_or_network_the_error_says_what_to_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fails_with(
        &[
            "run",
            "--quick",
            "--teacher",
            &fixture("bert-sst2-tiny"),
            "--student",
            &fixture("bert-encoder-tiny"),
            "--task",
            "sst2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        &out,
        "of the dataset 'nyu-mll/glue' from the Hugging Face Hub at http://127.0.0.1:9",
    );
}

#[test]
fn profile_sweeps_shapes_of_a_folder_and_of_a_bare_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("prof");
    let config = PathBuf::from(fixture("distilbert-mnli-tiny")).join("config.json");
    let output = harness(
        &[
            "profile",
            "--quick",
            "--quiet",
            "--model",
            &fixture("bert-encoder-tiny"),
            "--model",
            config.to_str().unwrap(),
            "--batch-sizes",
            "1,4",
            "--seq-lens",
            "8,100",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("profile.json")).unwrap()).unwrap();
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    // 100 tokens exceed both tiny models' 64 positions: skipped with the reason, not faked.
    for m in models {
        let points = m["points"].as_array().unwrap();
        assert_eq!(points.len(), 2, "{m}");
        assert_eq!(points[1]["batch_size"], 4);
        assert_eq!(points[1]["seq_len"], 8);
        assert!(points[1]["sequences_per_s"].as_f64().unwrap() > 0.0);
        assert!(m["skipped"][0].as_str().unwrap().contains("seq_len 100"));
    }
    assert_eq!(models[1]["checkpoint"]["architecture"], "distilbert");
    assert!(models[1]["checkpoint"]["resolved"]
        .as_str()
        .unwrap()
        .starts_with("random weights"));
    // Random weights have the same parameter count as the checkpoint built from that config.
    let real = harness(
        &[
            "profile",
            "--quick",
            "--quiet",
            "--model",
            &fixture("distilbert-mnli-tiny"),
            "--batch-sizes",
            "1",
            "--seq-lens",
            "8",
            "--out",
            tmp.path().join("p2").to_str().unwrap(),
        ],
        &[],
    );
    assert!(real.status.success());
    let v2: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("p2/profile.json")).unwrap())
            .unwrap();
    // The checkpoint also has a classification head (pre_classifier + classifier) the random
    // encoder does not build.
    let head = 32 * 32 + 32 + 3 * 32 + 3;
    assert_eq!(
        v2["models"][0]["checkpoint"]["parameters"]
            .as_u64()
            .unwrap(),
        models[1]["checkpoint"]["parameters"].as_u64().unwrap() + head
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("| batch x seq"));
}

#[test]
fn profile_quantize_profiles_the_quantized_model_and_refuses_unknown_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = |quant: &str, out: &str| {
        harness(
            &[
                "profile",
                "--quick",
                "--quiet",
                "--model",
                &fixture("bert-encoder-tiny"),
                "--batch-sizes",
                "2",
                "--seq-lens",
                "8",
                "--quantize",
                quant,
                "--out",
                tmp.path().join(out).to_str().unwrap(),
            ],
            &[],
        )
    };
    let output = profile("q8_0", "q");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("q/profile.json")).unwrap())
            .unwrap();
    let checkpoint = &v["models"][0]["checkpoint"];
    assert!(checkpoint["quantization"]
        .as_str()
        .unwrap()
        .starts_with("q8_0"));
    // Linear weights in Q8_0 take 34 bytes per 32 values (36 on the integer GEMM) instead of
    // 128.
    assert!(
        checkpoint["weight_bytes"].as_u64().unwrap()
            < checkpoint["parameters"].as_u64().unwrap() * 4
    );
    assert!(
        v["models"][0]["points"][0]["sequences_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The environment names the kernel that multiplied the Q8_0 weights, as a run's does.
    let kernel = checkpoint["kernels"]["q8_0"].as_str().unwrap();
    assert_eq!(v["environment"]["kernels"]["q8_0"], kernel);

    let bad = profile("q3", "bad");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--quantize") && err.contains("q8_0"), "{err}");
    assert!(!tmp.path().join("bad/profile.json").exists());
}

#[test]
fn run_writes_reports_and_report_compare_merge_work_on_its_results() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(
        tmp.path(),
        "out",
        &fixture("bert-sst2-tiny"),
        &fixture("mpnet-encoder-tiny"),
        "sst2",
        &[],
    );
    assert!(r.output.status.success(), "{}", r.stderr());
    // `run` writes the human reports beside the results.
    for f in ["report.md", "report.html", "results.csv"] {
        assert!(r.out.join(f).exists(), "{f}");
    }
    let res = r.results();
    let cmp = &res["tasks"]["sst2"]["comparison"];
    assert_eq!(cmp["primary_diff"]["resamples"], 1000);
    let agreement = cmp["top1_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement));
    let conf = cmp["confusion"].as_array().unwrap();
    let total: u64 = conf
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 12, "the prediction table counts every example");
    assert!(cmp["teacher_calibration"]["ece"].as_f64().is_some());

    // report: every format, to another folder.
    let results = r.out.join("results.json");
    let dir = tmp.path().join("reports");
    let out = harness(
        &[
            "report",
            results.to_str().unwrap(),
            "--format",
            "md,html,csv,json",
            "--out",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("<circle"),
        "charts drawn"
    );
    assert!(std::fs::read_to_string(dir.join("results.csv"))
        .unwrap()
        .starts_with("task,role,model,name,mode,metric,value\n"));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("### Student against teacher"), "{md}");
    let bad = harness(
        &["report", results.to_str().unwrap(), "--format", "pdf"],
        &[],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown report format 'pdf'"));

    // compare: the same file twice passes; a seeded regression fails with 1; bad input is 2.
    let compare = |baseline: &str, current: &str| {
        harness(
            &["compare", "--baseline", baseline, "--current", current],
            &[],
        )
    };
    let same = compare(results.to_str().unwrap(), results.to_str().unwrap());
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    assert!(String::from_utf8_lossy(&same.stdout).contains("no regression"));
    let mut worse = res.clone();
    let acc = worse["tasks"]["sst2"]["student"]["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    worse["tasks"]["sst2"]["student"]["metrics"]["accuracy"] = Value::from(acc - 0.3);
    // Make the noise band narrow so only the threshold decides.
    worse["tasks"]["sst2"]["comparison"]["primary_diff"]["low"] = Value::from(0.0);
    worse["tasks"]["sst2"]["comparison"]["primary_diff"]["high"] = Value::from(0.0);
    let worse_path = tmp.path().join("worse.json");
    std::fs::write(&worse_path, serde_json::to_string(&worse).unwrap()).unwrap();
    let reg = compare(results.to_str().unwrap(), worse_path.to_str().unwrap());
    assert_eq!(
        reg.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&reg.stdout)
    );
    assert!(String::from_utf8_lossy(&reg.stdout).contains("REGRESSION"));
    // Piped: no colour codes; CLICOLOR_FORCE asks for them, NO_COLOR alone changes nothing.
    assert!(!String::from_utf8_lossy(&reg.stdout).contains('\x1b'));
    let args = [
        "compare",
        "--baseline",
        results.to_str().unwrap(),
        "--current",
        worse_path.to_str().unwrap(),
    ];
    let forced = harness(&args, &[("CLICOLOR_FORCE", "1")]);
    assert_eq!(forced.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&forced.stdout).contains("\x1b[1;31mREGRESSION\x1b[0m"));
    let mut other = res.clone();
    other["schema_version"] = Value::from(99);
    let other_path = tmp.path().join("other.json");
    std::fs::write(&other_path, serde_json::to_string(&other).unwrap()).unwrap();
    let err = compare(results.to_str().unwrap(), other_path.to_str().unwrap());
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("schema version 99"));
    let missing = compare("/no/such.json", results.to_str().unwrap());
    assert_eq!(missing.status.code(), Some(2));

    // merge: a file with itself merges; a conflicting cell is refused.
    let merged = tmp.path().join("merged.json");
    let ok = harness(
        &[
            "merge",
            results.to_str().unwrap(),
            results.to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let conflict = harness(
        &[
            "merge",
            results.to_str().unwrap(),
            worse_path.to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(conflict.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("conflicts"));
}
