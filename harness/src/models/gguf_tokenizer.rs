//! A tokenizer rebuilt from a GGUF file's own `tokenizer.ggml.*` metadata, as llama.cpp does,
//! for GGUF files shipped without a `tokenizer.json`.
//!
//! Supported: byte-level BPE (`tokenizer.ggml.model = gpt2`, the GPT-2 / SmolLM2 / Qwen
//! family) with the pre-tokenizers llama.cpp calls `default`, `gpt2` and `smollm`. The result
//! is written as `tokenizer.json` text and parsed by the `tokenizers` crate, so it is exactly
//! what a Hugging Face tokenizer file with the same fields would give. Other models
//! (SentencePiece `llama`, other pre-tokenizer regexes) are refused with a message that says
//! to put the model's `tokenizer.json` beside the file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;
use tokenizers::Tokenizer;

/// llama.cpp's token types: 3 is a control token (special), 4 user-defined.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

fn strings(content: &Content, key: &str) -> Result<Vec<String>> {
    let v = content
        .metadata
        .get(key)
        .with_context(|| format!("GGUF metadata lacks {key}"))?;
    v.to_vec()?
        .iter()
        .map(|x| Ok(x.to_string()?.clone()))
        .collect()
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::I32(x) => Some(*x as i64),
        Value::U32(x) => Some(*x as i64),
        Value::I64(x) => Some(*x),
        Value::U64(x) => Some(*x as i64),
        Value::I8(x) => Some(*x as i64),
        Value::U8(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::U16(x) => Some(*x as i64),
        _ => None,
    }
}

/// The `tokenizer.json` document the metadata describes.
pub fn tokenizer_json(content: &Content, origin: &str) -> Result<serde_json::Value> {
    let meta = |k: &str| content.metadata.get(k);
    let model = meta("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok().cloned())
        .with_context(|| format!("{origin}: no tokenizer.ggml.model in the GGUF metadata and no tokenizer.json beside the file"))?;
    if model != "gpt2" {
        bail!("{origin}: GGUF tokenizer model '{model}' cannot be rebuilt here (only byte-level BPE, 'gpt2'); put the model's tokenizer.json beside the .gguf file");
    }
    let pre = meta("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_else(|| "default".into());
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre_tokenizer = match pre.as_str() {
        "default" | "gpt2" => byte_level,
        // SmolLM splits digits one by one before the GPT-2 regex.
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level,
        ]}),
        other => bail!("{origin}: GGUF pre-tokenizer '{other}' is not supported (default, gpt2, smollm); put the model's tokenizer.json beside the .gguf file"),
    };
    let tokens = strings(content, "tokenizer.ggml.tokens")
        .with_context(|| format!("{origin}: cannot read the vocabulary"))?;
    let merges = strings(content, "tokenizer.ggml.merges")
        .with_context(|| format!("{origin}: cannot read the BPE merges"))?;
    let types: Vec<i64> = match meta("tokenizer.ggml.token_type") {
        Some(v) => v.to_vec()?.iter().filter_map(int).collect(),
        None => Vec::new(),
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.clone(), json!(id));
        let t = types.get(id).copied().unwrap_or(1) as i32;
        if t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": t == TOKEN_TYPE_CONTROL,
            }));
        }
    }
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m
                .split_once(' ')
                .with_context(|| format!("{origin}: malformed BPE merge '{m}'"))?;
            Ok(json!([a, b]))
        })
        .collect::<Result<_>>()?;
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    }))
}

/// Build the tokenizer of a GGUF file from its metadata.
pub fn from_gguf(path: &Path) -> Result<Tokenizer> {
    let (_, content) = super::gguf::read_header(path)?;
    from_content(&content, &path.display().to_string())
}

/// Build the tokenizer from already-read GGUF metadata.
pub fn from_content(content: &Content, origin: &str) -> Result<Tokenizer> {
    let doc = tokenizer_json(content, origin)?;
    doc.to_string()
        .parse::<Tokenizer>()
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!("{origin}: the GGUF tokenizer metadata does not make a valid tokenizer")
        })
}

/// Special token ids named in the metadata (`bos`, `eos`, ...).
pub fn special_ids(content: &Content) -> BTreeMap<&'static str, u32> {
    let mut out = BTreeMap::new();
    for (name, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
    ] {
        if let Some(v) = content.metadata.get(key).and_then(int) {
            out.insert(name, v as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn strs(v: &[&str]) -> Value {
        Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
    }

    /// A byte-level BPE vocabulary as a GGUF converter writes it: one control token, the
    /// byte-level characters for "a", "b", "1", "2" and space ("Ġ"), and three merges.
    fn content(model: &str, pre: &str) -> Content {
        let mut metadata = HashMap::new();
        metadata.insert("tokenizer.ggml.model".into(), Value::String(model.into()));
        metadata.insert("tokenizer.ggml.pre".into(), Value::String(pre.into()));
        metadata.insert(
            "tokenizer.ggml.tokens".into(),
            strs(&["<|endoftext|>", "a", "b", "Ġ", "1", "2", "ab", "Ġa", "Ġab"]),
        );
        metadata.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array([3, 1, 1, 1, 1, 1, 1, 1, 1].map(Value::I32).to_vec()),
        );
        metadata.insert(
            "tokenizer.ggml.merges".into(),
            strs(&["a b", "Ġ a", "Ġa b"]),
        );
        metadata.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(0));
        Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    use candle_core::quantized::gguf_file;

    #[test]
    fn byte_level_bpe_is_rebuilt_from_metadata() {
        let tok = from_content(&content("gpt2", "gpt2"), "x.gguf").unwrap();
        let enc = tok.encode("ab ab a<|endoftext|>", true).unwrap();
        // Merges apply by rank: in " ab", "a b" (rank 0) wins over "Ġ a" (rank 1), so it
        // becomes "Ġ" + "ab"; " a" becomes "Ġa"; the control token stays whole.
        assert_eq!(enc.get_ids(), &[6, 3, 6, 7, 0]);
        assert_eq!(tok.decode(&[6, 8, 7], true).unwrap(), "ab ab a");
        assert_eq!(special_ids(&content("gpt2", "gpt2"))["eos"], 0);
    }

    #[test]
    fn smollm_splits_digits_one_by_one() {
        let gpt2 = from_content(&content("gpt2", "gpt2"), "x").unwrap();
        let smollm = from_content(&content("gpt2", "smollm"), "x").unwrap();
        // Without merges for "12" both give single digits; the pre-tokenizers differ in how
        // they split words, which the offsets show: "12" is one word for GPT-2's regex.
        let g = gpt2.encode("a12", false).unwrap();
        let s = smollm.encode("a12", false).unwrap();
        assert_eq!(g.get_ids(), &[1, 4, 5]);
        assert_eq!(s.get_ids(), &[1, 4, 5]);
        let words = |e: &tokenizers::Encoding| {
            (0..e.len())
                .filter_map(|i| e.token_to_word(i).map(|(_, w)| w))
                .collect::<Vec<_>>()
        };
        assert_eq!(words(&s), vec![0, 1, 2]);
        assert_eq!(words(&g), vec![0, 1, 1]);
    }

    #[test]
    fn unsupported_tokenizers_say_what_to_do() {
        let err = from_content(&content("llama", "default"), "m.gguf")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'llama' cannot be rebuilt") && err.contains("tokenizer.json"),
            "{err}"
        );
        let err = from_content(&content("gpt2", "qwen2"), "m.gguf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pre-tokenizer 'qwen2'"), "{err}");
    }
}
