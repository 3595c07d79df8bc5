//! The environment a result was measured in, so two results files can be compared honestly.
//!
//! Read from `/proc` (CPU model and flags, memory, kernel release). The design card names the
//! `sysinfo` crate; it is not used: on Linux it reads these same files, it does not expose the
//! CPU flags that pick the kernels (those come from `/proc/cpuinfo` here and from
//! `is_x86_feature_detected!` in `kernels::isa`), and where `/proc` is absent the fields fall
//! back to what `std` knows (architecture, OS, cores) and say nothing they cannot measure.

use reports::Environment;

fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// CPU flags that change how fast the kernels run.
const FLAGS_THAT_MATTER: &[&str] = &[
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
];

/// Whether this process's `cpuid` reports `flag` (named as `/proc/cpuinfo` names it), for the
/// flags `std` can ask about. `/proc/cpuinfo` is the kernel's view; a process can be told less
/// (CPUID faulting, as `scripts/avx2-only.sh` does, or a hypervisor), and the kernels choose
/// by what the process is told, so a flag the process does not see is not recorded.
#[cfg(target_arch = "x86_64")]
fn detected(flag: &str) -> Option<bool> {
    use std::is_x86_feature_detected as has;
    Some(match flag {
        "avx" => has!("avx"),
        "avx2" => has!("avx2"),
        "fma" => has!("fma"),
        "avx512f" => has!("avx512f"),
        "avx512bw" => has!("avx512bw"),
        "avx512_vnni" => has!("avx512vnni"),
        "avx512_bf16" => has!("avx512bf16"),
        "avx_vnni" => has!("avxvnni"),
        _ => return None,
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_flag: &str) -> Option<bool> {
    None
}

/// Collect the fingerprint of this machine and build.
pub fn collect(device: &str) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<String> = cpuinfo_field(&cpuinfo, "flags")
        .map(|f| {
            let have: Vec<&str> = f.split_whitespace().collect();
            FLAGS_THAT_MATTER
                .iter()
                .filter(|x| have.contains(x) && detected(x).unwrap_or(true))
                .map(|s| s.to_string())
                .collect()
        })
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = crate::profile::memory::status_field_bytes(&meminfo, "MemTotal");
    let mut target_features = Vec::new();
    if cfg!(target_feature = "avx2") {
        target_features.push("avx2".to_string());
    }
    if cfg!(target_feature = "fma") {
        target_features.push("fma".to_string());
    }
    if cfg!(target_feature = "avx512f") {
        target_features.push("avx512f".to_string());
    }
    Environment {
        cpu_model: cpuinfo_field(&cpuinfo, "model name")
            .unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        cpu_flags: flags,
        logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        threads_used: crate::kernels::pool::threads(),
        memory_bytes,
        os: format!(
            "{} {}",
            std::env::consts::OS,
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        ),
        candle_version: env!("HARNESS_CANDLE_VERSION").to_string(),
        build_profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_string(),
        target_features,
        git_commit: option_env!("HARNESS_GIT_COMMIT")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        device: device.to_string(),
        // Filled in from the models once they are loaded (`Results::note_kernels`).
        kernels: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_names_cpu_cores_and_build() {
        let env = super::collect("cpu");
        assert!(!env.cpu_model.is_empty());
        assert!(env.logical_cores >= 1 && env.threads_used >= 1);
        assert_eq!(
            env.build_profile,
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        // Only flags this process can use are recorded: under `scripts/avx2-only.sh` the
        // AVX-512 flags leave the record though /proc/cpuinfo still lists them.
        for flag in &env.cpu_flags {
            assert_ne!(super::detected(flag), Some(false), "{flag}");
        }
        assert!(
            env.candle_version.starts_with("0."),
            "{}",
            env.candle_version
        );
    }
}
