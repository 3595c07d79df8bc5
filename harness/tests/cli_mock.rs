//! `harness run` end to end on the weightless mock backend (`mock:NAME`): the one run loop with
//! an encoder task and with decoder tasks, checked against values computed here by hand from
//! the mock's documented rules, and the refusal of a request kind a backend does not answer.

use std::path::Path;

mod common;
use common::{harness, write, Run};

fn run(tmp: &Path, teacher: &str, student: &str, task: &str, extra: &[&str]) -> Run {
    let data = tmp.join("data");
    let out = tmp.join("out");
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    Run {
        output: harness(&args, &[]),
        out,
    }
}

const SST2: &[(&str, u32)] = &[
    ("a good film .", 1),
    ("bad .", 0),
    ("it was fun", 1),
    ("terrible and long", 0),
    ("the best", 1),
    ("not good at all", 0),
];

#[test]
fn an_encoder_task_runs_on_the_mock_head_and_scores_what_the_mock_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = String::from("sentence\tlabel\n");
    for (s, l) in SST2 {
        dev += &format!("{s}\t{l}\n");
    }
    write(&tmp.path().join("data"), "SST-2/dev.tsv", &dev);
    let r = run(
        tmp.path(),
        "mock:t:labels=negative,positive",
        "mock:s:labels=positive,negative",
        "sst2",
        &["--batch-size", "4"],
    );
    let res = r.checked_results();
    let t = &res["tasks"]["sst2"];
    assert_eq!(t["teacher"]["mode"], "head");
    assert_eq!(t["student"]["checkpoint"]["architecture"], "mock");
    // The mock's head picks its label (len(text) + 1) % 2 (a single text is "text "); the
    // student's labels are in the other order, and the harness maps each by name.
    let picks = |labels: [u32; 2]| -> f64 {
        let right = SST2
            .iter()
            .filter(|(s, gold)| labels[(s.len() + 1) % 2] == *gold)
            .count();
        right as f64 / SST2.len() as f64
    };
    let teacher = t["teacher"]["metrics"]["accuracy"].as_f64().unwrap();
    let student = t["student"]["metrics"]["accuracy"].as_f64().unwrap();
    assert_eq!(teacher, picks([0, 1]));
    assert_eq!(student, picks([1, 0]));
    // Each model was measured on its own and its profile says so.
    assert!(t["teacher"]["profile"]["batch1_examples"].as_u64() == Some(6));
    // The scores came from the throughput pass's first lap (no pass of their own), and a
    // run without profiling, which scores in a pass of its own, gives the same.
    assert_eq!(
        t["student"]["scored_by"],
        "throughput pass, first lap (batch 4)"
    );
    let plain = Run {
        out: tmp.path().join("plain"),
        output: harness(
            &[
                "run",
                "--no-profile",
                "--teacher",
                "mock:t:labels=negative,positive",
                "--student",
                "mock:s:labels=positive,negative",
                "--task",
                "sst2",
                "--batch-size",
                "4",
                "--data-dir",
                tmp.path().join("data").to_str().unwrap(),
                "--out",
                tmp.path().join("plain").to_str().unwrap(),
            ],
            &[],
        ),
    };
    let res = plain.checked_results();
    let p = &res["tasks"]["sst2"];
    assert_eq!(p["student"]["scored_by"], "scoring pass (batch 4)");
    assert!(p["student"]["profile"].is_null());
    assert_eq!(p["student"]["metrics"], t["student"]["metrics"]);
    assert_eq!(p["teacher"]["metrics"], t["teacher"]["metrics"]);
}

