//! End-to-end tests of `harness run` with causal language models (the tiny GPT-2 and Llama
//! fixtures, and the same Llama as a GGUF file): perplexity, generation, token-level fidelity,
//! quantized students, and the bad inputs particular to them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{fixture, Run};

fn harness(args: &[&str]) -> std::process::Output {
    common::harness(args, &[])
}

/// A WikiText-like raw file made of words the fixtures' word-level tokenizers know.
fn wiki_dir(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("wikitext-2")).unwrap();
    let mut text = String::new();
    for i in 0..12 {
        text += &format!(
            " = The {} season = \n The city was known for its school and the university , which was made in the first years of the national game . {}\n",
            ["first", "new", "later"][i % 3],
            "It was one of the most known in the world and then it had two more . ".repeat(1 + i % 2)
        );
    }
    std::fs::write(data.join("wikitext-2/wiki.test.raw"), text).unwrap();
    data
}

fn lm_run(tmp: &Path, out: &str, models: &[&str], tasks: &str, extra: &[&str]) -> Run {
    let data = wiki_dir(tmp);
    let out = tmp.join(out);
    let mut args = vec!["run", "--quick"];
    args.extend_from_slice(models);
    args.extend_from_slice(&[
        "--task",
        tasks,
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--context-length",
        "24",
        "--stride",
        "12",
        "--max-new-tokens",
        "6",
    ]);
    args.extend_from_slice(extra);
    let output = harness(&args);
    Run { out, output }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn llama_from_safetensors_against_the_same_weights_from_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = fixture("llama-tiny");
    let student = fixture("llama-tiny/model-f32.gguf");
    let r = lm_run(
        tmp.path(),
        "out",
        &["--teacher", &teacher, "--student", &student],
        "wikitext2,generate",
        &[],
    );
    let res = r.checked_results();

    let w = &res["tasks"]["wikitext2"];
    assert_eq!(w["mode"], "log_likelihood");
    assert_eq!(w["lower_is_better"], true);
    let (t, s) = (&w["teacher"], &w["student"]);
    assert_eq!(s["checkpoint"]["quantization"], "f32 (gguf)");
    // Same weights through two loaders (transformers' layout and llama.cpp's permuted Q/K with
    // interleaved RoPE): the same perplexity, no divergence, the same top-1 everywhere.
    let (pt, ps) = (
        f(&t["metrics"]["perplexity"]),
        f(&s["metrics"]["perplexity"]),
    );
    assert!((pt / ps - 1.0).abs() < 1e-5, "{pt} vs {ps}");
    assert!(pt > 1.0 && pt < 101.0, "a random 101-token model: {pt}");
    let fid = &w["fidelity"];
    assert_eq!(fid["same_tokenizer"], true);
    assert!(f(&fid["kl"]).abs() < 1e-6, "{fid}");
    assert_eq!(f(&fid["top1_agreement"]), 1.0);
    // Word perplexity and bits per byte are the same NLL over words and bytes.
    let tokens = f(&t["metrics"]["tokens_scored"]);
    let words = f(&t["metrics"]["words"]);
    let nll = pt.ln() * tokens;
    assert!((f(&t["metrics"]["word_perplexity"]) - (nll / words).exp()).abs() < 1e-6);
    assert_eq!(w["n_examples"].as_u64().unwrap() as f64, tokens);
    assert!((f(&w["retention"]) - pt / ps).abs() < 1e-12);
    // Overlapping windows score every token but the first.
    let (ids_len, context) = (tokens + 1.0, 24.0);
    assert!(ids_len > context, "the text spans several windows");
    assert_eq!(res["settings"]["lm"]["context_length"], 24);

    let g = &res["tasks"]["generate"];
    assert_eq!(g["mode"], "generate");
    assert!(g["retention"].is_null());
    for role in ["teacher", "student"] {
        let p = &g[role]["profile"];
        assert!(f(&p["ttft_ms"]) > 0.0);
        assert!(f(&p["decode_tokens_per_s"]) > 0.0);
        assert_eq!(p["batch1_examples"], 8);
        assert!(f(&g[role]["metrics"]["new_tokens_mean"]) <= 6.0);
    }
    assert_eq!(f(&g["fidelity"]["greedy_exact_match"]), 1.0);
    assert_eq!(f(&g["fidelity"]["greedy_token_match"]), 1.0);
    let preds = std::fs::read_to_string(r.out.join("predictions/generate.jsonl")).unwrap();
    let lines: Vec<Value> = preds
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0]["teacher"], lines[0]["student"]);
    // No GLUE task: no macro score.
    assert!(res["macro_score"].is_null());
    let stdout = String::from_utf8_lossy(&r.output.stdout);
    assert!(stdout.contains("### Language modelling"), "{stdout}");
    assert!(stdout.contains("KL(t\\|\\|s)"), "{stdout}");

    // A rerun with the same settings reuses every cell.
    let again = lm_run(
        tmp.path(),
        "out",
        &["--teacher", &teacher, "--student", &student],
        "wikitext2,generate",
        &[],
    );
    assert!(again.output.status.success(), "{}", again.stderr());
    assert!(
        again
            .stderr()
            .contains("wikitext2: reusing the finished cells"),
        "{}",
        again.stderr()
    );
    assert!(!again.stderr().contains("loaded "), "{}", again.stderr());
    assert_eq!(
        again.results()["tasks"]["wikitext2"]["teacher"]["metrics"],
        t["metrics"]
    );
}

