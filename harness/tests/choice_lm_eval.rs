//! Multiple-choice scores as lm-evaluation-harness defines them: the tiny GPT-2 fixture's
//! log-likelihood of every choice of an ARC-layout file, read by the `arc_easy` task, against
//! transformers' (scripts/make-choice-fixture.py, lm-eval's `_encode_pair` and
//! `process_results`), within 1e-4 at batch size 1 and 8; and acc, acc_norm, acc_bytes and
//! their standard errors from those log-likelihoods equal to the script's.

use std::path::PathBuf;

use candle_core::Device;
use harness::models::decoder::DecoderBackend;
use harness::models::Backend;
use serde::Deserialize;
use tasks::choice::{self, DocAnswer};
use tasks::generation::tasks::{LmData, LmSource, LmTask, LoadOptions};
use tasks::request::Request;

#[derive(Deserialize)]
struct Expected {
    docs: Vec<DocAnswer>,
    metrics: std::collections::BTreeMap<String, f64>,
}

#[test]
fn arc_scores_match_lm_evaluation_harness_on_the_tiny_gpt2() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join("arc")).unwrap();
    std::fs::copy(
        fixtures.join("choice-lm-eval/ARC-Easy-Test.jsonl"),
        data.path().join("arc/ARC-Easy-Test.jsonl"),
    )
    .unwrap();
    let exp: Expected = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("choice-lm-eval/expected.json")).unwrap(),
    )
    .unwrap();
    let LmData::Choices(set) = choice::ARC_EASY
        .load(&LmSource::Dir(data.path().into()), &LoadOptions::default())
        .unwrap()
    else {
        panic!("arc_easy loads choices")
    };
    assert_eq!(set.docs.len(), exp.docs.len());
    let model = DecoderBackend::load(
        "gpt2-tiny",
        &fixtures.join("gpt2-tiny"),
        &Device::Cpu,
        false,
    )
    .unwrap();
    for batch_size in [1, 8] {
        let answers: Vec<DocAnswer> = set
            .docs
            .iter()
            .map(|d| {
                let lls = model
                    .run(
                        "arc_easy",
                        Request::LogLikelihood {
                            pairs: &d.requests,
                            batch_size,
                        },
                    )
                    .unwrap()
                    .into_loglikelihoods()
                    .unwrap();
                DocAnswer::from_loglikelihoods(&lls)
            })
            .collect();
        for (i, (got, want)) in answers.iter().zip(&exp.docs).enumerate() {
            assert_eq!(got.tokens, want.tokens, "doc {i}: continuation tokens");
            assert_eq!(got.greedy, want.greedy, "doc {i}: greedy");
            for (g, w) in got.logprobs.iter().zip(&want.logprobs) {
                assert!(
                    (g - w).abs() <= 1e-4,
                    "batch {batch_size} doc {i}: {g} vs {w}"
                );
            }
        }
        let m = choice::score(set.scoring, &set.docs, &answers);
        for (k, v) in &exp.metrics {
            assert!((m[k] - v).abs() < 1e-12, "{k}: {} vs {v}", m[k]);
        }
    }
    // The fixture tells the three rules apart: acc 3/8, acc_norm 4/8.
    assert_ne!(exp.metrics["acc"], exp.metrics["acc_norm"]);
}