#[test]
fn three_students_share_one_teacher_and_one_report() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = String::from("sentence\tlabel\n");
    for (s, l) in SST2 {
        dev += &format!("{s}\t{l}\n");
    }
    write(&tmp.path().join("data"), "SST-2/dev.tsv", &dev);
    // A student with its labels the other way round (it answers the opposite), one that
    // answers as the teacher does, and the teacher's own quantized copy.
    let r = run(
        tmp.path(),
        "mock:t:labels=negative,positive",
        "mock:flip:labels=positive,negative",
        "sst2",
        &[
            "--student",
            "mock:same:labels=negative,positive",
            "--student",
            "teacher@q8_0",
            "--name",
            "T,flipped",
        ],
    );
    let res = r.checked_results();
    assert_eq!(res["schema_version"], 2);
    assert_eq!(res["teacher"]["name"], "T");
    assert_eq!(res["student"]["name"], "flipped");
    let more = res["more_students"].as_array().unwrap();
    let names: Vec<&str> = more
        .iter()
        .map(|s| s["student"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mock:same", "mock:t q8_0"]);
    let teacher = res["tasks"]["sst2"]["teacher"]["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    let flipped = res["tasks"]["sst2"]["student"]["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    // Six examples, the teacher right on five: the flipped student is right on one.
    assert_eq!((teacher, flipped), (5.0 / 6.0, 1.0 / 6.0));
    for s in more {
        let t = &s["tasks"]["sst2"];
        // The same answers as the teacher: retention 1, full agreement, no discordant pair.
        assert_eq!(t["retention"], 1.0, "{}", s["student"]["name"]);
        assert_eq!(t["comparison"]["top1_agreement"], 1.0);
        assert_eq!(t["comparison"]["mcnemar_p"], 1.0);
        assert!(t["speedup"].as_f64().unwrap() > 0.0);
        // The teacher's cell is the first pair's, reused, not measured again.
        assert_eq!(t["teacher"], res["tasks"]["sst2"]["teacher"]);
        // Each pair has a complete folder of its own.
        let dir = r.out.join(s["dir"].as_str().unwrap());
        assert!(dir.join("results.json").is_file(), "{}", dir.display());
        assert!(dir.join("predictions/sst2.jsonl").is_file());
    }
    assert_eq!(
        more[1]["student"]["checkpoint"]["quantization"],
        "q8_0 (mock: outputs unchanged)"
    );
    let stderr = r.stderr();
    assert_eq!(
        stderr.matches("loaded mock:t:labels").count(),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains("teacher sst2: reusing the finished cell"),
        "{stderr}"
    );
    // One report, one row per model.
    let md = std::fs::read_to_string(r.out.join("report.md")).unwrap();
    assert!(
        md.contains("(teacher) vs flipped, mock:same, mock:t q8_0 (students)"),
        "{md}"
    );
    let rows: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("### Models"))
        .filter(|l| l.starts_with("| T ") || l.starts_with("| flipped") || l.starts_with("| mock:"))
        .take(4)
        .collect();
    assert_eq!(rows.len(), 4, "{md}");
    // The flipped student's macro retention: (1/6) / (5/6).
    assert!(
        rows[1].split('|').any(|c| c.trim() == "20.0%"),
        "{}",
        rows[1]
    );
    let html = std::fs::read_to_string(r.out.join("report.html")).unwrap();
    assert_eq!(html.matches("against the teacher</h2>").count(), 3);

    // A rerun reuses every finished cell of every pair.
    let again = run(
        tmp.path(),
        "mock:t:labels=negative,positive",
        "mock:flip:labels=positive,negative",
        "sst2",
        &[
            "--student",
            "mock:same:labels=negative,positive",
            "--student",
            "teacher@q8_0",
            "--name",
            "T,flipped",
        ],
    );
    let res2 = again.checked_results();
    assert!(!again.stderr().contains("loaded "), "{}", again.stderr());
    assert_eq!(res2["more_students"], res["more_students"]);
}

#[test]
fn several_students_are_checked_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("data"),
        "SST-2/dev.tsv",
        "sentence\tlabel\nok\t1\n",
    );
    let cases: [(&[&str], &str); 5] = [
        (
            &["--student", "mock:b", "--student-quantize", "q8_0"],
            "--student-quantize quantizes the one student",
        ),
        (
            &["--student", "teacher"],
            "needs a block format, e.g. --student teacher@q8_0",
        ),
        (
            &["--name", "t,x,x", "--student", "mock:b"],
            "two models are named 'x'",
        ),
        (&["--name", "a,b,c"], "--name gives 3 names for 2 models"),
        (
            &["--student", "mock:b", "--shard", "0/2"],
            "--shard splits a run of one student",
        ),
    ];
    for (extra, message) in cases {
        let r = run(tmp.path(), "mock:t", "mock:s", "sst2", extra);
        assert_eq!(r.output.status.code(), Some(2), "{extra:?}");
        assert!(r.stderr().contains(message), "{extra:?}: {}", r.stderr());
        assert!(!r.out.join("results.json").exists(), "{extra:?}");
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = harness(&["--version"], &[]);
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let prefix = format!("harness {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&prefix), "{line}");
    // Built from a checkout (as CI and a clone are): the commit is HEAD's, shortened.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(h) = head.ok().filter(|h| h.status.success()) {
        let head = String::from_utf8_lossy(&h.stdout).trim().to_string();
        assert_eq!(line, format!("{prefix}{})", &head[..12]));
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let bash = harness(&["completions", "bash"], &[]);
    assert!(bash.status.success());
    let text = String::from_utf8_lossy(&bash.stdout);
    // The function bash calls, and the subcommands and flags it completes.
    assert!(text.contains("_harness()"), "{text}");
    for word in [
        "run",
        "compare",
        "--teacher",
        "--student",
        "--limit",
        "completions",
    ] {
        assert!(text.contains(word), "{word}");
    }
    for shell in ["zsh", "fish"] {
        let out = harness(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        // zsh spells the flag '--teacher', fish '-l teacher'.
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("teacher"),
            "{shell}"
        );
    }
    let bad = harness(&["completions", "tcsh"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}

#[test]
fn run_help_is_grouped_with_examples() {
    let out = harness(&["run", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let at = |h: &str| {
        help.find(h)
            .unwrap_or_else(|| panic!("no {h:?} in:\n{help}"))
    };
    // Each flag under its heading: models, data, profiling, language models, output.
    let models = at("\nModels:\n");
    let data = at("\nData:\n");
    let profiling = at("\nProfiling:\n");
    let lm = at("\nLanguage models:\n");
    let output = at("\nOutput:\n");
    let within = |flag: &str, from: usize| {
        // The last mention: the usage line at the top names the required flags too.
        let i = help
            .rfind(flag)
            .unwrap_or_else(|| panic!("no {flag:?} in:\n{help}"));
        let next = [models, data, profiling, lm, output]
            .into_iter()
            .filter(|&h| h > from)
            .min()
            .unwrap_or(help.len());
        assert!(
            i > from && i < next,
            "{flag} is not under its heading:\n{help}"
        );
    };
    within("--teacher <TEACHER>", models);
    within("--student <SPEC>", models);
    within("--device <DEVICE>", models);
    within("--task <TASK>", data);
    within("--limit <LIMIT>", data);
    within("--min-time-s", profiling);
    within("--context-length", lm);
    within("--out <OUT>", output);
    assert!(
        help.contains("teacher@q8_0"),
        "the quantized-teacher spelling is documented"
    );
    assert_eq!(
        help.matches("  harness run ").count(),
        2,
        "two examples:\n{help}"
    );
}

/// Mocks with an SST-2 head (labels in the task's order), so a two-row file is scored.
const HEAD_T: &str = "mock:t:labels=negative,positive";
const HEAD_S: &str = "mock:s:labels=negative,positive";

#[test]
fn rust_log_and_verbose_turn_on_debug_lines() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("data"),
        "SST-2/dev.tsv",
        "sentence\tlabel\nok\t1\nbad\t0\n",
    );
    let quiet = run(tmp.path(), HEAD_T, HEAD_S, "sst2", &[]);
    assert!(quiet.output.status.success());
    assert!(!quiet.stderr().contains("DEBUG"), "{}", quiet.stderr());
    // -vv is debug for the harness's crates, RUST_LOG=debug for everything.
    for (extra, envs) in [(vec!["-vv"], vec![]), (vec![], vec![("RUST_LOG", "debug")])] {
        let data = tmp.path().join("data");
        let out = tmp.path().join("logged");
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec![
            "run",
            "--no-profile",
            "--teacher",
            HEAD_T,
            "--student",
            HEAD_S,
            "--task",
            "sst2",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra.iter().copied());
        let o = harness(&args, &envs);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("DEBUG") && err.contains("harness started"),
            "{err}"
        );
        assert!(
            err.contains("cached cell"),
            "the cache lookups are logged: {err}"
        );
        assert!(err.contains("INFO") && err.contains("loading"), "{err}");
    }
}

/// The mock's token id of a word and its next-token logits, as `models/mock.rs` documents.
fn mock_token(word: &str) -> usize {
    1 + word.bytes().map(usize::from).sum::<usize>() % 63
}
fn mock_log_softmax(id: usize, sharpness: f64, target: usize) -> f64 {
    let next = (id + 1) % 64;
    let logit = |k: usize| -sharpness * (k as f64 - next as f64).abs();
    let z = (0..64).map(|k| logit(k).exp()).sum::<f64>().ln();
    logit(target) - z
}

#[test]
fn decoder_tasks_run_on_the_mock_lm_with_perplexity_and_fidelity_computed_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "the cat sat on the mat and then the dog sat on the cat";
    write(&tmp.path().join("data"), "wikitext-2/wiki.test.raw", text);
    let r = run(
        tmp.path(),
        "mock:t",
        "mock:s:sharpness=2",
        "wikitext2,generate",
        &[
            "--context-length",
            "64",
            "--stride",
            "64",
            "--max-new-tokens",
            "3",
        ],
    );
    let res = r.checked_results();
    let ids: Vec<usize> = text.split_whitespace().map(mock_token).collect();
    // One window holds the whole text: every token after the first is scored once.
    let nll = |sharpness: f64| -> f64 {
        ids.windows(2)
            .map(|w| -mock_log_softmax(w[0], sharpness, w[1]))
            .sum::<f64>()
    };
    let wiki = &res["tasks"]["wikitext2"];
    let n = (ids.len() - 1) as f64;
    for (role, sharpness) in [("teacher", 1.0), ("student", 2.0)] {
        let m = &wiki[role]["metrics"];
        assert_eq!(m["tokens_scored"].as_f64().unwrap(), n);
        let ppl = m["perplexity"].as_f64().unwrap();
        let want = (nll(sharpness) / n).exp();
        assert!((ppl - want).abs() < 1e-9 * want, "{role}: {ppl} vs {want}");
    }
    // Fidelity from the teacher's spilled logits against the student's, by hand.
    let f = &wiki["fidelity"];
    assert_eq!(f["same_tokenizer"], true);
    assert_eq!(f["positions"].as_u64().unwrap() as usize, ids.len());
    let kl: f64 = ids
        .iter()
        .map(|&id| {
            (0..64)
                .map(|k| {
                    let (lt, ls) = (mock_log_softmax(id, 1.0, k), mock_log_softmax(id, 2.0, k));
                    lt.exp() * (lt - ls)
                })
                .sum::<f64>()
        })
        .sum::<f64>()
        / ids.len() as f64;
    let got = f["kl"].as_f64().unwrap();
    assert!((got - kl).abs() < 1e-5, "KL {got} vs {kl}");
    assert_eq!(f["top1_agreement"].as_f64(), Some(1.0));
    assert!(
        !r.out.join("cells/wikitext2.teacher-logits.tmp").exists(),
        "the spilled logits are removed"
    );
    // Generation: both mocks continue with the ids after the prompt's last, so they agree.
    let g = &res["tasks"]["generate"];
    assert_eq!(g["fidelity"]["greedy_exact_match"].as_f64(), Some(1.0));
    assert_eq!(
        g["teacher"]["metrics"]["new_tokens_mean"].as_f64(),
        Some(3.0)
    );
}

#[test]
fn a_request_kind_the_model_does_not_answer_names_task_and_model() {
    use harness::models::{Backend, EncoderBackend, LoadOptions};
    use tasks::request::{ContextContinuation, Request};
    let dir = common::fixture("bert-encoder-tiny");
    let opts = LoadOptions {
        device: candle_core::Device::Cpu,
        max_length: None,
    };
    let model = EncoderBackend::load("bert-tiny", Path::new(&dir), &opts).unwrap();
    let pairs = [ContextContinuation {
        context: "a".into(),
        continuation: " b".into(),
    }];
    let err = model
        .run(
            "arc_easy",
            Request::LogLikelihood {
                pairs: &pairs,
                batch_size: 1,
            },
        )
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "task arc_easy needs loglikelihood requests, which model bert-tiny does not answer \
         (it answers: classify, embed)"
    );
}

