//! Helpers shared by the command-line test files: the fixture paths, running the binary
//! without network, and reading what a run wrote.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

pub fn harness(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(args);
    // Never reach for the network in tests: an unroutable endpoint fails at once.
    cmd.env("HF_ENDPOINT", "http://127.0.0.1:9");
    // A refused connection is not worth the retries' backoff here.
    cmd.env("HARNESS_HUB_RETRIES", "0");
    cmd.env_remove("HF_HUB_OFFLINE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("harness runs")
}

/// Run the binary, require success (its stderr is the failure message), and return the
/// results.json it wrote in `out`.
pub fn run_results(args: &[&str], envs: &[(&str, &str)], out: &Path) -> Value {
    let o = harness(args, envs);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A finished `harness run`: its output folder and process output.
pub struct Run {
    pub out: PathBuf,
    pub output: Output,
}

impl Run {
    /// Assert the run succeeded and return its results file, checked against the schema.
    pub fn checked_results(&self) -> Value {
        assert!(self.output.status.success(), "{}", self.stderr());
        let res = self.results();
        let schema: Value = serde_json::from_str(reports::schema_check::RESULTS_SCHEMA).unwrap();
        let errors = reports::schema_check::validate(&schema, &res);
        assert!(errors.is_empty(), "{errors:#?}");
        res
    }

    pub fn results(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.out.join("results.json")).unwrap())
            .unwrap()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
}

/// Lay out files exactly as the Hub cache stores a snapshot of a repository:
/// `{models,datasets}--org--name/{refs/main, snapshots/<commit>/...}`, copied from `src`
/// (every file below it).
pub fn fake_hub_snapshot(home: &Path, kind: &str, repo: &str, src: &str) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let root = home
        .join("hub")
        .join(format!("{kind}--{}", repo.replace('/', "--")));
    write(&root, "refs/main", commit);
    let snap = root.join("snapshots").join(commit);
    let src = PathBuf::from(src);
    for entry in walk(&src) {
        let dst = snap.join(entry.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, dst).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
