//! Decoder parity: every position's logits of a right-padded batch match transformers'
//! `GPT2LMHeadModel` and `LlamaForCausalLM` (grouped-query attention, RoPE) within 1e-4 (f32),
//! in one padded batch and one sequence at a time, and token by token through the KV cache
//! that generation uses; and GPT-2's sliding-window perplexity matches.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use harness::models::gpt2::{Gpt2, Gpt2Config};
use harness::models::llama::{Llama, LlamaConfig};
use harness::models::nn::KvCache;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<Vec<f32>>>,
    /// phi3-longrope-tiny: sequences short enough for longrope's short factors.
    #[serde(default)]
    short: Option<Box<Expected>>,
}

/// A decoder that maps (ids, mask) to logits of every position.
trait Decoder {
    fn logits(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor>;
    fn cached(&self, ids: &Tensor, cache: &mut KvCache) -> candle_core::Result<Tensor>;
}
impl Decoder for Gpt2 {
    fn logits(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(ids, mask)
    }
    fn cached(&self, ids: &Tensor, cache: &mut KvCache) -> candle_core::Result<Tensor> {
        self.forward_cached(ids, cache)
    }
}
impl Decoder for Llama {
    fn logits(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(ids, mask)
    }
    fn cached(&self, ids: &Tensor, cache: &mut KvCache) -> candle_core::Result<Tensor> {
        self.forward_cached(ids, cache)
    }
}

/// Feed each sequence as a 3-token prompt, then one token at a time through the KV cache (as
/// generation does): every position's logits must still match the reference.
fn check_cached(model: &dyn Decoder, exp: &Expected) {
    check_cached_after(model, exp, 3)
}

/// [`check_cached`] with a prompt of `prompt` tokens.
fn check_cached_after(model: &dyn Decoder, exp: &Expected, prompt: usize) {
    for (ids, want) in exp.input_ids.iter().zip(&exp.logits) {
        let mut cache = KvCache::default();
        let mut got: Vec<Vec<f32>> = Vec::new();
        let prompt = prompt.min(ids.len());
        let mut start = 0;
        for end in std::iter::once(prompt).chain(prompt + 1..=ids.len()) {
            let chunk =
                Tensor::from_vec(ids[start..end].to_vec(), (1, end - start), &Device::Cpu).unwrap();
            let l = model.cached(&chunk, &mut cache).unwrap();
            got.extend(l.squeeze(0).unwrap().to_vec2::<f32>().unwrap());
            start = end;
        }
        assert_eq!(cache.len, ids.len());
        assert_eq!(got.len(), ids.len());
        for (g, w) in got.iter().zip(want) {
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() <= 1e-4, "cached step: {a} vs {b}");
            }
        }
    }
}

fn fixture(name: &str) -> (PathBuf, VarBuilder<'static>, Expected) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name);
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (dir, vb, expected)
}

fn load() -> (Gpt2, Expected) {
    let (dir, vb, expected) = fixture("gpt2-tiny");
    let cfg: Gpt2Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    (Gpt2::load(vb, &cfg).unwrap(), expected)
}

