//! Log lines on stderr through `tracing`: off but for warnings by default (the run's progress
//! lines are not logs), `-v` info, `-vv` debug, `-vvv` trace for the harness's own crates;
//! `RUST_LOG` (an `EnvFilter` directive such as `harness=debug,tasks=trace`) overrides both.

use tracing_subscriber::EnvFilter;

/// The filter `-v` repeated `verbose` times asks for, unless `rust_log` (the value of
/// `RUST_LOG`) gives one.
pub fn filter(verbose: u8, rust_log: Option<&str>) -> String {
    if let Some(directives) = rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        return directives.to_string();
    }
    let level = match verbose {
        0 => return "warn".into(),
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    format!("warn,harness={level},tasks={level},reports={level}")
}

/// Install the stderr subscriber. A malformed `RUST_LOG` falls back to warnings, with a note.
pub fn init(verbose: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let wanted = filter(verbose, rust_log.as_deref());
    let (env_filter, bad) = match EnvFilter::try_new(&wanted) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("warn"), Some(e)),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!("RUST_LOG={wanted:?} is not a valid filter ({e}); logging warnings only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_and_rust_log_pick_the_filter() {
        assert_eq!(filter(0, None), "warn");
        assert_eq!(filter(1, None), "warn,harness=info,tasks=info,reports=info");
        assert_eq!(
            filter(2, None),
            "warn,harness=debug,tasks=debug,reports=debug"
        );
        assert_eq!(
            filter(5, None),
            "warn,harness=trace,tasks=trace,reports=trace"
        );
        assert_eq!(
            filter(2, Some("harness::models=trace")),
            "harness::models=trace"
        );
        // An empty RUST_LOG is no setting.
        assert_eq!(filter(0, Some("  ")), "warn");
    }
}
