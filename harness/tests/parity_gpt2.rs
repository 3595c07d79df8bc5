//! GPT-2 parity: every position's logits of a right-padded batch match transformers'
//! `GPT2LMHeadModel` within 1e-4 (f32), in one padded batch and one sequence at a time.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use harness::models::gpt2::{Gpt2, Gpt2Config};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
}

fn load() -> (Gpt2, Expected) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny");
    let cfg: Gpt2Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let model = Gpt2::load(vb, &cfg).unwrap();
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (model, expected)
}

fn max_diff(model: &Gpt2, batch: &[&Vec<u32>], want: &[&Vec<Vec<f32>>]) -> f32 {
    let width = batch.iter().map(|r| r.len()).max().unwrap();
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in batch {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(0, width - row.len())),
        );
        mask.extend(
            std::iter::repeat_n(1u32, row.len()).chain(std::iter::repeat_n(0, width - row.len())),
        );
    }
    let ids = Tensor::from_vec(ids, (batch.len(), width), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(mask, (batch.len(), width), &Device::Cpu).unwrap();
    let got = model
        .forward(&ids, &mask)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let mut diff = 0f32;
    for (seq, (g, w)) in got.iter().zip(want).enumerate() {
        for (pos, wv) in w.iter().enumerate() {
            assert_eq!(g[pos].len(), wv.len(), "vocab width");
            for (a, b) in g[pos].iter().zip(wv) {
                diff = diff.max((a - b).abs());
            }
        }
        assert!(seq < batch.len());
    }
    diff
}

#[test]
fn gpt2_logits_match_transformers_in_a_padded_batch_and_one_by_one() {
    let (model, exp) = load();
    let all: Vec<&Vec<u32>> = exp.input_ids.iter().collect();
    let want: Vec<&Vec<Vec<f32>>> = exp.logits.iter().collect();
    let d = max_diff(&model, &all, &want);
    assert!(d <= 1e-4, "padded batch: max |diff| = {d:e}");
    for (ids, w) in all.iter().zip(&want) {
        let d = max_diff(&model, &[*ids], &[*w]);
        assert!(d <= 1e-4, "single sequence: max |diff| = {d:e}");
    }
}
