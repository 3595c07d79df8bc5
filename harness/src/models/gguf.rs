//! GGUF files (llama.cpp's format) for Llama-family models, loaded into the
//! [`super::llama::Llama`] port either *dequantized* to f32 (the teacher side of "quantized
//! versus full precision") or with the projections kept as stored. Architectures: `llama`,
//! `qwen2` (q/k/v biases), `qwen3` (per-head q/k norms), `phi3` (fused `attn_qkv` and
//! gate-and-up `ffn_up`, partial rotary, longrope factors), `gemma2` and `gemma3` (sandwich
//! norms, softcaps, sliding-window layers).
//!
//! What differs from a Hugging Face checkpoint is undone here, as llama.cpp's converter
//! (`convert_hf_to_gguf.py`) made it: tensor names (`blk.N.attn_q.weight` for
//! `model.layers.N.self_attn.q_proj.weight`, ...), the row order of Llama's Q and K projections,
//! which the converter permutes for its interleaved RoPE (`LlamaModel.permute`), and Gemma's
//! norms, which it stores as `1 + weight`. Settings that a GGUF file does not carry follow
//! llama.cpp's own rules: Gemma scales scores by the head width (by hidden / heads for the 27B
//! models), Gemma 2 alternates sliding and full layers, Gemma 3 has a full layer every sixth
//! unless `attention.sliding_window_pattern` says otherwise.
//!
//! RoPE scaling comes from `rope.scaling.*` metadata (`linear`, `yarn`), for Llama 3.1+ from the
//! `rope_freqs.weight` tensor of per-pair divisors, and for Phi-3 from `rope_factors_short` /
//! `rope_factors_long` with `rope.scaling.attn_factor`. The tests load files written by
//! llama.cpp's own converter (`scripts/make-gguf-fixtures.py`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::llama::{Llama, LlamaConfig, QuantizedWeights, RopeLayout};

/// The Hugging Face name of a GGUF tensor of architecture `arch`, or `None` for tensors the
/// port does not use or reads apart (`rope_freqs`, `rope_factors_*`).
fn hf_name(gguf: &str, arch: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let gemma = arch.starts_with("gemma");
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, module) = rest.split_once('.')?;
    let (module, kind) = module.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let module = match module {
        "attn_norm" => "input_layernorm",
        // Llama's norm before the feed-forward; Gemma has one after attention as well.
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_qkv" => "self_attn.qkv_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        // Phi-3 keeps gate and up in one tensor under this name.
        "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{module}.{kind}"))
}