fn max_diff(model: &dyn Decoder, batch: &[&Vec<u32>], want: &[&Vec<Vec<f32>>]) -> f32 {
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
    let got = model.logits(&ids, &mask).unwrap().to_vec3::<f32>().unwrap();
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

fn check_batches(model: &dyn Decoder, exp: &Expected) {
    let all: Vec<&Vec<u32>> = exp.input_ids.iter().collect();
    let want: Vec<&Vec<Vec<f32>>> = exp.logits.iter().collect();
    let d = max_diff(model, &all, &want);
    assert!(d <= 1e-4, "padded batch: max |diff| = {d:e}");
    for (ids, w) in all.iter().zip(&want) {
        let d = max_diff(model, &[*ids], &[*w]);
        assert!(d <= 1e-4, "single sequence: max |diff| = {d:e}");
    }
}

#[test]
fn gpt2_logits_match_transformers_in_a_padded_batch_and_one_by_one() {
    let (model, exp) = load();
    check_batches(&model, &exp);
    check_cached(&model, &exp);
}

#[test]
fn llama_logits_match_transformers_in_a_padded_batch_and_one_by_one() {
    let (dir, vb, exp) = fixture("llama-tiny");
    let cfg: LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let model = Llama::load(vb, &cfg).unwrap();
    check_batches(&model, &exp);
    check_cached(&model, &exp);
}

#[test]
fn qwen2_and_mistral_logits_match_transformers_through_the_llama_port() {
    // Qwen2ForCausalLM (biases on q, k, v; tied embeddings), MistralForCausalLM (a sliding
    // window of 4 on every layer under sequences of up to 14) and Qwen2 with
    // use_sliding_window (its second layer slides): every position within 1e-4, in a padded
    // batch, one sequence at a time and through the KV cache; and loaded by model_type as a
    // user's folder is, with no length limit (windows are masked exactly).
    use harness::models::decoder::DecoderBackend;
    use harness::models::Backend;
    for (name, qkv_bias) in [
        ("qwen2-tiny", true),
        ("mistral-tiny", false),
        ("qwen2-window-tiny", true),
    ] {
        let (dir, vb, exp) = fixture(name);
        let mut cfg: LlamaConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        cfg.flavor.qkv_bias = qkv_bias;
        let model = Llama::load(vb.clone(), &cfg).unwrap();
        check_batches(&model, &exp);
        check_cached(&model, &exp);
        if cfg.sliding_window.is_some_and(|w| w < 8) {
            // The window is seen: without it the logits miss.
            let mut open = cfg.clone();
            open.sliding_window = None;
            let all: Vec<&Vec<u32>> = exp.input_ids.iter().collect();
            let want: Vec<&Vec<Vec<f32>>> = exp.logits.iter().collect();
            let d = max_diff(&Llama::load(vb, &open).unwrap(), &all, &want);
            assert!(d > 1e-3, "{name}: the window is not seen ({d})");
        }
        let backend = DecoderBackend::load(name, &dir, &Device::Cpu, false).unwrap();
        let arch = name.trim_end_matches("-tiny").trim_end_matches("-window");
        assert_eq!(backend.info().architecture, arch);
        assert_eq!(Backend::max_positions(&backend), None, "{name}");
        for (ids, want) in exp.input_ids.iter().zip(&exp.logits) {
            let got = backend.window_logits(ids).unwrap();
            for (g, w) in got.iter().zip(want) {
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() <= 1e-4, "{name}: {a} vs {b}");
                }
            }
        }
    }
    // Without its q/k/v biases the Qwen2 port would not match: the test sees them.
    let (dir, vb, exp) = fixture("qwen2-tiny");
    let mut cfg: LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg.flavor.qkv_bias = false;
    let unbiased = Llama::load(vb, &cfg).unwrap();
    let batch: Vec<&Vec<u32>> = exp.input_ids.iter().collect();
    let want: Vec<&Vec<Vec<f32>>> = exp.logits.iter().collect();
    assert!(max_diff(&unbiased, &batch, &want) > 1e-2);
}

