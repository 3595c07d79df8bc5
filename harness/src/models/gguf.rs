//! GGUF files (llama.cpp's format) for Llama-family models (architectures `llama`, `qwen2`
//! with q/k/v biases and `qwen3` with per-head q/k norms, the last two with unpermuted Q/K
//! rows, as llama.cpp's converter writes them), loaded *dequantized* to f32 into the
//! [`super::llama::Llama`] port: the teacher side of "quantized versus full precision".
//!
//! Two things differ from a Hugging Face checkpoint and are undone here: tensor names
//! (`blk.N.attn_q.weight` for `model.layers.N.self_attn.q_proj.weight`, ...) and the row order
//! of the Q and K projections, which llama.cpp's converter permutes for its interleaved RoPE
//! layout (`LlamaModel.permute` in `convert_hf_to_gguf.py`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::llama::{LayerParts, Llama, LlamaConfig, Proj, RopeLayout};

/// The Hugging Face name of a GGUF tensor, or `None` for tensors the port does not use.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, module) = rest.split_once('.')?;
    let (module, kind) = module.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let module = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
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

/// Read the model settings from GGUF metadata (`llama.*` keys).
fn config(content: &gguf_file::Content, vocab: usize) -> Result<LlamaConfig> {
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if !matches!(arch.as_str(), "llama" | "qwen2" | "qwen3") {
        bail!("GGUF architecture '{arch}' is not supported (llama, qwen2 and qwen3)");
    }
    let get = |k: &str| {
        content
            .metadata
            .get(&format!("{arch}.{k}"))
            .with_context(|| format!("GGUF metadata lacks {arch}.{k}"))
    };
    let u = |k: &str| -> Result<usize> { Ok(get(k)?.to_u32()? as usize) };
    let heads = u("attention.head_count")?;
    let hidden = u("embedding_length")?;
    Ok(LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: u("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(u("attention.head_count_kv").unwrap_or(heads)),
        // Qwen3's heads are wider than hidden / heads; the converter records it.
        head_dim: Some(u("attention.key_length").unwrap_or(hidden / heads)),
        rms_norm_eps: get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
        rope_theta: Some(
            get("rope.freq_base")
                .and_then(|v| Ok(v.to_f32()? as f64))
                .unwrap_or(10000.0),
        ),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        flavor: super::llama::Flavor {
            // llama.cpp's Qwen2: biases on q, k and v, and Q/K rows as transformers has them.
            qkv_bias: arch == "qwen2",
            qk_norm: arch == "qwen3",
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Whether llama.cpp's converter permuted the Q/K rows for its interleaved RoPE: for `llama`
/// only; `qwen2` and `qwen3` use the NEOX (rotate-half) layout and keep transformers' rows.
fn permuted_qk(cfg: &LlamaConfig) -> bool {
    !(cfg.flavor.qkv_bias || cfg.flavor.qk_norm)
}

/// Open a GGUF file and read its model settings.
fn open(path: &Path) -> Result<(std::fs::File, gguf_file::Content, LlamaConfig)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow::anyhow!("{}: not a readable GGUF file ({e})", path.display()))?;
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .context("GGUF file has no token_embd.weight")?;
    let vocab = embd.shape.dims()[0];
    let cfg = config(&content, vocab)?;
    Ok((file, content, cfg))
}

/// Load a Llama-family GGUF file keeping the linear layers quantized (candle's `QMatMul`, with
/// its quantized kernels) and the Q/K rows in llama.cpp's order, with the interleaved RoPE that
/// order expects. Embeddings and norms are dequantized.
pub fn load_llama_quantized(path: &Path, device: &Device) -> Result<(Llama, LlamaConfig)> {
    let (mut file, content, cfg) = open(path)?;
    let read = |file: &mut std::fs::File, name: &str| {
        content
            .tensor(file, name, device)
            .with_context(|| format!("{}: cannot read tensor {name}", path.display()))
    };
    let deq = |file: &mut std::fs::File, name: &str| -> Result<Tensor> {
        let t = read(file, name)?
            .dequantize(device)
            .with_context(|| format!("{}: cannot read tensor {name}", path.display()))?;
        Ok(t.to_dtype(DType::F32)?)
    };
    // A layer's projection kept as stored, with its f32 bias when it has one (Qwen2's q/k/v).
    let proj = |file: &mut std::fs::File, i: usize, m: &str, biased: bool| -> Result<Proj> {
        let bias = if biased {
            Some(deq(file, &format!("blk.{i}.{m}.bias"))?)
        } else {
            None
        };
        Ok(Proj::from_qtensor(
            read(file, &format!("blk.{i}.{m}.weight"))?,
            bias,
        )?)
    };
    let f = &mut file;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    for i in 0..cfg.num_hidden_layers {
        layers.push(LayerParts {
            input_norm: deq(f, &format!("blk.{i}.attn_norm.weight"))?,
            q: proj(f, i, "attn_q", cfg.flavor.qkv_bias)?,
            k: proj(f, i, "attn_k", cfg.flavor.qkv_bias)?,
            v: proj(f, i, "attn_v", cfg.flavor.qkv_bias)?,
            o: proj(f, i, "attn_output", false)?,
            qk_norm: if cfg.flavor.qk_norm {
                Some((
                    deq(f, &format!("blk.{i}.attn_q_norm.weight"))?,
                    deq(f, &format!("blk.{i}.attn_k_norm.weight"))?,
                ))
            } else {
                None
            },
            post_norm: deq(f, &format!("blk.{i}.ffn_norm.weight"))?,
            gate: proj(f, i, "ffn_gate", false)?,
            up: proj(f, i, "ffn_up", false)?,
            down: proj(f, i, "ffn_down", false)?,
        });
    }
    let head = if cfg.tie_word_embeddings {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    let lm_head = Proj::from_qtensor(read(f, head)?, None)?;
    let embeddings = deq(f, "token_embd.weight")?;
    let norm = deq(f, "output_norm.weight")?;
    let model = Llama::from_parts(
        &cfg,
        embeddings,
        layers,
        norm,
        lm_head,
        // llama.cpp permutes Llama's Q/K rows for its interleaved RoPE; Qwen's it leaves.
        if permuted_qk(&cfg) {
            RopeLayout::Interleaved
        } else {
            RopeLayout::RotateHalf
        },
    )?;
    Ok((model, cfg))
}

/// Load a Llama-family GGUF file, dequantizing every tensor to f32.
pub fn load_llama_dequantized(path: &Path, device: &Device) -> Result<(Llama, LlamaConfig)> {
    let (mut file, content, cfg) = open(path)?;
    let kv = cfg.num_key_value_heads.unwrap_or(cfg.num_attention_heads);
    let mut tensors = HashMap::new();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    for name in names {
        let Some(hf) = hf_name(&name) else { continue };
        let t = content
            .tensor(&mut file, &name, device)
            .and_then(|q| q.dequantize(device))
            .with_context(|| format!("{}: cannot read tensor {name}", path.display()))?;
        let permuted = permuted_qk(&cfg);
        let t = if permuted && name.ends_with("attn_q.weight") {
            unpermute(&t, cfg.num_attention_heads)?
        } else if permuted && name.ends_with("attn_k.weight") {
            unpermute(&t, kv)?
        } else {
            t
        };
        tensors.insert(hf, t.to_dtype(DType::F32)?);
    }
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let model = Llama::load(vb, &cfg)
        .with_context(|| format!("{}: tensors do not match the metadata", path.display()))?;
    Ok((model, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_transformers() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
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
