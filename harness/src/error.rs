//! Exit codes with meaning, as ripgrep does: 0 ok, 1 regression found, 2 error.

/// Success.
pub const EXIT_OK: u8 = 0;
/// A comparison found a regression (used by `compare`).
pub const EXIT_REGRESSION: u8 = 1;
/// Bad input or a failure; one line on stderr says what and how to fix it.
pub const EXIT_ERROR: u8 = 2;

/// Render an error chain on one line: `outer: inner: root cause`.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}