#[test]
fn student_quantize_makes_a_smaller_gpt2_student_that_stays_close() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = fixture("gpt2-tiny");
    let r = lm_run(
        tmp.path(),
        "out",
        &["--teacher", &teacher, "--student-quantize", "q8_0"],
        "wikitext2",
        &[],
    );
    let res = r.checked_results();
    assert!(res["student"]["id"].as_str().unwrap().ends_with("(q8_0)"));
    let w = &res["tasks"]["wikitext2"];
    assert_eq!(
        w["student"]["checkpoint"]["quantization"],
        "q8_0 (quantized at load)"
    );
    assert!(w["teacher"]["checkpoint"]["quantization"].is_null());
    assert_eq!(f(&w["size_ratio"]), 1.0, "same parameters");
    let bytes = f(&w["weight_bytes_ratio"]);
    assert!(bytes < 1.0 && bytes > 0.25, "{bytes}");
    let kl = f(&w["fidelity"]["kl"]);
    assert!(
        kl > 0.0 && kl < 0.01,
        "q8_0 changes the outputs a little: {kl}"
    );
    let ret = f(&w["retention"]);
    assert!((ret - 1.0).abs() < 0.05, "{ret}");
}

#[test]
fn limit_scores_the_first_articles_of_wikitext() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt2 = fixture("gpt2-tiny");
    let models = ["--teacher", &gpt2, "--student", &gpt2];
    let r = lm_run(tmp.path(), "out", &models, "wikitext2", &["--limit", "2"]);
    let res = r.checked_results();
    // The first two of wiki_dir's twelve articles: the text up to the third heading.
    let text = std::fs::read_to_string(tmp.path().join("data/wikitext-2/wiki.test.raw")).unwrap();
    let third = text.match_indices(" = The ").nth(2).unwrap().0;
    let words = text[..third].split_whitespace().count() as f64;
    assert!(words * 4.0 < text.split_whitespace().count() as f64);
    let m = &res["tasks"]["wikitext2"]["teacher"]["metrics"];
    assert_eq!(f(&m["words"]), words, "{m}");
    assert_eq!(res["settings"]["limit"], 2);
}

