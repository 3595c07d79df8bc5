//! Tokenizers for a checkpoint folder: `tokenizer.json` when present, otherwise a BERT
//! WordPiece tokenizer built from `vocab.txt` and the lower-casing setting in
//! `tokenizer_config.json` (the layout of textattack's and other older checkpoints).
//!
//! Padding and truncation settings stored in the file are replaced: the harness pads each
//! batch to its own longest sequence and truncates to the model's maximum length.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// Load the tokenizer of a checkpoint folder and set the harness's truncation.
pub fn load_tokenizer(dir: &Path, max_length: usize) -> Result<Tokenizer> {
    let json = dir.join("tokenizer.json");
    let mut tok = if json.exists() {
        Tokenizer::from_file(&json)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{}: cannot parse tokenizer", json.display()))?
    } else if dir.join("vocab.txt").exists() {
        wordpiece_from_vocab(dir)?
    } else {
        bail!(
            "{}: no tokenizer.json and no vocab.txt; the folder needs one of them",
            dir.display()
        );
    };
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    }))
    .map_err(anyhow::Error::msg)?;
    Ok(tok)
}

/// Whether `tokenizer_config.json` asks for lower-casing; BERT's default (true) when absent.
fn lowercase_setting(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(cfg
        .get("do_lower_case")
        .and_then(|v| v.as_bool())
        .unwrap_or(true))
}

/// BERT's tokenizer as `BertTokenizerFast` builds it from a vocabulary file.
fn wordpiece_from_vocab(dir: &Path) -> Result<Tokenizer> {
    let vocab = dir.join("vocab.txt");
    let lowercase = lowercase_setting(dir)?;
    let model = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}: cannot build a WordPiece vocabulary", vocab.display()))?;
    let mut tok = Tokenizer::new(model);
    let id = |t: &str| {
        tok.token_to_id(t)
            .with_context(|| format!("{}: the vocabulary has no {t} token", vocab.display()))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(anyhow::Error::msg)?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(anyhow::Error::msg)?;
    Ok(tok)
}
