//! WikiText raw files (`wiki.test.raw`): the text as one stream, with the word and byte counts
//! that word-level perplexity and bits per byte divide by.

use std::path::Path;

use crate::data::{read_utf8, DataError};

/// A raw text and its size in the units perplexities are normalised by.
#[derive(Debug, Clone, PartialEq)]
pub struct RawText {
    pub text: String,
    /// Whitespace-separated words.
    pub words: usize,
    /// UTF-8 bytes.
    pub bytes: usize,
    pub origin: String,
}

impl RawText {
    pub fn new(text: String, origin: &str) -> Result<Self, DataError> {
        let words = text.split_whitespace().count();
        if words == 0 {
            return Err(DataError::Empty {
                origin: origin.to_string(),
            });
        }
        Ok(RawText {
            words,
            bytes: text.len(),
            text,
            origin: origin.to_string(),
        })
    }

    /// Read a raw WikiText file (as in `../shared/data/wikitext-2/wiki.test.raw`).
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let text = read_utf8(path, "pass --data-dir with wikitext-2/wiki.test.raw inside")?;
        Self::new(text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_and_bytes() {
        let t = RawText::new(
            " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 \n".into(),
            "x",
        )
        .unwrap();
        assert_eq!(t.words, 9);
        assert_eq!(t.bytes, t.text.len());
        assert!(t.bytes > t.text.chars().count(), "ō is two bytes");
    }

    #[test]
    fn empty_text_is_an_error() {
        assert!(matches!(
            RawText::new(" \n ".into(), "x"),
            Err(DataError::Empty { .. })
        ));
        let err = RawText::read(Path::new("/no/wiki.test.raw"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("file not found"), "{err}");
    }
}
