//! Records the git commit the harness is built from, for the results file.
fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=HARNESS_GIT_COMMIT={commit}");
    // `harness --version`: the version and the commit it was built from.
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let line = if commit.is_empty() {
        format!("{version} (commit unknown: not built from a git checkout)")
    } else {
        format!("{version} (commit {})", &commit[..commit.len().min(12)])
    };
    println!("cargo:rustc-env=HARNESS_VERSION_LINE={line}");
    // The candle version actually linked, from the lock file, for the environment fingerprint.
    let lock = std::fs::read_to_string("../Cargo.lock").unwrap_or_default();
    let candle = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HARNESS_CANDLE_VERSION={candle}");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
