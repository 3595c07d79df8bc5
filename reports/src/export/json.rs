//! JSON: the results file itself, pretty-printed.

use super::Exporter;
use crate::Results;

pub struct JsonReport;

impl Exporter for JsonReport {
    fn render(&self, r: &Results) -> String {
        let mut s = serde_json::to_string_pretty(r).expect("results serialise");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = crate::schema::tests::sample();
        let back: Results = serde_json::from_str(&JsonReport.render(&r)).unwrap();
        assert_eq!(back, r);
    }
}