#[test]
fn qwen3_phi3_gemma2_and_gemma3_logits_match_transformers_through_the_llama_port() {
    // Qwen3 (q/k norms, head_dim != hidden / heads), Phi-3 (fused qkv and gate_up, RoPE over
    // half of each head), Gemma 2 (scaled embeddings, 1 + w norms around both sublayers,
    // GELU-tanh gating, query_pre_attn_scalar, score and logit softcaps, exact sliding
    // windows of 4 under 13-token sequences) and Gemma 3 (q/k norms, per-layer-type RoPE with
    // linear scaling): every position within 1e-4, in a padded batch, one sequence at a time,
    // token by token through the KV cache, and loaded by model_type as a user's folder is.
    use harness::models::decoder::DecoderBackend;
    use harness::models::llama::Flavor;
    use harness::models::Backend;
    let gemma = Flavor {
        gemma: true,
        ..Flavor::default()
    };
    for (name, arch, flavor) in [
        (
            "qwen3-tiny",
            "qwen3",
            Flavor {
                qk_norm: true,
                ..Flavor::default()
            },
        ),
        (
            "phi3-tiny",
            "phi3",
            Flavor {
                fused_projections: true,
                ..Flavor::default()
            },
        ),
        ("gemma2-tiny", "gemma2", gemma),
        (
            "gemma3-tiny",
            "gemma3_text",
            Flavor {
                qk_norm: true,
                ..gemma
            },
        ),
    ] {
        let (dir, vb, exp) = fixture(name);
        let mut cfg: LlamaConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        cfg.flavor = flavor;
        let model = Llama::load(vb.clone(), &cfg).unwrap();
        check_batches(&model, &exp);
        check_cached(&model, &exp);
        let backend = DecoderBackend::load(name, &dir, &Device::Cpu, false).unwrap();
        assert_eq!(backend.info().architecture, arch);
        assert_eq!(Backend::max_positions(&backend), None, "{name}");
        for (ids, want) in exp.input_ids.iter().zip(&exp.logits) {
            let got = backend.window_logits(ids).unwrap();
            for (g, w) in got.iter().zip(want) {
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() <= 1e-4, "{name}: {a} vs {b}");
                }
            }
        }
        // Each difference is seen: without it, the port would not match.
        let all: Vec<&Vec<u32>> = exp.input_ids.iter().collect();
        let want: Vec<&Vec<Vec<f32>>> = exp.logits.iter().collect();
        let mut plain = cfg.clone();
        match arch {
            "qwen3" => plain.flavor.qk_norm = false,
            "phi3" => {
                plain.rope_parameters = None;
                plain.rope_theta = Some(10000.0);
            }
            "gemma2" => plain.sliding_window = None,
            _ => plain.rope_parameters = None,
        }
        let off = Llama::load(vb, &plain).unwrap();
        let d = max_diff(&off, &all, &want);
        assert!(
            d > 1e-2,
            "{name}: the check does not see the difference ({d})"
        );
    }
}

#[derive(Deserialize)]
struct PerplexityRef {
    ids: Vec<u32>,
    context: usize,
    stride: usize,
    nll_sum: f64,
    tokens_scored: usize,
}

#[test]
fn gpt2_sliding_window_perplexity_matches_transformers() {
    #[derive(Deserialize)]
    struct Doc {
        perplexity: PerplexityRef,
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny");
    let doc: Doc =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let p = doc.perplexity;
    let (model, _) = load();
    let settings = tasks::generation::perplexity::WindowSettings {
        context: p.context,
        stride: p.stride,
    };
    let r = tasks::generation::perplexity::sliding_window_nll(&p.ids, settings, |window| {
        let ids = Tensor::from_vec(window.to_vec(), (1, window.len()), &Device::Cpu)
            .map_err(|e| e.to_string())?;
        let mask = ids.ones_like().map_err(|e| e.to_string())?;
        let logits = model.forward(&ids, &mask).map_err(|e| e.to_string())?;
        logits
            .squeeze(0)
            .and_then(|l| l.to_vec2::<f32>())
            .map_err(|e| e.to_string())
    })
    .unwrap();
    assert_eq!(r.tokens_scored, p.tokens_scored);
    // Summed over 39 tokens in f32 against a float64 reference.
    assert!(
        (r.nll - p.nll_sum).abs() <= 1e-3,
        "nll {} vs {}",
        r.nll,
        p.nll_sum
    );
    let (ours, theirs) = (
        r.token_perplexity(),
        (p.nll_sum / p.tokens_scored as f64).exp(),
    );
    assert!(
        (ours / theirs - 1.0).abs() < 1e-5,
        "perplexity {ours} vs {theirs}"
    );
}

#[test]
fn llama_from_gguf_dequantized_matches_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama-tiny");
    let (model, cfg) =
        harness::models::gguf::load_llama_dequantized(&dir.join("model-f32.gguf"), &Device::Cpu)
            .unwrap();
    assert_eq!(cfg.num_key_value_heads, Some(2));
    assert!(!cfg.tie_word_embeddings);
    let (_, _, exp) = fixture("llama-tiny");
    check_batches(&model, &exp);
    check_cached(&model, &exp);
}

#[test]
fn llama_from_gguf_kept_in_llama_cpp_layout_with_interleaved_rope_matches_transformers() {
    // The quantized loader keeps GGUF's permuted Q/K rows and rotates interleaved pairs; with
    // the fixture's F32 tensors that must give the reference logits too.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama-tiny");
    let (model, _) =
        harness::models::gguf::load_llama_quantized(&dir.join("model-f32.gguf"), &Device::Cpu)
            .unwrap();
    let (_, _, exp) = fixture("llama-tiny");
    check_batches(&model, &exp);
    check_cached(&model, &exp);
}

