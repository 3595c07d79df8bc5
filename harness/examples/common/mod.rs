//! What the examples share: their arguments and a median wall time.

use std::time::Instant;

/// Median milliseconds of `runs` calls of `f`, after one untimed call.
pub fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// `K N ROWS,ROWS,..` from the command line: a layer's input and output widths (default
/// BERT-base's feed-forward, 768 and 3072) and the row counts to time.
#[allow(dead_code)] // not every example takes a layer shape
pub fn shape_args(default_rows: &str) -> anyhow::Result<(usize, usize, Vec<usize>)> {
    let args: Vec<String> = std::env::args().collect();
    let k = args.get(1).map_or(Ok(768), |s| s.parse())?;
    let n = args.get(2).map_or(Ok(3072), |s| s.parse())?;
    let rows = args
        .get(3)
        .map_or(default_rows, |s| s.as_str())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    Ok((k, n, rows))
}
