//! Which instruction-set level the harness's own kernels run at on this host (issue 16),
//! chosen once per process at run time from the CPU's features, never at build time.
//!
//! - f32 GEMM ([`sgemm`](super::sgemm)): AVX-512F (12 x 32 tiles in zmm registers) where the
//!   CPU has it, else AVX2 + FMA (6 x 16 tiles). Both add the same products in the same order
//!   (one FMA per `k`, increasing), so they give the same bits (tested).
//! - integer GEMM ([`qgemm`](super::qgemm)): `vpdpbusd` with AVX-512 VNNI (16 columns a
//!   register) or AVX-VNNI (8 a register), else AVX2 (`vpmaddwd` on i16 for Q8_0, `vpmaddubsw`
//!   on bytes for Q4_0 / Q4_1). All three sum the same exact integer block products, so they
//!   give the same bits too (tested).
//! - attention heads (`attention`): zmm registers wherever the f32 GEMM is at AVX-512, for
//!   heads of any length; else AVX2 up to 32 tokens and the `gemm` crate past that. All give
//!   the same bits (tested), but for the `gemm` crate under 17 tokens, which only heads of
//!   other widths than 32 and 64 reach on AVX2 hosts.
//!
//! `HARNESS_KERNELS` caps the levels, to measure one level against another on one machine or
//! to rule a kernel out when chasing a difference: `avx2` holds both GEMMs and the heads at
//! the AVX2 level; `avxvnni` runs what a host with AVX-VNNI and no AVX-512 runs (Intel's
//! client cores since Alder Lake): the integer GEMM at AVX-VNNI, the f32 GEMM and the heads
//! at AVX2 (an error where the CPU lacks AVX-VNNI). Any other value is an error before any
//! work, not a silent default.

use std::sync::OnceLock;

/// The level of the f32 GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Level {
    Avx512,
    Avx2,
}

/// The level of the integer GEMM for Q8_0 / Q4_0 / Q4_1 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntLevel {
    Avx512Vnni,
    AvxVnni,
    Avx2,
}

/// What the host offers, read once.
#[derive(Debug, Clone, Copy)]
struct Features {
    avx2_fma: bool,
    avx512f: bool,
    avx512_vnni: bool,
    avx_vnni: bool,
}

fn features() -> Features {
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        Features {
            avx2_fma: has!("avx2") && has!("fma"),
            avx512f: has!("avx512f"),
            avx512_vnni: has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
            avx_vnni: has!("avxvnni") && has!("avx2"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    Features {
        avx2_fma: false,
        avx512f: false,
        avx512_vnni: false,
        avx_vnni: false,
    }
}

/// A cap on the levels (`HARNESS_KERNELS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    /// Everything at AVX2.
    Avx2,
    /// The integer GEMM at AVX-VNNI, the rest at AVX2.
    AvxVnni,
}

/// A value of `HARNESS_KERNELS` read: `None` for no cap (unset or empty), else the cap, or an
/// error naming the choices.
fn parse_cap(value: Option<&str>) -> Result<Option<Cap>, String> {
    match value {
        None | Some("") => Ok(None),
        Some("avx2") => Ok(Some(Cap::Avx2)),
        Some("avxvnni") => Ok(Some(Cap::AvxVnni)),
        Some(other) => Err(format!(
            "HARNESS_KERNELS={other:?} is not a kernel level: use `avx2` or `avxvnni` (or \
             leave it unset for the best level this CPU has)"
        )),
    }
}

/// A cap checked against what the CPU has: asking for AVX-VNNI on a CPU without it is an
/// error, not a quiet fall back to AVX2 (the point of asking is to time that kernel).
fn check_cap(cap: Option<Cap>, f: Features) -> Result<Option<Cap>, String> {
    if cap == Some(Cap::AvxVnni) && !(f.avx2_fma && f.avx_vnni) {
        return Err(
            "HARNESS_KERNELS=\"avxvnni\": this CPU has no AVX-VNNI (`grep -o avx_vnni \
             /proc/cpuinfo` finds nothing); use `avx2`, or leave it unset"
                .to_string(),
        );
    }
    Ok(cap)
}

/// Check `HARNESS_KERNELS` up front, so a bad value is a clear error before any work.
pub fn check_env() -> Result<(), String> {
    let cap = parse_cap(std::env::var("HARNESS_KERNELS").ok().as_deref())?;
    check_cap(cap, features()).map(|_| ())
}

/// `HARNESS_KERNELS` as the kernels read it, once (the CLI has checked it by then).
fn cap() -> Option<Cap> {
    static CAP: OnceLock<Option<Cap>> = OnceLock::new();
    *CAP.get_or_init(|| {
        parse_cap(std::env::var("HARNESS_KERNELS").ok().as_deref())
            .and_then(|cap| check_cap(cap, features()))
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The f32 GEMM's level on this process, `None` where the CPU lacks AVX2 + FMA (layers then
/// stay on candle's matmul).
pub fn f32_level() -> Option<F32Level> {
    static LEVEL: OnceLock<Option<F32Level>> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let f = features();
        if !f.avx2_fma {
            None
        } else if f.avx512f && cap().is_none() {
            Some(F32Level::Avx512)
        } else {
            Some(F32Level::Avx2)
        }
    })
}

/// The integer GEMM's level on this process, `None` where the CPU lacks AVX2 + FMA.
pub fn int_level() -> Option<IntLevel> {
    static LEVEL: OnceLock<Option<IntLevel>> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let f = features();
        if !f.avx2_fma {
            None
        } else if cap() == Some(Cap::Avx2) {
            Some(IntLevel::Avx2)
        } else if cap() == Some(Cap::AvxVnni) {
            Some(IntLevel::AvxVnni)
        } else if f.avx512_vnni {
            Some(IntLevel::Avx512Vnni)
        } else if f.avx_vnni {
            Some(IntLevel::AvxVnni)
        } else {
            Some(IntLevel::Avx2)
        }
    })
}