#[test]
fn loglikelihood_requests_sum_transformers_log_probabilities() {
    // lm-evaluation-harness's loglikelihood on the first fixture sequence, split after 4
    // tokens: our summed log-probability of the last 7 tokens against the same sum taken from
    // transformers' logits (f64 log-softmax), and greedy-ness against their argmax.
    use harness::models::backend::loglikelihood_of_ids;
    use harness::models::decoder::DecoderBackend;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gpt2-tiny");
    let model = DecoderBackend::load("gpt2-tiny", &dir, &Device::Cpu, false).unwrap();
    let (_, _, exp) = fixture("gpt2-tiny");
    let (ids, logits) = (&exp.input_ids[0], &exp.logits[0]);
    for split in [1, 4, ids.len() - 1] {
        let (context, continuation) = ids.split_at(split);
        let got = loglikelihood_of_ids(&model, context, continuation).unwrap();
        let (mut want, mut greedy) = (0f64, true);
        for (pos, &target) in continuation.iter().enumerate() {
            let row = &logits[split + pos - 1];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            want += row[target as usize] as f64 - z;
            let best = (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            greedy &= best == target as usize;
        }
        assert_eq!(got.tokens, continuation.len());
        // Each logit within 1e-4 of the reference: the sum of 7 log-probs within 1e-3.
        assert!(
            (got.logprob - want).abs() <= 1e-3,
            "split {split}: {} vs {want}",
            got.logprob
        );
        assert_eq!(got.is_greedy, greedy, "split {split}");
    }
    let err = loglikelihood_of_ids(&model, &[], &ids[..2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a context and a continuation"), "{err}");
}

#[test]
fn a_shared_context_run_once_scores_as_one_window_per_choice_at_any_batch_size() {
    // Multiple-choice scoring runs the context once through the KV cache and the choices'
    // continuations batched (right-padded) after it. Each choice's log-likelihood must equal
    // the one-window path's (which the test above ties to transformers) within 1e-4, at
    // batch size 1 and 8, for both architectures, for continuations of 1 to 6 tokens.
    use harness::models::backend::loglikelihood_of_ids;
    use harness::models::decoder::DecoderBackend;
    use harness::models::Backend;
    for name in ["gpt2-tiny", "llama-tiny"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        let model = DecoderBackend::load(name, &dir, &Device::Cpu, false).unwrap();
        let (_, _, exp) = fixture(name);
        let ids = &exp.input_ids[0];
        let context = &ids[..3];
        // Continuations of 1 to 6 tokens cut from the fixture's sequences (from the longest
        // one where the others are too short), so that a batch of them needs padding.
        let continuations: Vec<Vec<u32>> = (1..=6)
            .map(|n| {
                let seq = exp
                    .input_ids
                    .iter()
                    .find(|s| s.len() >= n + 3 && s.len() % 2 == n % 2)
                    .unwrap_or(ids);
                seq[3..3 + n].to_vec()
            })
            .collect();
        let want: Vec<f64> = continuations
            .iter()
            .map(|c| loglikelihood_of_ids(&model, context, c).unwrap().logprob)
            .collect();
        for batch in [1, 8] {
            let got = model
                .shared_context_loglikelihoods(context, &continuations, batch)
                .unwrap()
                .expect("decoders run a shared context once");
            assert_eq!(got.len(), continuations.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.tokens, continuations[i].len());
                assert!(
                    (g.logprob - w).abs() <= 1e-4,
                    "{name} batch {batch} choice {i}: {} vs {w}",
                    g.logprob
                );
            }
        }
    }
}

#[test]
fn a_qwen2_gguf_file_loads_and_matches_its_safetensors_twin() {
    // The tiny Qwen2 written as llama.cpp's converter writes Qwen2 (qwen2.* metadata, q/k/v
    // biases, Q/K rows unpermuted): dequantized and kept as stored, every position within
    // 1e-4 of transformers' logits, in a batch and through the KV cache.
    use harness::models::decoder::DecoderBackend;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2-tiny");
    let gguf = dir.join("model-f32.gguf");
    let (_, _, exp) = fixture("qwen2-tiny");
    let (deq, cfg) = harness::models::gguf::load_llama_dequantized(&gguf, &Device::Cpu).unwrap();
    assert!(cfg.flavor.qkv_bias && cfg.tie_word_embeddings);
    check_batches(&deq, &exp);
    check_cached(&deq, &exp);
    let (kept, _) = harness::models::gguf::load_llama_quantized(&gguf, &Device::Cpu).unwrap();
    check_batches(&kept, &exp);
    check_cached(&kept, &exp);
    let backend = DecoderBackend::load("qwen2-gguf", &gguf, &Device::Cpu, false).unwrap();
    assert_eq!(backend.info().architecture, "qwen2");
}

#[test]
fn a_qwen3_gguf_file_loads_and_matches_its_safetensors_twin() {
    // The tiny Qwen3 as llama.cpp's converter writes Qwen3 (qwen3.* metadata with
    // attention.key_length for its 16-wide heads, attn_{q,k}_norm, Q/K rows unpermuted,
    // untied output): dequantized and kept as stored, every position within 1e-4 of
    // transformers' logits, in a batch and through the KV cache.
    use harness::models::decoder::DecoderBackend;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3-tiny");
    let gguf = dir.join("model-f32.gguf");
    let (_, _, exp) = fixture("qwen3-tiny");
    let (deq, cfg) = harness::models::gguf::load_llama_dequantized(&gguf, &Device::Cpu).unwrap();
    assert!(cfg.flavor.qk_norm && !cfg.flavor.qkv_bias && !cfg.tie_word_embeddings);
    assert_eq!(cfg.head_dim, Some(16));
    check_batches(&deq, &exp);
    check_cached(&deq, &exp);
    let (kept, _) = harness::models::gguf::load_llama_quantized(&gguf, &Device::Cpu).unwrap();
    check_batches(&kept, &exp);
    check_cached(&kept, &exp);
    let backend = DecoderBackend::load("qwen3-gguf", &gguf, &Device::Cpu, false).unwrap();
    assert_eq!(backend.info().architecture, "qwen3");
}

#[test]
fn llama3_yarn_and_longrope_scaled_rope_match_transformers() {
    // Llama 3's RoPE (frequencies kept, blended and divided by band), yarn (Qwen2.5 long
    // context: a ramp between interpolation and extrapolation, cos and sin scaled) and
    // longrope (Phi-3 128k / Phi-4-mini: short factors up to the original length, long ones
    // past it, attention scaled): every position within 1e-4 in a padded batch, one by one,
    // through the KV cache and loaded by model_type; and each scaling is seen (plain RoPE
    // misses by more than 1e-3).
    use harness::models::decoder::DecoderBackend;
    use harness::models::llama::Flavor;
    for (name, arch, flavor) in [
        ("llama3-rope-tiny", "llama", Flavor::default()),
        (
            "qwen2-yarn-tiny",
            "qwen2",
            Flavor {
                qkv_bias: true,
                ..Flavor::default()
            },
        ),
        (
            "phi3-longrope-tiny",
            "phi3",
            Flavor {
                fused_projections: true,
                ..Flavor::default()
            },
        ),
    ] {
        let (dir, vb, exp) = fixture(name);
        let mut cfg: LlamaConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        cfg.flavor = flavor;
        let model = Llama::load(vb.clone(), &cfg).unwrap();
        check_batches(&model, &exp);
        // longrope picks its factors by the pass's last position, as transformers does: a
        // prompt past the original length (4) keeps every step on the long factors that the
        // reference's whole-sequence pass used.
        check_cached_after(&model, &exp, if arch == "phi3" { 5 } else { 3 });
        if let Some(short) = &exp.short {
            check_batches(&model, short);
            check_cached(&model, short);
        }
        let backend = DecoderBackend::load(name, &dir, &Device::Cpu, false).unwrap();
        assert_eq!(backend.info().architecture, arch);
        for (ids, want) in exp.input_ids.iter().zip(&exp.logits) {
            let got = backend.window_logits(ids).unwrap();
            for (g, w) in got.iter().zip(want) {
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() <= 1e-4, "{name}: {a} vs {b}");
                }
            }
        }
        let mut plain = cfg.clone();
        plain.rope_parameters =
            Some(serde_json::json!({"rope_type": "default", "rope_theta": 10000.0}));
        let off = Llama::load(vb, &plain).unwrap();
        let all: Vec<&Vec<u32>> = exp.input_ids.iter().collect();
        let want: Vec<&Vec<Vec<f32>>> = exp.logits.iter().collect();
        let d = max_diff(&off, &all, &want);
        // Ten times the tolerance at least (yarn moves these logits least: 5e-3).
        assert!(d > 1e-3, "{name}: the check does not see the scaling ({d})");
    }
}