#[test]
fn student_quantize_works_on_encoders_too() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("glue");
    std::fs::create_dir_all(data.join("STS-B")).unwrap();
    let mut sts = String::from(
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n",
    );
    let pairs = [
        ("a man is dancing.", "a man wearing a hat is dancing.", 4.2),
        (
            "a child is riding a horse.",
            "a child is riding a horse.",
            5.0,
        ),
        (
            "a woman is slicing an onion.",
            "a man is playing a guitar.",
            0.4,
        ),
        ("the cat sat on the mat.", "a cat is sitting on a mat.", 4.6),
        (
            "a dog runs in the park.",
            "the stock market fell today.",
            0.0,
        ),
        (
            "two men are playing chess.",
            "two people play a board game.",
            3.4,
        ),
    ];
    for (i, (a, b, s)) in pairs.iter().enumerate() {
        sts += &format!("{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{s}\n");
    }
    std::fs::write(data.join("STS-B/dev.tsv"), sts).unwrap();
    let out = tmp.path().join("out");
    let teacher = fixture("bert-encoder-tiny");
    let o = harness(&[
        "run",
        "--quick",
        "--teacher",
        &teacher,
        "--student-quantize",
        "q8_0",
        "--task",
        "stsb",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let res: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let t = &res["tasks"]["stsb"];
    assert_eq!(t["mode"], "cosine");
    assert_eq!(
        t["student"]["checkpoint"]["quantization"],
        "q8_0 (quantized at load)"
    );
    assert!(f(&t["weight_bytes_ratio"]) < 1.0);
    assert!(t["retention"].is_number());
    assert!(t["speedup"].is_number());
    // The teacher's cell is the f32 model, not the quantized one.
    assert!(t["teacher"]["checkpoint"]["quantization"].is_null());
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn fails_with(args: &[&str], needle: &str) {
    let o = harness(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

#[test]
fn bad_language_modelling_inputs_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = wiki_dir(tmp.path());
    let data = data.to_str().unwrap();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    let gpt2 = fixture("gpt2-tiny");
    let bert = fixture("bert-encoder-tiny");
    let base = |teacher: &str, student: &str, task: &str| {
        vec![
            "run".to_string(),
            "--teacher".into(),
            teacher.into(),
            "--student".into(),
            student.into(),
            "--task".into(),
            task.into(),
            "--data-dir".into(),
            data.into(),
            "--out".into(),
            out.into(),
        ]
    };
    let mut args = base(&gpt2, &gpt2, "wikitext2");
    args.extend(["--student-quantize".into(), "q3".into()]);
    fails_with(&as_refs(&args), "unknown quantization 'q3'");
    fails_with(
        &as_refs(&base(&gpt2, &gpt2, "sst2")),
        "is a causal language model; sst2 needs an encoder",
    );
    fails_with(
        &as_refs(&base(&bert, &bert, "wikitext2")),
        "is not a causal language model",
    );
    fails_with(
        &as_refs(&base(&gpt2, &gpt2, "wikitext103")),
        "wikitext-103/wiki.test.raw",
    );
    let mut args = base(&gpt2, &gpt2, "wikitext2");
    args.extend(["--stride".into(), "2000".into()]);
    fails_with(
        &as_refs(&args),
        "--stride must be between 1 and --context-length",
    );
    // GPT-2's positions end at 64: a longer window is refused with what to change.
    let mut args = base(&gpt2, &gpt2, "generate");
    args.extend(["--max-new-tokens".into(), "100".into()]);
    fails_with(&as_refs(&args), "lower --max-new-tokens");
    fails_with(
        &as_refs(&base(&gpt2, &gpt2, "wikitext3")),
        "did you mean 'wikitext2'",
    );
    assert!(!Path::new(out).join("results.json").exists());
}

#[test]
fn wikitext_comes_from_the_hub_parquet_file_without_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    // The dataset cache layout: datasets--Salesforce--wikitext/{refs/main, snapshots/<commit>/...}
    common::fake_hub_snapshot(
        &home,
        "datasets",
        "Salesforce/wikitext",
        &fixture("hub-wikitext"),
    );
    let out = tmp.path().join("out");
    let model = fixture("gpt2-tiny");
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "run",
            "--quick",
            "--teacher",
            &model,
            "--student",
            &model,
            "--task",
            "wikitext2",
            "--context-length",
            "16",
            "--stride",
            "8",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HARNESS_HUB_RETRIES", "0")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.to_str().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let res: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let w = &res["tasks"]["wikitext2"];
    // The rows are joined with blank lines as in the Hugging Face perplexity guide; the words
    // are those of the fixture's lines.
    assert_eq!(f(&w["teacher"]["metrics"]["words"]), 42.0);
    assert_eq!(res["settings"]["data_source"], "hub");
    assert_eq!(f(&w["fidelity"]["kl"]), 0.0);
}

#[test]
fn different_tokenizers_compare_text_level_figures_only() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = fixture("llama-tiny");
    let student = fixture("gpt2-tiny");
    let r = lm_run(
        tmp.path(),
        "out",
        &["--teacher", &teacher, "--student", &student],
        "wikitext2,generate",
        &[],
    );
    let res = r.checked_results();
    let w = &res["tasks"]["wikitext2"];
    let fid = &w["fidelity"];
    assert_eq!(fid["same_tokenizer"], false);
    assert!(fid["kl"].is_null() && fid["top1_agreement"].is_null());
    assert!(fid["note"].as_str().unwrap().contains("tokenizers differ"));
    // Both models scored the same text: the same words and bytes.
    assert_eq!(
        w["teacher"]["metrics"]["words"],
        w["student"]["metrics"]["words"]
    );
    assert!(f(&w["student"]["metrics"]["bits_per_byte"]) > 0.0);
    let g = &res["tasks"]["generate"]["fidelity"];
    assert_eq!(g["same_tokenizer"], false);
    assert!(g["greedy_token_match"].is_null());
    assert!(g["greedy_exact_match"].is_number());
}

#[test]
fn decoder_aliases_load_from_a_hub_snapshot_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    // gpt2 and distilgpt2 resolve to these Hub ids (harness/aliases.toml).
    for repo in ["openai-community/gpt2", "distilbert/distilgpt2"] {
        common::fake_hub_snapshot(&home, "models", repo, &fixture("gpt2-tiny"));
    }
    let data = wiki_dir(tmp.path());
    let out = tmp.path().join("out");
    let res = common::run_results(
        &[
            "run",
            "--quick",
            "--teacher",
            "gpt2",
            "--student",
            "distilgpt2",
            "--task",
            "wikitext2",
            "--context-length",
            "16",
            "--stride",
            "8",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
        &out,
    );
    assert_eq!(res["teacher"]["source"], "alias");
    let ck = &res["tasks"]["wikitext2"]["student"]["checkpoint"];
    assert_eq!(ck["architecture"], "gpt2");
    assert!(
        ck["resolved"]
            .as_str()
            .unwrap()
            .starts_with("distilbert/distilgpt2@"),
        "{ck}"
    );
}

#[test]
fn a_gguf_student_with_f32_tensors_can_be_quantized() {
    // GGUF files in block formats are refused by --student-quantize (unit test in
    // models/linear.rs); this fixture's GGUF holds f32 tensors, which are quantized.
    let tmp = tempfile::tempdir().unwrap();
    let teacher = fixture("llama-tiny");
    let student = fixture("llama-tiny/model-f32.gguf");
    let r = lm_run(
        tmp.path(),
        "out",
        &[
            "--teacher",
            &teacher,
            "--student",
            &student,
            "--student-quantize",
            "q8_0",
        ],
        "wikitext2",
        &[],
    );
    assert!(r.output.status.success(), "{}", r.stderr());
    let w = &r.results()["tasks"]["wikitext2"];
    assert_eq!(
        w["student"]["checkpoint"]["quantization"],
        "q8_0 (quantized at load)"
    );
}

#[test]
fn a_gguf_file_of_a_hub_repository_loads_from_the_snapshot_cache_offline() {
    // A GGUF repository as the Hub cache stores it (refs/main, snapshots/<commit>/...; here
    // the tiny Llama's folder, whose model-f32.gguf is the file picked). The teacher names
    // the file with --gguf-file, the student with its own `:FILE` spelling.
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    let repo = "someone/llama-tiny-GGUF";
    common::fake_hub_snapshot(&home, "models", repo, &fixture("llama-tiny"));
    let data = wiki_dir(tmp.path());
    let run = |out: &str, extra: &[&str]| {
        let out = tmp.path().join(out);
        let mut args = vec![
            "run",
            "--quick",
            "--task",
            "wikitext2",
            "--context-length",
            "16",
            "--stride",
            "8",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = common::harness(
            &args,
            &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
        );
        (o, out)
    };
    let student = format!("{repo}:model-f32.gguf");
    let (o, out) = run(
        "out",
        &[
            "--teacher",
            repo,
            "--gguf-file",
            "model-f32.gguf",
            "--student",
            &student,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let res: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let w = &res["tasks"]["wikitext2"];
    for role in ["teacher", "student"] {
        let ck = &w[role]["checkpoint"];
        assert_eq!(ck["id"], format!("{repo}:model-f32.gguf"), "{ck}");
        assert_eq!(
            ck["resolved"],
            format!("{repo}@0123456789abcdef0123456789abcdef01234567:model-f32.gguf")
        );
        assert_eq!(ck["quantization"], "f32 (gguf)");
        assert_eq!(ck["architecture"], "llama");
    }
    // The same file twice: the same perplexity.
    assert_eq!(
        w["teacher"]["metrics"]["perplexity"],
        w["student"]["metrics"]["perplexity"]
    );

    // A file the cache does not hold: what to do about it, and a non-zero exit.
    let (o, _) = run(
        "missing",
        &[
            "--teacher",
            repo,
            "--student",
            &format!("{repo}:model-Q8_0.gguf"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("HF_HUB_OFFLINE is set and model-Q8_0.gguf of 'someone/llama-tiny-GGUF' (revision main) is not in the Hub cache")
            && err.contains("huggingface-cli download someone/llama-tiny-GGUF model-Q8_0.gguf"),
        "{err}"
    );
    // Online, a Hub that cannot be reached says so, and how to go on without it.
    let o = common::harness(
        &[
            "run",
            "--quick",
            "--task",
            "wikitext2",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            tmp.path().join("online").to_str().unwrap(),
            "--teacher",
            &format!("{repo}:model-Q8_0.gguf"),
            "--student",
            &student,
        ],
        &[
            ("HF_HOME", home.to_str().unwrap()),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            ("HARNESS_HUB_RETRIES", "0"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach the Hugging Face Hub at http://127.0.0.1:9 to fetch model-Q8_0.gguf of 'someone/llama-tiny-GGUF'"),
        "{err}"
    );
    // A GGUF file for an encoder task is refused before anything loads.
    let (o, _) = run(
        "encoder",
        &[
            "--teacher",
            &student,
            "--student",
            &student,
            "--task",
            "stsb",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model-f32.gguf is a GGUF file (a causal language model)"),
        "{err}"
    );
}

#[test]
fn token_fidelity_compares_models_whose_output_layers_are_padded_differently() {
    // The tiny Gemma 2 has 101 logits and the tiny Qwen3 103, with the same tokenizer (as
    // Qwen2.5 0.5B and 7B differ in padding, not vocabulary): KL and top-1 agreement are
    // taken over the 101 logits both have, and the note says so. New families, end to end.
    let tmp = tempfile::tempdir().unwrap();
    let (teacher, student) = (fixture("gemma2-tiny"), fixture("qwen3-tiny"));
    let r = lm_run(
        tmp.path(),
        "out",
        &["--teacher", &teacher, "--student", &student],
        "wikitext2",
        &[],
    );
    let res = r.checked_results();
    let w = &res["tasks"]["wikitext2"];
    assert_eq!(w["teacher"]["checkpoint"]["architecture"], "gemma2");
    assert_eq!(w["student"]["checkpoint"]["architecture"], "qwen3");
    let fid = &w["fidelity"];
    assert_eq!(fid["same_tokenizer"], true, "{fid}");
    assert!(f(&fid["kl"]) > 0.0 && f(&fid["kl"]).is_finite(), "{fid}");
    let note = fid["note"].as_str().unwrap();
    assert!(
        note.ends_with(
            "output layers padded to different widths, compared over the first 101 logits"
        ),
        "{note}"
    );
}

/// A copy of fixture `name` with its weights split over two safetensors shards and an index,
/// as the Hub stores checkpoints of more than a few GB.
fn sharded_copy(name: &str, dir: &Path) -> PathBuf {
    let src = PathBuf::from(fixture(name));
    let dst = dir.join(format!("{name}-sharded"));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let half = names.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let shard: std::collections::HashMap<String, candle_core::Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dst.join(&file)).unwrap();
        for n in part.iter() {
            map.insert((*n).clone(), Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(
        dst.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    dst
}

#[test]
fn a_sharded_checkpoint_loads_from_a_hub_snapshot_and_scores_as_the_single_file() {
    // Llama 3.1 8B, Qwen2.5 7B and Phi-4-mini are sharded on the Hub: the index's shards are
    // read together, offline from the cache, and give the single file's numbers exactly.
    let tmp = tempfile::tempdir().unwrap();
    let sharded = sharded_copy("qwen3-tiny", tmp.path());
    let home = tmp.path().join("hf-home");
    common::fake_hub_snapshot(
        &home,
        "models",
        "someone/qwen3-sharded",
        sharded.to_str().unwrap(),
    );
    let data = wiki_dir(tmp.path());
    let run = |out: &str, teacher: &str, envs: &[(&str, &str)]| {
        let out = tmp.path().join(out);
        common::run_results(
            &[
                "run",
                "--quick",
                "--teacher",
                teacher,
                "--student",
                &fixture("qwen3-tiny"),
                "--task",
                "wikitext2",
                "--context-length",
                "16",
                "--stride",
                "8",
                "--data-dir",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            envs,
            &out,
        )
    };
    let hub = run(
        "hub",
        "someone/qwen3-sharded",
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home.to_str().unwrap())],
    );
    let single = run("single", &fixture("qwen3-tiny"), &[]);
    let (a, b) = (
        &hub["tasks"]["wikitext2"]["teacher"],
        &single["tasks"]["wikitext2"]["teacher"],
    );
    assert_eq!(a["metrics"], b["metrics"]);
    assert_eq!(a["checkpoint"]["parameters"], b["checkpoint"]["parameters"]);
    assert!(a["checkpoint"]["resolved"]
        .as_str()
        .unwrap()
        .starts_with("someone/qwen3-sharded@"));
    // Its size on disk is both shards'.
    let shards: u64 = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    .iter()
    .map(|n| std::fs::metadata(sharded.join(n)).unwrap().len())
    .sum();
    assert_eq!(a["checkpoint"]["bytes_on_disk"], shards);

    // A shard missing from the folder is named, and nothing runs.
    std::fs::remove_file(sharded.join("model-00002-of-00002.safetensors")).unwrap();
    let o = harness(&[
        "run",
        "--quick",
        "--teacher",
        sharded.to_str().unwrap(),
        "--student",
        &fixture("qwen3-tiny"),
        "--task",
        "wikitext2",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 of its 2 shards are missing (model-00002-of-00002.safetensors); the download is incomplete"),
        "{err}"
    );
}
