//! Memory probes from `/proc/self/status`: resident set size now (`VmRSS`) and its peak
//! (`VmHWM`). Writing `5` to `/proc/self/clear_refs` resets the peak (Linux 4.0 and later), so
//! each phase's peak is measured on its own; where the reset is refused the peak is the
//! process-lifetime peak, and the result says so.

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
    status_field_bytes(&read_status()?, "VmHWM")
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
    fn peak_tracks_a_large_allocation() {
        if peak_rss_bytes().is_none() {
            return; // not Linux
        }
        reset_peak();
        let before = peak_rss_bytes().unwrap();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = peak_rss_bytes().unwrap();
        assert!(after >= before + (60 << 20), "peak {before} -> {after}");
    }
}
