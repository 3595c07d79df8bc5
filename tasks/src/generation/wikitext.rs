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

    /// The first `n` articles of the text (`--limit`): WikiText's articles each start with a
    /// top-level heading line, ` = Title = ` (sections are ` = = Title = = `), so the text is
    /// cut where the article after the `n`-th starts; the word and byte counts are the kept
    /// part's. A text with no such heading is one article.
    pub fn first_articles(self, n: usize) -> Result<Self, DataError> {
        let mut start = 0;
        let mut seen = 0;
        for line in self.text.split_inclusive('\n') {
            if is_article_heading(line) {
                seen += 1;
                if seen > n {
                    let kept = self.text[..start].to_string();
                    return Self::new(kept, &self.origin);
                }
            }
            start += line.len();
        }
        Ok(self)
    }

    /// Read a raw WikiText file (as in `../shared/data/wikitext-2/wiki.test.raw`).
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let text = read_utf8(path, "pass --data-dir with wikitext-2/wiki.test.raw inside")?;
        Self::new(text, &path.display().to_string())
    }
}

/// Whether `line` is an article's heading (` = Title = `), not a section's (` = = Title = = `).
fn is_article_heading(line: &str) -> bool {
    let t = line.trim();
    t.len() > 4 && t.starts_with("= ") && t.ends_with(" =") && !t.starts_with("= =")
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
    fn first_articles_cuts_before_the_next_article_heading_not_a_section() {
        let text = " = One = \n a b \n = = Part = = \n c \n = Two = \n d e f \n = Three = \n g \n";
        let all = RawText::new(text.into(), "x").unwrap();
        let one = all.clone().first_articles(1).unwrap();
        assert_eq!(one.text, " = One = \n a b \n = = Part = = \n c \n");
        assert_eq!((one.words, one.bytes), (11, one.text.len()));
        let two = all.clone().first_articles(2).unwrap();
        assert!(two.text.ends_with(" = Two = \n d e f \n"));
        assert_eq!(two.words, 11 + 6);
        assert_eq!(all.clone().first_articles(3).unwrap(), all);
        assert_eq!(all.clone().first_articles(9).unwrap(), all);
        // Without article headings the whole text is one article.
        let plain = RawText::new("just words\n more words\n".into(), "y").unwrap();
        assert_eq!(plain.clone().first_articles(1).unwrap(), plain);
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
