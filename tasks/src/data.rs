//! Reading task data: GLUE TSV files as the original distribution lays them out (a header or
//! none, byte-order marks, CRLF line ends, unbalanced quotes that are just text) and rows from
//! the Hub's parquet files.

use std::path::{Path, PathBuf};

/// The gold answer of one example.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Gold {
    /// Index into the task's labels.
    Class(usize),
    /// A real-valued score (STS-B similarity, 0-5).
    Score(f64),
}

impl Gold {
    pub fn class(&self) -> Option<usize> {
        match self {
            Gold::Class(c) => Some(*c),
            Gold::Score(_) => None,
        }
    }
    pub fn score(&self) -> Option<f64> {
        match self {
            Gold::Class(c) => Some(*c as f64),
            Gold::Score(s) => Some(*s),
        }
    }
}

/// One example: one or two texts and the gold answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// Stable id: the row's own id column when it has one, else its 0-based row index.
    pub id: String,
    pub text_a: String,
    pub text_b: Option<String>,
    pub gold: Gold,
}

/// The examples of one split, with a description of where they came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dataset {
    pub examples: Vec<Example>,
    /// The file or Hub split the rows came from, for messages and results.
    pub origin: String,
}

/// Everything that can be wrong with task data. Messages say which file and line, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: file not found ({hint})")]
    MissingFile { path: PathBuf, hint: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {message}")]
    Malformed {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: no column named '{column}' in the header (columns: {found})")]
    MissingColumn {
        origin: String,
        column: String,
        found: String,
    },
    #[error("{origin}: the data set is empty (no example rows)")]
    Empty { origin: String },
    #[error("{0}")]
    Other(String),
}

/// A column of a TSV file: by header name, or by position for files without a header.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    Name(&'static str),
    Index(usize),
}

/// A parsed TSV file: its header (when it has one) and its rows with 1-based line numbers.
#[derive(Debug)]
pub struct TsvFile {
    pub origin: String,
    pub header: Option<Vec<String>>,
    pub rows: Vec<(usize, Vec<String>)>,
}

impl TsvFile {
    /// Parse TSV text. GLUE files are read as Python's `csv` module with `quoting=QUOTE_NONE`
    /// would: a quote is an ordinary character (MRPC has unbalanced ones), fields split on tabs.
    ///
    /// The design card names the `csv` crate; with quoting off it would do exactly this split
    /// (`ReaderBuilder::quoting(false)`), so it would add a dependency and no behaviour.
    pub fn parse(origin: &str, text: &str, has_header: bool) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.trim().is_empty());
        let header = if has_header {
            lines
                .next()
                .map(|(_, l)| l.split('\t').map(|s| s.trim().to_string()).collect())
        } else {
            None
        };
        let rows = lines
            .map(|(n, l)| (n, l.split('\t').map(str::to_string).collect()))
            .collect();
        TsvFile {
            origin: origin.to_string(),
            header,
            rows,
        }
    }

    /// Read and parse a file, with a hint on what to pass when it is missing.
    pub fn read(path: &Path, has_header: bool) -> Result<Self, DataError> {
        let text = read_utf8(
            path,
            "--data-dir must point at a folder in the GLUE layout, e.g. ../shared/data/glue with SST-2/dev.tsv inside",
        )?;
        Ok(Self::parse(&path.display().to_string(), &text, has_header))
    }

    /// Position of a column, resolved against the header.
    pub fn column_index(&self, column: Column) -> Result<usize, DataError> {
        match (column, &self.header) {
            (Column::Index(i), _) => Ok(i),
            (Column::Name(name), Some(header)) => {
                header
                    .iter()
                    .position(|h| h == name)
                    .ok_or_else(|| DataError::MissingColumn {
                        origin: self.origin.clone(),
                        column: name.to_string(),
                        found: header.join(", "),
                    })
            }
            (Column::Name(name), None) => Err(DataError::MissingColumn {
                origin: self.origin.clone(),
                column: name.to_string(),
                found: "the file has no header".into(),
            }),
        }
    }
}

/// Read a UTF-8 text file; a missing file's error carries `hint` (what to pass instead).
pub fn read_utf8(path: &Path, hint: &str) -> Result<String, DataError> {
    if !path.exists() {
        return Err(DataError::MissingFile {
            path: path.to_path_buf(),
            hint: hint.into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| DataError::Malformed {
        origin: path.display().to_string(),
        line: 0,
        message: format!("not valid UTF-8 ({e})"),
    })
}

/// Get field `idx` of a row, or a `Malformed` error that names the line and the field count.
pub fn field<'a>(
    origin: &str,
    line: usize,
    row: &'a [String],
    idx: usize,
) -> Result<&'a str, DataError> {
    row.get(idx)
        .map(String::as_str)
        .ok_or_else(|| DataError::Malformed {
            origin: origin.to_string(),
            line,
            message: format!(
                "expected at least {} tab-separated fields, found {}",
                idx + 1,
                row.len()
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_bom_and_crlf() {
        let f = TsvFile::parse("x", "\u{feff}Quality\ta\r\n1\thello \"world\r\n\r\n", true);
        assert_eq!(f.header.as_deref().unwrap(), ["Quality", "a"]);
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.rows[0].0, 2);
        assert_eq!(f.rows[0].1, ["1", "hello \"world"]);
    }

    #[test]
    fn no_header_keeps_first_row() {
        let f = TsvFile::parse(
            "x",
            "gj04\t1\t\tOur friends won't buy this analysis.\n",
            false,
        );
        assert!(f.header.is_none());
        assert_eq!(f.rows[0].1[3], "Our friends won't buy this analysis.");
    }

    #[test]
    fn missing_column_names_found_columns() {
        let f = TsvFile::parse("dev.tsv", "a\tb\n1\t2\n", true);
        let err = f
            .column_index(Column::Name("label"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column named 'label'"), "{err}");
        assert!(err.contains("a, b"), "{err}");
    }

    #[test]
    fn short_row_is_reported_with_line() {
        let err = field("dev.tsv", 7, &["x".to_string()], 2)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "dev.tsv:7: expected at least 3 tab-separated fields, found 1"
        );
    }
}
