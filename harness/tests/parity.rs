//! Parity with the reference implementation: tiny random checkpoints made by Python
//! `transformers` (scripts/make-parity-fixtures.py) are loaded through the same code path as a
//! real run, and their token ids and outputs must match the reference's: ids exactly, logits and
//! embeddings within 1e-4 (f32). Each fixture is also run at several batch sizes, so padding
//! and masking are covered.

use std::path::PathBuf;

use candle_core::Device;
use harness::models::{Backend, EncoderBackend, LoadOptions, TextInput};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Input {
    text_a: String,
    text_b: Option<String>,
}

#[derive(Deserialize)]
struct Expected {
    inputs: Vec<Input>,
    input_ids: Vec<Vec<u32>>,
    logits: Option<Vec<Vec<f32>>>,
    embeddings: Option<Vec<Vec<f32>>>,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn check(name: &str, architecture: &str) {
    let dir = fixture(name);
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let opts = LoadOptions {
        device: Device::Cpu,
        max_length: None,
    };
    let model = EncoderBackend::load(name, &dir, &opts).unwrap();
    assert_eq!(model.info().architecture, architecture);
    let inputs: Vec<TextInput> = expected
        .inputs
        .iter()
        .map(|i| TextInput {
            a: &i.text_a,
            b: i.text_b.as_deref(),
        })
        .collect();
    for (input, ids) in inputs.iter().zip(&expected.input_ids) {
        assert_eq!(
            &model.token_ids(input).unwrap(),
            ids,
            "{name}: token ids of {input:?}"
        );
    }
    let backend: &dyn Backend = &model;
    for batch_size in [1, 2, 32] {
        let (got, want) = match (&expected.logits, &expected.embeddings) {
            (Some(l), _) => (backend.classify(name, &inputs, batch_size).unwrap(), l),
            (None, Some(e)) => (backend.embed(name, &inputs, batch_size).unwrap(), e),
            _ => panic!("{name}: expected.json has no outputs"),
        };
        assert_eq!(got.rows.len(), want.len());
        let mut max_diff = 0f32;
        for (g, w) in got.rows.iter().zip(want) {
            assert_eq!(g.len(), w.len(), "{name}: output width");
            for (a, b) in g.iter().zip(w) {
                max_diff = max_diff.max((a - b).abs());
            }
        }
        assert!(
            max_diff <= TOLERANCE,
            "{name} at batch size {batch_size}: max |diff| = {max_diff:e} > {TOLERANCE:e}"
        );
    }
}

#[test]
fn bert_sequence_classification_matches_transformers() {
    check("bert-sst2-tiny", "bert");
}

#[test]
fn bert_regression_head_matches_transformers() {
    check("bert-stsb-tiny", "bert");
}

#[test]
fn bert_sentence_encoder_matches_transformers_and_ignores_file_padding() {
    check("bert-encoder-tiny", "bert");
}

#[test]
fn distilbert_from_pytorch_bin_and_vocab_txt_matches_transformers() {
    check("distilbert-mnli-tiny", "distilbert");
}

#[test]
fn distilbert_from_sharded_pytorch_bin_matches_transformers() {
    // The same weights cut into three pickle shards with pytorch_model.bin.index.json.
    check("distilbert-mnli-tiny-sharded", "distilbert");
    let opts = LoadOptions {
        device: Device::Cpu,
        max_length: None,
    };
    let whole = EncoderBackend::load("a", &fixture("distilbert-mnli-tiny"), &opts).unwrap();
    let sharded =
        EncoderBackend::load("b", &fixture("distilbert-mnli-tiny-sharded"), &opts).unwrap();
    // Parameters are counted over every shard.
    assert_eq!(sharded.info().parameters, whole.info().parameters);
}

#[test]
fn mpnet_with_relative_position_bias_matches_transformers() {
    check("mpnet-encoder-tiny", "mpnet");
}

#[test]
fn parameters_are_counted_from_the_weights() {
    let opts = LoadOptions {
        device: Device::Cpu,
        max_length: None,
    };
    let m = EncoderBackend::load("x", &fixture("bert-sst2-tiny"), &opts).unwrap();
    // Counted independently from the architecture: embeddings, two layers, pooler, classifier.
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("bert-sst2-tiny/config.json")).unwrap(),
    )
    .unwrap();
    let v = cfg["vocab_size"].as_u64().unwrap();
    let (h, i, p, l) = (32u64, 48u64, 64u64, 2u64);
    let embeddings = v * h + p * h + 2 * h + 2 * h;
    let layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
    let expected = embeddings + l * layer + (h * h + h) + (2 * h + 2);
    assert_eq!(m.info().parameters, expected);
    assert_eq!(m.head_labels().unwrap(), ["NEGATIVE", "POSITIVE"]);
}

#[test]
fn mpnet_sequence_classification_matches_transformers() {
    check("mpnet-rte-tiny", "mpnet");
}