#[test]
fn a_llama3_gguf_file_carries_its_rope_scaling_as_rope_freqs() {
    // llama.cpp's converter writes Llama 3's scaling as one divisor per pair of dimensions
    // (`rope_freqs.weight`), not as metadata: both loaders apply it, and match transformers.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama3-rope-tiny");
    let gguf = dir.join("model-f32.gguf");
    let (_, _, exp) = fixture("llama3-rope-tiny");
    let (deq, cfg) = harness::models::gguf::load_llama_dequantized(&gguf, &Device::Cpu).unwrap();
    let divisors = cfg.rope_divisors.clone().expect("rope_freqs read");
    assert_eq!(divisors.len(), 4);
    assert_eq!(divisors[0], 1.0);
    assert_eq!(divisors[3], 8.0);
    check_batches(&deq, &exp);
    check_cached(&deq, &exp);
    let (kept, _) = harness::models::gguf::load_llama_quantized(&gguf, &Device::Cpu).unwrap();
    check_batches(&kept, &exp);
    check_cached(&kept, &exp);
}

/// Logits of `model` against `exp` for a GGUF file made by llama.cpp's converter, through both
/// loaders (dequantized, and kept as stored), in a batch, one by one and through the KV cache.
fn check_llamacpp_gguf(name: &str, exp: &Expected, prompt: usize) -> LlamaConfig {
    let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .join("llamacpp-f32.gguf");
    let (deq, cfg) = harness::models::gguf::load_llama_dequantized(&gguf, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    check_batches(&deq, exp);
    check_cached_after(&deq, exp, prompt);
    let (kept, _) = harness::models::gguf::load_llama_quantized(&gguf, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    check_batches(&kept, exp);
    check_cached_after(&kept, exp, prompt);
    cfg
}

#[test]
fn gguf_files_from_llama_cpps_converter_match_transformers() {
    // scripts/make-gguf-fixtures.py runs llama.cpp's convert_hf_to_gguf.py on the tiny
    // checkpoints: Llama (permuted Q/K rows), Llama 3's RoPE as rope_freqs, Qwen2 (biases) and
    // its yarn metadata, Qwen3 (q/k norms), Phi-3 (fused attn_qkv and gate-and-up ffn_up,
    // partial rotary) and its longrope factor tensors. Each file, dequantized and kept as
    // stored, gives transformers' logits within 1e-4.
    for name in [
        "llama-tiny",
        "llama3-rope-tiny",
        "qwen2-tiny",
        "qwen2-yarn-tiny",
        "qwen3-tiny",
        "phi3-tiny",
        "phi3-longrope-tiny",
    ] {
        let (_, _, exp) = fixture(name);
        let prompt = if name == "phi3-longrope-tiny" { 5 } else { 3 };
        let cfg = check_llamacpp_gguf(name, &exp, prompt);
        if let Some(short) = &exp.short {
            let _ = check_llamacpp_gguf(name, short, 3);
        }
        match name {
            "llama3-rope-tiny" => assert!(cfg.rope_divisors.is_some()),
            "phi3-tiny" => assert_eq!(cfg.partial_rotary_factor, Some(0.5)),
            "phi3-longrope-tiny" | "qwen2-yarn-tiny" => assert!(cfg.rope_scaling.is_some()),
            _ => {}
        }
    }
}

#[test]
fn gemma_gguf_files_follow_llama_cpps_rules_for_what_they_do_not_record() {
    // A GGUF file of Gemma 2 or 3 records neither query_pre_attn_scalar nor (Gemma 3) the
    // layer pattern: llama.cpp scales scores by the head width (hidden / heads for the 27B
    // models) and makes every sixth Gemma 3 layer a full one. The files of the tiny Gemmas
    // (whose configs differ on both counts) must match the safetensors model under those
    // rules within 1e-4 (norms stored as 1 + w, sandwich norms, softcaps, sliding windows,
    // Gemma 3's q/k norms and local RoPE base), and miss the transformers reference.
    for (name, arch) in [("gemma2-tiny", "gemma2"), ("gemma3-tiny", "gemma3_text")] {
        let (dir, vb, exp) = fixture(name);
        let gguf = dir.join("llamacpp-f32.gguf");
        let (deq, cfg) = harness::models::gguf::load_llama_dequantized(&gguf, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let mut hf: LlamaConfig =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        hf.flavor = cfg.flavor;
        let all: Vec<&Vec<u32>> = exp.input_ids.iter().collect();
        let want: Vec<&Vec<Vec<f32>>> = exp.logits.iter().collect();
        assert!(
            max_diff(&deq, &all, &want) > 1e-3,
            "{name}: the GGUF rules should change the logits"
        );
        // The same model with llama.cpp's rules, from the safetensors.
        hf.query_pre_attn_scalar = Some(16.0);
        if arch == "gemma3_text" {
            hf.layer_types = None;
            hf.sliding_window_pattern = Some(6);
        }
        let rules = Llama::load(vb, &hf).unwrap();
        let ids: Vec<Vec<u32>> = exp.input_ids.clone();
        let twin = Expected {
            logits: ids
                .iter()
                .map(|row| {
                    let t = Tensor::from_vec(row.clone(), (1, row.len()), &Device::Cpu).unwrap();
                    let m = Tensor::ones((1, row.len()), DType::U32, &Device::Cpu).unwrap();
                    let l = rules.forward(&t, &m).unwrap().squeeze(0).unwrap();
                    l.to_vec2::<f32>().unwrap()
                })
                .collect(),
            input_ids: ids,
            short: None,
        };
        check_batches(&deq, &twin);
        check_cached(&deq, &twin);
        let (kept, _) = harness::models::gguf::load_llama_quantized(&gguf, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        check_batches(&kept, &twin);
        check_cached(&kept, &twin);
        let backend =
            harness::models::decoder::DecoderBackend::load(name, &gguf, &Device::Cpu, false)
                .unwrap();
        assert_eq!(harness::models::Backend::info(&backend).architecture, arch);
    }
}

#[test]
fn gemma3_multimodal_checkpoints_run_their_language_model_on_text() {
    // Gemma 3 4B / 12B / 27B are published as Gemma3ForConditionalGeneration (model_type
    // gemma3, text_config, a SigLIP tower): loaded by model_type, the language model gives
    // transformers' text-only logits within 1e-4 under the Hub's tensor names
    // (language_model.model.*) and under transformers 5's (model.language_model.*), and the
    // parameters counted are the language model's.
    use harness::models::decoder::DecoderBackend;
    let (dir, _, exp) = fixture("gemma3-multimodal-tiny");
    let check = |backend: &DecoderBackend, what: &str| {
        for (ids, want) in exp.input_ids.iter().zip(&exp.logits) {
            let got = backend.window_logits(ids).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                for (a, b) in g.iter().zip(w) {
                    assert!((a - b).abs() <= 1e-4, "{what}: {a} vs {b}");
                }
            }
        }
    };
    let hub = DecoderBackend::load("gemma3-mm", &dir, &Device::Cpu, false).unwrap();
    assert_eq!(hub.info().architecture, "gemma3");
    check(&hub, "hub names");
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let language: u64 = all
        .iter()
        .filter(|(n, _)| n.starts_with("language_model."))
        .map(|(_, t)| t.elem_count() as u64)
        .sum();
    assert!(language < all.values().map(|t| t.elem_count() as u64).sum::<u64>());
    assert_eq!(hub.info().parameters, language);

    // transformers 5's names, in a copy of the folder.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let renamed: std::collections::HashMap<String, Tensor> = all
        .into_iter()
        .map(|(n, t)| {
            let n = match n.strip_prefix("language_model.model.") {
                Some(rest) => format!("model.language_model.{rest}"),
                None => n,
            };
            (n, t)
        })
        .collect();
    candle_core::safetensors::save(&renamed, tmp.path().join("model.safetensors")).unwrap();
    let v5 = DecoderBackend::load("gemma3-mm-v5", tmp.path(), &Device::Cpu, false).unwrap();
    check(&v5, "transformers 5 names");
}