impl F32Level {
    /// Whether this CPU can run kernels of this level (tests build weights for each level
    /// the host has, whatever the process-wide choice).
    pub fn available(self) -> bool {
        let f = features();
        match self {
            F32Level::Avx2 => f.avx2_fma,
            F32Level::Avx512 => f.avx2_fma && f.avx512f,
        }
    }

    /// The suffix of the kernel's name in results files.
    pub fn name(self) -> &'static str {
        match self {
            F32Level::Avx512 => "avx512",
            F32Level::Avx2 => "avx2",
        }
    }
}

impl IntLevel {
    /// Whether this CPU can run kernels of this level.
    pub fn available(self) -> bool {
        let f = features();
        match self {
            IntLevel::Avx2 => f.avx2_fma,
            IntLevel::AvxVnni => f.avx2_fma && f.avx_vnni,
            IntLevel::Avx512Vnni => f.avx2_fma && f.avx512_vnni,
        }
    }

    /// The suffix of the kernel's name in results files.
    pub fn name(self) -> &'static str {
        match self {
            IntLevel::Avx512Vnni => "avx512vnni",
            IntLevel::AvxVnni => "avxvnni",
            IntLevel::Avx2 => "avx2",
        }
    }
}

/// For kernel tests: whether this CPU lacks a level's features, in which case the test says on
/// stderr that it was skipped for that level (no silent pass).
#[cfg(test)]
pub(crate) fn skip(test: &str, level: &str, available: bool) -> bool {
    if !available {
        eprintln!("skipped: {test} at {level}: this CPU does not have it");
    }
    !available
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_levels_are_ones_the_cpu_has() {
        if let Some(l) = f32_level() {
            assert!(l.available(), "{l:?}");
        }
        if let Some(l) = int_level() {
            assert!(l.available(), "{l:?}");
        }
        // AVX2 is the floor: without it there is no level at all.
        assert_eq!(f32_level().is_some(), F32Level::Avx2.available());
        assert_eq!(int_level().is_some(), IntLevel::Avx2.available());
        eprintln!(
            "kernel levels on this host: f32 {:?}, integer {:?}",
            f32_level(),
            int_level()
        );
    }

    #[test]
    fn an_unknown_kernels_setting_is_refused_with_the_choices() {
        assert_eq!(parse_cap(None), Ok(None));
        assert_eq!(parse_cap(Some("")), Ok(None));
        assert_eq!(parse_cap(Some("avx2")), Ok(Some(Cap::Avx2)));
        assert_eq!(parse_cap(Some("avxvnni")), Ok(Some(Cap::AvxVnni)));
        let err = parse_cap(Some("avx1024")).unwrap_err();
        assert!(
            err.contains("\"avx1024\"") && err.contains("`avx2` or `avxvnni`"),
            "{err}"
        );
    }

    #[test]
    fn avx_vnni_is_refused_on_a_cpu_without_it_and_taken_on_one_with_it() {
        let without = Features {
            avx2_fma: true,
            avx512f: true,
            avx512_vnni: true,
            avx_vnni: false,
        };
        let err = check_cap(Some(Cap::AvxVnni), without).unwrap_err();
        assert!(err.contains("this CPU has no AVX-VNNI"), "{err}");
        // The AVX2 cap and no cap need nothing past AVX2.
        assert_eq!(check_cap(Some(Cap::Avx2), without), Ok(Some(Cap::Avx2)));
        assert_eq!(check_cap(None, without), Ok(None));
        let with = Features {
            avx_vnni: true,
            ..without
        };
        assert_eq!(check_cap(Some(Cap::AvxVnni), with), Ok(Some(Cap::AvxVnni)));
    }
}