#[test]
fn a_bad_mock_option_is_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("data"),
        "SST-2/dev.tsv",
        "sentence\tlabel\nok\t1\n",
    );
    let r = run(tmp.path(), "mock:t:colour=red", "mock:s", "sst2", &[]);
    assert_eq!(r.output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.output.stderr).to_string();
    assert!(err.contains("unknown option 'colour=red'"), "{err}");
    assert!(!r.out.join("results.json").exists());
}

#[test]
fn an_unknown_kernel_setting_is_refused_before_anything_runs() {
    for (var, value, want) in [
        (
            "HARNESS_KERNELS",
            "avx1024",
            "HARNESS_KERNELS=\"avx1024\" is not a kernel level: use `avx2` or `avxvnni`",
        ),
        (
            "HARNESS_POOL",
            "rayn",
            "HARNESS_POOL=\"rayn\" is not a pool: use `rayon`",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let o = common::harness(
            &[
                "run",
                "--teacher",
                "mock:t",
                "--student",
                "mock:s",
                "--task",
                "sst2",
                "--out",
                out.to_str().unwrap(),
            ],
            &[(var, value)],
        );
        assert_eq!(o.status.code(), Some(2), "{var}");
        assert!(!out.exists(), "{var}");
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(err.contains(want), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// ARC-layout questions whose mock answers are known: after "Answer:" (token 53) the mock
/// predicts token 54, which is the word "5"; "1" and "9" are 4 ids away, "0" is 5.
const ARC: &str = r#"{"id": "a", "question": {"stem": "pick", "choices": [{"text": "1", "label": "A"}, {"text": "5", "label": "B"}, {"text": "0", "label": "C"}]}, "answerKey": "B"}
{"id": "b", "question": {"stem": "pick", "choices": [{"text": "5", "label": "A"}, {"text": "1", "label": "B"}]}, "answerKey": "B"}
{"id": "c", "question": {"stem": "pick", "choices": [{"text": "0", "label": "A"}, {"text": "9", "label": "B"}, {"text": "1", "label": "C"}]}, "answerKey": "A"}
"#;

#[test]
fn a_multiple_choice_task_scores_the_mocks_picks_with_paired_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("data"), "arc/ARC-Easy-Test.jsonl", ARC);
    let r = run(tmp.path(), "mock:t", "mock:s:sharpness=2", "arc_easy", &[]);
    let res = r.checked_results();
    let t = &res["tasks"]["arc_easy"];
    // a: "5" is right; b: "5" is picked, "1" is gold; c: "9" and "1" tie and the first
    // wins, "0" is gold. Sharpness scales the distances, not the order.
    for role in ["teacher", "student"] {
        assert_eq!(t[role]["metrics"]["acc"], 1.0 / 3.0, "{role}");
        assert_eq!(t[role]["metrics"]["acc_norm"], 1.0 / 3.0, "{role}");
    }
    assert_eq!(t["primary_metric"], "acc_norm");
    assert_eq!(t["n_examples"], 3);
    assert_eq!(t["retention"], 1.0);
    let c = &t["comparison"];
    assert_eq!(c["top1_agreement"], 1.0);
    assert_eq!(c["mcnemar_p"], 1.0);
    assert_eq!(c["primary_diff"]["estimate"], 0.0);
    // KL between the choice distributions: softmax of -d (teacher) and -2d (student) over
    // each question's distances d from the predicted token.
    let kl = |d: &[f64]| {
        let soft = |s: f64| {
            let e: Vec<f64> = d.iter().map(|x| (-s * x).exp()).collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(|v| v / z).collect::<Vec<_>>()
        };
        let (p, q) = (soft(1.0), soft(2.0));
        p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum::<f64>()
    };
    let want = (kl(&[4.0, 0.0, 5.0]) + kl(&[0.0, 4.0]) + kl(&[5.0, 4.0, 4.0])) / 3.0;
    let got = c["mean_kl"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    let preds = std::fs::read_to_string(r.out.join("predictions/arc_easy.jsonl")).unwrap();
    assert_eq!(preds.lines().count(), 3);
    assert!(r.stdout().contains("### LLM accuracy"), "{}", r.stdout());

    // --limit keeps the first examples; a rerun with another limit is a new cell.
    let r = run(
        tmp.path(),
        "mock:t",
        "mock:s:sharpness=2",
        "arc_easy",
        &["--limit", "1"],
    );
    let res = r.checked_results();
    assert_eq!(res["tasks"]["arc_easy"]["n_examples"], 1);
    assert_eq!(res["tasks"]["arc_easy"]["teacher"]["metrics"]["acc"], 1.0);
    assert_eq!(res["settings"]["limit"], 1);
}

#[test]
fn an_interrupted_multiple_choice_run_keeps_the_finished_teacher_cell() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("data"), "arc/ARC-Easy-Test.jsonl", ARC);
    let first = run(tmp.path(), "mock:t", "mock:s:sharpness=2", "arc_easy", &[]);
    let want = first.checked_results();
    // As if the run had stopped after the teacher's cell: the student's is not on disk.
    std::fs::remove_file(first.out.join("cells/arc_easy.student.json")).unwrap();
    let again = run(tmp.path(), "mock:t", "mock:s:sharpness=2", "arc_easy", &[]);
    let got = again.checked_results();
    let err = again.stderr();
    assert!(
        err.contains("teacher arc_easy: reusing the finished cell"),
        "{err}"
    );
    assert!(err.contains("student arc_easy: 3 examples"), "{err}");
    assert!(!err.contains("teacher arc_easy: 3 examples"), "{err}");
    // The same numbers (speed figures aside, which every run measures anew).
    let (g, w) = (&got["tasks"]["arc_easy"], &want["tasks"]["arc_easy"]);
    for field in ["retention", "comparison", "n_examples"] {
        assert_eq!(g[field], w[field], "{field}");
    }
    for role in ["teacher", "student"] {
        assert_eq!(g[role]["metrics"], w[role]["metrics"], "{role}");
        assert_eq!(g[role]["cache_key"], w[role]["cache_key"], "{role}");
    }
}

#[test]
fn a_multiple_choice_cell_resumes_from_its_saved_progress() {
    // A long cell (MMLU takes an hour) saves its answers every minute in
    // cells/<task>.<role>.partial.json; a rerun with the same settings continues after them.
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("data"), "arc/ARC-Easy-Test.jsonl", ARC);
    let first = run(tmp.path(), "mock:t", "mock:s:sharpness=2", "arc_easy", &[]);
    let done = first.checked_results();
    let cell: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(first.out.join("cells/arc_easy.student.json")).unwrap(),
    )
    .unwrap();
    // As if the student had been stopped after two examples, the first answered otherwise
    // than the mock would (so that its use shows): its progress file and no cell.
    let mut answers = cell["answers"].as_array().unwrap()[..2].to_vec();
    answers[0]["logprobs"] = serde_json::json!([-1.0, -9.0, -9.0]);
    let progress = serde_json::json!({
        "cache_key": cell["cell"]["cache_key"],
        "answers": answers,
        "latencies_ms": [5.0, 6.0],
        "seconds": 0.011,
        "energy_j": 0.5,
        "peak_rss_bytes": 1000.0,
        "elapsed_s": 30.0,
    });
    std::fs::remove_file(first.out.join("cells/arc_easy.student.json")).unwrap();
    let partial = first.out.join("cells/arc_easy.student.partial.json");
    std::fs::write(&partial, progress.to_string()).unwrap();
    let again = run(tmp.path(), "mock:t", "mock:s:sharpness=2", "arc_easy", &[]);
    let got = again.checked_results();
    let err = again.stderr();
    assert!(
        err.contains("student arc_easy: resuming after 2/3 examples"),
        "{err}"
    );
    let s = &got["tasks"]["arc_easy"]["student"];
    // Question a (gold "5", choice 1) is now answered "1": one right answer fewer.
    assert_eq!(s["metrics"]["acc"], 0.0);
    assert_eq!(
        done["tasks"]["arc_easy"]["student"]["metrics"]["acc"],
        1.0 / 3.0
    );
    let p = &s["profile"];
    let samples = p["latency_samples_ms"].as_array().unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(
        (samples[0].as_f64(), samples[1].as_f64()),
        (Some(5.0), Some(6.0))
    );
    assert!(s["elapsed_s"].as_f64().unwrap() >= 30.0);
    assert!(p["batch1_pass_s"].as_f64().unwrap() >= 0.011);
    assert!(s["scored_by"]
        .as_str()
        .unwrap()
        .starts_with("batch-1 pass, resumed from a checkpoint after 2 of 3 examples"));
    assert!(!partial.exists(), "the progress file outlived its cell");

    // Progress saved under other settings is not used.
    std::fs::remove_file(again.out.join("cells/arc_easy.student.json")).unwrap();
    let mut other = progress.clone();
    other["cache_key"] = serde_json::json!("another model");
    std::fs::write(&partial, other.to_string()).unwrap();
    let third = run(tmp.path(), "mock:t", "mock:s:sharpness=2", "arc_easy", &[]);
    let res = third.checked_results();
    assert!(!third.stderr().contains("resuming"), "{}", third.stderr());
    assert_eq!(
        res["tasks"]["arc_easy"]["student"]["metrics"],
        done["tasks"]["arc_easy"]["student"]["metrics"]
    );
}

