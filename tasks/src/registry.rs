//! The one list of tasks. Adding a task means adding one line here.

use crate::glue;
use crate::Task;

/// Every task the harness knows, in the order `harness list tasks` prints them.
pub static REGISTRY: &[&dyn Task] = &[
    &glue::COLA,
    &glue::SST2,
    &glue::MRPC,
    &glue::STSB,
    &glue::QQP,
    &glue::MNLI,
    &glue::QNLI,
    &glue::RTE,
    &glue::WNLI,
];

/// Names of all registered tasks.
pub fn task_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|t| t.name()).collect()
}

/// Look a task up by name (case-insensitive; `sst-2` and `SST2` find `sst2`). An unknown name
/// gets an error that suggests the closest registered name.
pub fn find_task(name: &str) -> Result<&'static dyn Task, String> {
    let wanted = normalise(name);
    if let Some(task) = REGISTRY.iter().find(|t| normalise(t.name()) == wanted) {
        return Ok(*task);
    }
    let closest = closest_name(&wanted, &task_names());
    let mut msg = format!("unknown task '{name}'");
    if let Some(c) = closest {
        msg.push_str(&format!(" (did you mean '{c}'?)"));
    }
    msg.push_str(&format!("; known tasks: {}", task_names().join(", ")));
    Err(msg)
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The candidate with the smallest edit distance, if it is close enough to be a plausible typo.
pub fn closest_name<'a>(wanted: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(wanted, &normalise(c)), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn registry_has_no_duplicate_names() {
        let names = task_names();
        let unique: BTreeSet<_> = names.iter().map(|n| normalise(n)).collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "duplicate task names in {names:?}"
        );
    }

    #[test]
    fn registry_covers_glue() {
        for name in [
            "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli",
        ] {
            assert!(find_task(name).is_ok(), "{name} missing");
        }
    }

    #[test]
    fn lookup_is_forgiving_about_case_and_dashes() {
        assert_eq!(find_task("SST-2").unwrap().name(), "sst2");
        assert_eq!(find_task("STS-B").unwrap().name(), "stsb");
    }

    #[test]
    fn unknown_task_suggests_closest() {
        let err = find_task("sts2").err().unwrap();
        assert!(err.contains("unknown task 'sts2'"), "{err}");
        assert!(
            err.contains("did you mean 'sst2'") || err.contains("did you mean 'stsb'"),
            "{err}"
        );
        let err = find_task("mnlii").err().unwrap();
        assert!(err.contains("did you mean 'mnli'"), "{err}");
        let err = find_task("zzzzzzzz").err().unwrap();
        assert!(!err.contains("did you mean"), "{err}");
    }
}