/// Undo the converter's permutation: rows were `(heads, 2, d/2)` and became `(heads, d/2, 2)`.
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((heads, out / heads / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

/// The GGUF architectures this loader reads.
const ARCHITECTURES: [&str; 6] = ["llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"];

/// transformers' `model_type` for a GGUF architecture (the label results carry).
pub fn model_type(gguf_arch: &str) -> &str {
    match gguf_arch {
        "gemma3" => "gemma3_text",
        other => other,
    }
}

/// Open a GGUF file and read its header (metadata and tensor table), refusing one part of a
/// split model ([`refuse_split`]): what every reader of a GGUF file starts with.
pub fn read_header(path: &Path) -> Result<(std::fs::File, gguf_file::Content)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    // Buffered: candle reads the metadata a few bytes at a time, and a tokenizer's worth of
    // strings unbuffered took ~170 ms of system calls for SmolLM2's 49k-token vocabulary.
    // Tensors are later read at absolute offsets, so the position the buffer leaves is moot.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| anyhow::anyhow!("{}: not a readable GGUF file ({e})", path.display()))?;
    refuse_split(&content, path)?;
    Ok((reader.into_inner(), content))
}

/// Refuse one part of a split GGUF model (`llama-gguf-split`'s `NAME-00001-of-0000N.gguf`,
/// how the Hub stores files past its size limit): the other parts hold tensors this file
/// lacks, so loading it alone would fail later with a less useful message.
pub fn refuse_split(content: &gguf_file::Content, path: &Path) -> Result<()> {
    let count = content
        .metadata
        .get("split.count")
        .and_then(|v| {
            v.to_u16()
                .map(u64::from)
                .or_else(|_| v.to_u32().map(u64::from))
                .ok()
        })
        .unwrap_or(1);
    if count > 1 {
        bail!(
            "{}: part of a GGUF model split into {count} files, which this harness does not load; join the parts first (llama.cpp: `llama-gguf-split --merge {} merged.gguf`) and pass the merged file",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// A GGUF file's `general.architecture` (empty when it has none).
pub fn architecture(content: &gguf_file::Content) -> String {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default()
}

/// Read the model settings from GGUF metadata (`ARCH.*` keys).
fn config(content: &gguf_file::Content, vocab: usize) -> Result<LlamaConfig> {
    let arch = architecture(content);
    if !ARCHITECTURES.contains(&arch.as_str()) {
        bail!(
            "GGUF architecture '{arch}' is not supported ({})",
            ARCHITECTURES.join(", ")
        );
    }
    let get = |k: &str| {
        content
            .metadata
            .get(&format!("{arch}.{k}"))
            .with_context(|| format!("GGUF metadata lacks {arch}.{k}"))
    };
    let u = |k: &str| -> Result<usize> { Ok(get(k)?.to_u32()? as usize) };
    let f = |k: &str| -> Result<f64> { Ok(get(k)?.to_f32()? as f64) };
    let heads = u("attention.head_count")?;
    let hidden = u("embedding_length")?;
    let layers = u("block_count")?;
    // Qwen3's and Gemma's heads are wider than hidden / heads; the converter records it.
    let head_dim = u("attention.key_length").unwrap_or(hidden / heads);
    // RoPE scaling as llama.cpp records it (`rope.scaling.*`); Llama 3's and Phi-3's scalings
    // are tensors instead (read in `open`).
    let scaling = content
        .metadata
        .get(&format!("{arch}.rope.scaling.type"))
        .and_then(|v| v.to_string().ok())
        .cloned();
    let factor = f("rope.scaling.factor");
    let rope_scaling = match scaling.as_deref() {
        None | Some("none") => None,
        Some("linear") => Some(serde_json::json!({
            "rope_type": "linear",
            "factor": factor.context("GGUF linear RoPE scaling without rope.scaling.factor")?,
        })),
        Some("yarn") => {
            let mut y = serde_json::json!({
                "rope_type": "yarn",
                "factor": factor.context("GGUF yarn RoPE scaling without rope.scaling.factor")?,
                "original_max_position_embeddings": u("rope.scaling.original_context_length")
                    .context("GGUF yarn RoPE scaling without rope.scaling.original_context_length")?,
            });
            for (key, name) in [
                ("rope.scaling.yarn_attn_factor", "attention_factor"),
                ("rope.scaling.yarn_beta_fast", "beta_fast"),
                ("rope.scaling.yarn_beta_slow", "beta_slow"),
            ] {
                if let Ok(v) = f(key) {
                    y[name] = serde_json::json!(v);
                }
            }
            Some(y)
        }
        // Phi-3's factors are tensors; `open` builds the settings from them.
        Some("longrope") => None,
        Some(other) => bail!(
            "GGUF RoPE scaling '{other}' is not supported (none, linear, yarn, longrope, and Llama 3's rope_freqs are)"
        ),
    };
    let gemma = arch.starts_with("gemma");
    // llama.cpp: Gemma's scores are scaled by the head width, but by hidden / heads for the 27B
    // models (46 layers for Gemma 2, 62 for Gemma 3), as Google's reference code does.
    let big = (arch == "gemma2" && layers == 46) || (arch == "gemma3" && layers == 62);
    let query_pre_attn_scalar = gemma.then(|| {
        if big {
            (hidden / heads) as f64
        } else {
            head_dim as f64
        }
    });
    let window = u("attention.sliding_window").ok().filter(|&w| w > 0);
    let pattern = match arch.as_str() {
        "gemma2" => Some(2),
        "gemma3" => Some(u("attention.sliding_window_pattern").unwrap_or(6)),
        _ => None,
    };
    let rotary = u("rope.dimension_count").ok();
    Ok(LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(u("attention.head_count_kv").unwrap_or(heads)),
        head_dim: Some(head_dim),
        rms_norm_eps: f("attention.layer_norm_rms_epsilon")?,
        rope_theta: Some(f("rope.freq_base").unwrap_or(10000.0)),
        // Gemma 3's sliding layers turn at their own base (llama.cpp's default 10000).
        rope_local_base_freq: (arch == "gemma3")
            .then(|| f("rope.freq_base_swa").unwrap_or(10000.0)),
        partial_rotary_factor: rotary
            .filter(|&r| r != head_dim)
            .map(|r| r as f64 / head_dim as f64),
        rope_scaling,
        max_position_embeddings: u("context_length").ok(),
        original_max_position_embeddings: u("rope.scaling.original_context_length").ok(),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        // Only Gemma's layers slide: llama.cpp applies no window to `phi3` (its PR 13676) or
        // `llama` files, and a GGUF model should score what llama.cpp computes (README).
        sliding_window: window.filter(|_| gemma),
        sliding_window_pattern: pattern,
        query_pre_attn_scalar,
        attn_logit_softcapping: f("attn_logit_softcapping").ok(),
        final_logit_softcapping: f("final_logit_softcapping").ok(),
        flavor: super::llama::Flavor {
            // llama.cpp's Qwen2: biases on q, k and v, and Q/K rows as transformers has them.
            qkv_bias: arch == "qwen2",
            qk_norm: arch == "qwen3" || arch == "gemma3",
            fused_projections: arch == "phi3",
            gemma,
        },
        ..Default::default()
    })
}

/// A GGUF file opened: its metadata, the model settings read from them, and its
/// architecture.
struct Opened {
    file: std::fs::File,
    content: gguf_file::Content,
    cfg: LlamaConfig,
    arch: String,
}

/// Open a GGUF file and read its model settings, with the RoPE tensors (`rope_freqs`, Phi-3's
/// `rope_factors_*`) folded into them.
fn open(path: &Path) -> Result<Opened> {
    let (mut file, content) = read_header(path)?;
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .context("GGUF file has no token_embd.weight")?;
    let vocab = embd.shape.dims()[0];
    let mut cfg = config(&content, vocab)?;
    let arch = architecture(&content);
    let mut vector = |name: &str| -> Result<Option<Vec<f32>>> {
        if !content.tensor_infos.contains_key(name) {
            return Ok(None);
        }
        let v = content
            .tensor(&mut file, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
            .with_context(|| format!("{}: cannot read {name}", path.display()))?;
        Ok(Some(v))
    };
    // Llama 3.1+: the converter turns the `llama3` scaling into one divisor per rotated pair.
    cfg.rope_divisors = vector("rope_freqs.weight")?;
    // Phi-3 128k / Phi-4-mini: longrope's two factor lists, chosen per pass by length.
    if let (Some(short), Some(long)) = (
        vector("rope_factors_short.weight")?,
        vector("rope_factors_long.weight")?,
    ) {
        let mut settings = serde_json::json!({
            "rope_type": "longrope",
            "short_factor": short,
            "long_factor": long,
        });
        let key = format!("{arch}.rope.scaling.attn_factor");
        if let Some(a) = content.metadata.get(&key).and_then(|v| v.to_f32().ok()) {
            settings["attention_factor"] = serde_json::json!(a as f64);
        }
        cfg.rope_scaling = Some(settings);
    }
    Ok(Opened {
        file,
        content,
        cfg,
        arch,
    })
}

/// Load a Llama-family GGUF file keeping the linear layers quantized (the integer GEMM for
/// Q8_0 / Q4_0 / Q4_1, candle's kernels for the other formats) and Llama's Q/K rows in
/// llama.cpp's order, with the interleaved RoPE that order expects. Embeddings and norms are
/// dequantized.
pub fn load_llama_quantized(path: &Path, device: &Device) -> Result<(Llama, LlamaConfig)> {
    load(path, device, true)
}

/// Load a Llama-family GGUF file, dequantizing every tensor to f32.
pub fn load_llama_dequantized(path: &Path, device: &Device) -> Result<(Llama, LlamaConfig)> {
    load(path, device, false)
}

fn load(path: &Path, device: &Device, keep_quantized: bool) -> Result<(Llama, LlamaConfig)> {
    let Opened {
        mut file,
        content,
        cfg,
        arch,
    } = open(path)?;
    let kv = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
    // Only Llama's converter permutes the Q/K rows (for llama.cpp's interleaved RoPE); the
    // others use the NEOX (rotate-half) layout and keep transformers' rows.
    let permuted = arch == "llama";
    let mut tensors = HashMap::new();
    let mut quantized = QuantizedWeights::new();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in names {
        let Some(hf) = hf_name(&name, &arch) else {
            continue;
        };
        let q = content
            .tensor(&mut file, &name, device)
            .with_context(|| format!("{}: cannot read tensor {name}", path.display()))?;
        // Projections stay as stored when asked; the tied output layer shares the embedding
        // table's blocks.
        let projection = hf.ends_with("_proj.weight") || hf == "lm_head.weight";
        if keep_quantized && projection {
            quantized.insert(hf, q);
            continue;
        }
        if keep_quantized && cfg.tie_word_embeddings && hf == "model.embed_tokens.weight" {
            let copy = super::llama::quantized_rows(&q, 0, q.shape().dims2()?.0)?;
            quantized.insert("lm_head.weight".into(), copy);
        }
        let t = q
            .dequantize(device)
            .with_context(|| format!("{}: cannot read tensor {name}", path.display()))?;
        let t = if permuted && name.ends_with("attn_q.weight") {
            unpermute(&t, cfg.num_attention_heads)?
        } else if permuted && name.ends_with("attn_k.weight") {
            unpermute(&t, kv)?
        } else {
            t
        };
        let t = t.to_dtype(DType::F32)?;
        // The converter stores Gemma's norms as 1 + weight; the port adds the 1 itself.
        let t = if cfg.flavor.gemma && hf.ends_with("norm.weight") {
            (t - 1.0)?
        } else {
            t
        };
        tensors.insert(hf, t);
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let layout = if keep_quantized && permuted {
        RopeLayout::Interleaved
    } else {
        RopeLayout::RotateHalf
    };
    let model = Llama::load_with(vb, &cfg, quantized, layout)
        .with_context(|| format!("{}: tensors do not match the metadata", path.display()))?;
    Ok((model, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_part_of_a_split_model_is_refused_with_how_to_join_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/llama-tiny/model-f32.gguf");
        let mut f = std::fs::File::open(&src).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        refuse_split(&content, &src).unwrap();
        let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
            .tensor_infos
            .keys()
            .map(|n| (n.clone(), content.tensor(&mut f, n, &Device::Cpu).unwrap()))
            .collect();
        let mut metadata: Vec<(&str, &gguf_file::Value)> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let (count, no) = (gguf_file::Value::U16(2), gguf_file::Value::U16(0));
        metadata.extend([("split.count", &count), ("split.no", &no)]);
        let tmp = tempfile::tempdir().unwrap();
        let part = tmp.path().join("model-00001-of-00002.gguf");
        let refs: Vec<(&str, &candle_core::quantized::QTensor)> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        gguf_file::write(&mut std::fs::File::create(&part).unwrap(), &metadata, &refs).unwrap();
        let err = load_llama_dequantized(&part, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("part of a GGUF model split into 2 files"),
            "{err}"
        );
        assert!(err.contains("llama-gguf-split --merge"), "{err}");
    }

    #[test]
    fn names_map_to_transformers() {
        let name = |gguf: &str, arch: &str| hf_name(gguf, arch).unwrap_or_default();
        assert_eq!(
            name("blk.3.attn_q.weight", "llama"),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            name("blk.0.ffn_norm.weight", "llama"),
            "model.layers.0.post_attention_layernorm.weight"
        );
        // Gemma's ffn_norm is the norm before the feed-forward; the one after attention has
        // a name of its own.
        assert_eq!(
            name("blk.0.ffn_norm.weight", "gemma2"),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            name("blk.0.post_attention_norm.weight", "gemma3"),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            name("blk.1.ffn_up.weight", "phi3"),
            "model.layers.1.mlp.gate_up_proj.weight"
        );
        assert_eq!(
            name("blk.1.ffn_up.weight", "qwen2"),
            "model.layers.1.mlp.up_proj.weight"
        );
        assert_eq!(
            name("token_embd.weight", "llama"),
            "model.embed_tokens.weight"
        );
        assert_eq!(hf_name("rope_freqs.weight", "llama"), None);
        assert_eq!(hf_name("rope_factors_long.weight", "phi3"), None);
    }

    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        // Rows 0..8 for 2 heads of dim 4: per head [a0 a1 b0 b1] -> converter -> [a0 b0 a1 b1].
        let permuted = Tensor::new(
            &[[0f32], [2.], [1.], [3.], [4.], [6.], [5.], [7.]],
            &Device::Cpu,
        )
        .unwrap();
        let back = unpermute(&permuted, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(back, vec![0., 1., 2., 3., 4., 5., 6., 7.]);
    }
}