#[test]
fn a_run_stopped_inside_a_multiple_choice_cell_saves_its_progress_and_resumes() {
    // Saving after every example (HARNESS_CHECKPOINT_S=0), the mocks stop answering after
    // four requests: the teacher's three examples (and a warm-up) finish, the student's do
    // not. The rerun scores only what is left and gives the uninterrupted numbers.
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("data"), "arc/ARC-Easy-Test.jsonl", ARC);
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    let args = [
        "run",
        "--quick",
        "--teacher",
        "mock:t",
        "--student",
        "mock:s:sharpness=2",
        "--task",
        "arc_easy",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = harness(
        &args,
        &[
            ("HARNESS_CHECKPOINT_S", "0"),
            ("HARNESS_MOCK_FAIL_AFTER", "2"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("HARNESS_MOCK_FAIL_AFTER"), "{err}");
    // Each mock process counts its own requests: the teacher (warm-up + 1 example) stops in
    // its second example, having saved one answer.
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("cells/arc_easy.teacher.partial.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["answers"].as_array().unwrap().len(), 1);
    assert_eq!(saved["latencies_ms"].as_array().unwrap().len(), 1);
    let again = harness(&args, &[("HARNESS_CHECKPOINT_S", "0")]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let err = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(
        err.contains("teacher arc_easy: resuming after 1/3 examples"),
        "{err}"
    );
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let other = tempfile::tempdir().unwrap();
    write(&other.path().join("data"), "arc/ARC-Easy-Test.jsonl", ARC);
    let want = run(
        other.path(),
        "mock:t",
        "mock:s:sharpness=2",
        "arc_easy",
        &[],
    )
    .checked_results();
    for role in ["teacher", "student"] {
        assert_eq!(
            got["tasks"]["arc_easy"][role]["metrics"], want["tasks"]["arc_easy"][role]["metrics"],
            "{role}"
        );
    }
    assert!(!out.join("cells/arc_easy.teacher.partial.json").exists());
}

#[test]
fn few_shot_on_a_task_without_a_few_shot_split_and_a_zero_limit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("data"), "arc/ARC-Easy-Test.jsonl", ARC);
    let r = run(
        tmp.path(),
        "mock:t",
        "mock:s",
        "arc_easy",
        &["--num-fewshot", "2"],
    );
    assert_eq!(r.output.status.code(), Some(2));
    assert!(
        r.stderr().contains("arc_easy has no few-shot split"),
        "{}",
        r.stderr()
    );
    let r = run(
        tmp.path(),
        "mock:t",
        "mock:s",
        "arc_easy",
        &["--limit", "0"],
    );
    assert_eq!(r.output.status.code(), Some(2));
    assert!(
        r.stderr().contains("--limit must be at least 1"),
        "{}",
        r.stderr()
    );
}
