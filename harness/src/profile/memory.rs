//! Memory probes from `/proc/self/status`: resident set size now (`VmRSS`) and its peak
//! (`VmHWM`). Writing `5` to `/proc/self/clear_refs` resets the peak (Linux 4.0 and later), so
//! each phase's peak is measured on its own; where the reset is refused the peak is the
//! process-lifetime peak, and the result says so.
//!
//! Where `/proc` is absent (macOS with `--features metal`), the peak comes from
//! `getrusage(RUSAGE_SELF).ru_maxrss`, the process's peak since start (it cannot be reset).
//! The design card names the `sysinfo` crate for this; it is not used because it offers the
//! current RSS only (a peak would need a sampling thread that misses short spikes), and on Linux
//! it reads the same `/proc` files as this module.

use std::path::Path;

/// Read a `kB` field of a `/proc/<pid>/status`-style file, in bytes.
pub fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

fn read_status() -> Option<String> {
    std::fs::read_to_string("/proc/self/status").ok()
}

/// Current resident set size in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_field_bytes(&read_status()?, "VmRSS")
}

/// Peak resident set size in bytes since start or since the last [`reset_peak`].
pub fn peak_rss_bytes() -> Option<u64> {
    peak_rss().map(|(bytes, _)| bytes)
}

/// Peak resident set size in bytes with the counter it was read from: `VmHWM` where `/proc`
/// exists, else `getrusage` (process peak since start).
pub fn peak_rss() -> Option<(u64, &'static str)> {
    match read_status().and_then(|s| status_field_bytes(&s, "VmHWM")) {
        Some(bytes) => Some((bytes, "VmHWM")),
        None => rusage_peak_bytes().map(|bytes| (bytes, "getrusage")),
    }
}

/// `ru_maxrss` of this process in bytes (the field is in bytes on macOS, in KiB elsewhere).
#[cfg(unix)]
pub fn rusage_peak_bytes() -> Option<u64> {
    // SAFETY: getrusage writes one plain-data struct that we own and zero first.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let raw = u64::try_from(usage.ru_maxrss).ok().filter(|&v| v > 0)?;
    Some(if cfg!(target_os = "macos") {
        raw
    } else {
        raw * 1024
    })
}

/// No portable peak counter off Unix; the result reports the figure as missing.
#[cfg(not(unix))]
pub fn rusage_peak_bytes() -> Option<u64> {
    None
}

/// Reset the kernel's peak-RSS counter; `false` when the kernel does not allow it.
pub fn reset_peak() -> bool {
    Path::new("/proc/self/clear_refs").exists()
        && std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let s = "Name:\tharness\nVmHWM:\t  123456 kB\nVmRSS:\t   1000 kB\n";
        assert_eq!(status_field_bytes(s, "VmHWM"), Some(123456 * 1024));
        assert_eq!(status_field_bytes(s, "VmRSS"), Some(1000 * 1024));
        assert_eq!(status_field_bytes(s, "VmSwap"), None);
    }

    #[test]
    fn getrusage_peak_is_at_least_the_current_rss() {
        // The fallback used where /proc is absent; on Linux both counters exist, so they can be
        // checked against each other.
        let (Some(peak), Some(rss)) = (rusage_peak_bytes(), rss_bytes()) else {
            eprintln!("skipped: no getrusage or no /proc on this host");
            return;
        };
        assert!(
            peak >= rss / 2,
            "ru_maxrss {peak} bytes against VmRSS {rss} bytes"
        );
        let block = vec![1u8; 32 << 20];
        std::hint::black_box(&block);
        assert!(rusage_peak_bytes().unwrap() >= 32 << 20);
    }

    /// Set in the child process that [`peak_tracks_a_large_allocation`] starts.
    const ALONE: &str = "HARNESS_MEMORY_TEST_ALONE";

    #[test]
    fn peak_tracks_a_large_allocation() {
        if peak_rss_bytes().is_none() {
            eprintln!("skipped: no /proc/self/status on this host");
            return;
        }
        // The peak is process-wide: other tests of this binary allocate and free on parallel
        // threads, so a block they free after the reset can hide ours (seen once: +40 MiB for a
        // 64 MiB block). The measurement runs in a child process of this test binary that runs
        // this one test alone.
        if std::env::var_os(ALONE).is_some() {
            reset_peak();
            let before = peak_rss_bytes().unwrap();
            let block = vec![1u8; 64 << 20];
            std::hint::black_box(&block);
            let after = peak_rss_bytes().unwrap();
            assert!(after >= before + (60 << 20), "peak {before} -> {after}");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "profile::memory::tests::peak_tracks_a_large_allocation",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(ALONE, "1")
            .output()
            .expect("the test binary runs again");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child run failed:\n{text}");
        // A filter that matched nothing would pass vacuously.
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    }
}
