//! Which kernel multiplies a linear layer on this host, named so that a results file can say
//! what produced its numbers (issue 15).
//!
//! The harness's own kernels ([`sgemm`](super::sgemm) for f32, [`qgemm`](super::qgemm) for
//! Q8_0, Q4_0 and Q4_1) run on every x86-64 CPU with AVX2 and FMA, at the level [`super::isa`]
//! picks (AVX2, AVX-512, VNNI), and sum in a fixed order, so they give the same numbers on
//! every such host at every level. The other block formats run on
//! candle's quantized kernels, which candle 0.11 chooses at run time by CPU features, format,
//! shape and row count (`candle-core/src/quantized/repack_x86.rs`, `select` and `level`):
//!
//! - repacked 16-column tiles for Q4K (every AVX2 level), Q6K (more than one row) and Q8_0
//!   (AVX-VNNI or AVX-512 VNNI only), where `n % 16 == 0` and `k % 256 == 0`; they round the
//!   activations to Q8K blocks (256 values, one scale). For Q4K and Q6K that is the rounding
//!   ggml's own dot product uses; for Q8_0 it is not (ggml rounds to Q8_0, 32 values a scale),
//!   which is why the harness never hands Q8_0 to candle where its integer GEMM runs;
//! - AMX tiles for Q4K from 32 rows on hosts with AMX;
//! - otherwise ggml's dot products, one (row, column) pair at a time, AVX2 or generic.
//!
//! The functions here mirror that choice (including candle's `MISTRALRS_FORCE_AVX2` and
//! `MISTRALRS_FORCE_AVXVNNI` switches), so a layer can name its kernel without running it.
//! A test pins the mirror to candle's behaviour on the host at hand.

use candle_core::quantized::GgmlDType;

use super::isa::{self, F32Level, IntLevel};

/// candle's x86 tier for its repacked quantized kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandleX86Level {
    Avx512Vnni,
    AvxVnni,
    Avx2,
}

/// candle's tier on this process, as `repack_x86::level` computes it (once per process; the
/// environment variables are read then).
pub fn candle_x86_level() -> Option<CandleX86Level> {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Option<CandleX86Level>> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let force = |v: &str| std::env::var(v).as_deref() == Ok("1");
            let (avx2_only, vnni) = (
                force("MISTRALRS_FORCE_AVX2"),
                force("MISTRALRS_FORCE_AVXVNNI"),
            );
            let has = |f: bool| !avx2_only && f;
            if has(!vnni
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vnni"))
            {
                return Some(CandleX86Level::Avx512Vnni);
            }
            if has(vnni || std::is_x86_feature_detected!("avxvnni"))
                && std::is_x86_feature_detected!("avx2")
            {
                return Some(CandleX86Level::AvxVnni);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Some(CandleX86Level::Avx2);
            }
            None
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    })
}

/// Whether the CPU reports AMX tiles with int8 (CPUID leaf 7, EDX bits 24 and 25), as candle
/// checks before it asks Linux for the tile state.
fn cpu_has_amx_int8() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let info = core::arch::x86_64::__cpuid_count(7, 0);
        info.edx & (1 << 25) != 0 && info.edx & (1 << 24) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The kernel that multiplies a layer's weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// The harness's packed f32 GEMM ([`sgemm`](super::sgemm)) at a level.
    HarnessSgemm(F32Level),
    /// The harness's integer GEMM for Q8_0 / Q4_0 / Q4_1 ([`qgemm`](super::qgemm)) at a level.
    HarnessQgemm(IntLevel),
    /// candle's f32 matmul (the `gemm` crate).
    CandleGemm,
    /// candle's repacked tiles at a tier.
    CandleRepack(CandleX86Level),
    /// candle's AMX tiles (Q4K).
    CandleAmx,
    /// ggml's dot products as candle ports them, with AVX2 or generic code.
    CandleGgmlDot { avx2: bool },
    /// The blocks dequantized for the call and multiplied on the f32 GEMM (the harness's
    /// where it runs, else candle's), the activations rounded as ggml's dot product would
    /// first.
    Dequantized,
    /// A GPU backend's kernels.
    Device,
}

impl Kernel {
    /// A stable name for results files.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::HarnessSgemm(F32Level::Avx2) => "harness-sgemm-avx2",
            Kernel::HarnessSgemm(F32Level::Avx512) => "harness-sgemm-avx512",
            Kernel::HarnessQgemm(IntLevel::Avx2) => "harness-qgemm-avx2",
            Kernel::HarnessQgemm(IntLevel::AvxVnni) => "harness-qgemm-avxvnni",
            Kernel::HarnessQgemm(IntLevel::Avx512Vnni) => "harness-qgemm-avx512vnni",
            Kernel::CandleGemm => "candle-gemm",
            Kernel::CandleRepack(CandleX86Level::Avx512Vnni) => "candle-repack-avx512vnni",
            Kernel::CandleRepack(CandleX86Level::AvxVnni) => "candle-repack-avxvnni",
            Kernel::CandleRepack(CandleX86Level::Avx2) => "candle-repack-avx2",
            Kernel::CandleAmx => "candle-amx",
            Kernel::CandleGgmlDot { avx2: true } => "candle-ggml-avx2",
            Kernel::CandleGgmlDot { avx2: false } => "candle-ggml-generic",
            Kernel::Dequantized => match isa::f32_level() {
                Some(F32Level::Avx2) => "dequantized+harness-sgemm-avx2",
                Some(F32Level::Avx512) => "dequantized+harness-sgemm-avx512",
                None => "dequantized+candle-gemm",
            },
            Kernel::Device => "candle-device",
        }
    }
}

/// The block format the kernel rounds the activations to: ggml's dot product by `format`
/// (the repacked and AMX tiles always use Q8K), Q8_0 for the harness's integer GEMM.
pub fn activation_blocks(format: GgmlDType, kernel: Kernel) -> Option<&'static str> {
    use GgmlDType as D;
    match (kernel, format) {
        (Kernel::HarnessSgemm(_) | Kernel::CandleGemm | Kernel::Device, _) | (_, D::F32) => None,
        (Kernel::CandleRepack(_) | Kernel::CandleAmx, _) => Some("q8k"),
        // The harness's integer GEMM rounds to Q8_0 for every format it takes (Q4_1's
        // block sums stay in f32 where ggml's Q8_1 keeps them in f16).
        (Kernel::HarnessQgemm(_), _) => Some("q8_0"),
        (_, D::Q4_1 | D::Q5_1) => Some("q8_1"),
        (_, D::Q8_0 | D::Q4_0 | D::Q5_0) => Some("q8_0"),
        _ => Some("q8k"),
    }
}

/// The kernel candle takes for a `(rows, k) x (n, k)ᵀ` product with a `format` weight on the
/// CPU (`repack::try_matmul_f32`, then the ggml dot product).
pub fn candle_quantized_kernel(format: GgmlDType, rows: usize, n: usize, k: usize) -> Kernel {
    use GgmlDType as D;
    let level = candle_x86_level();
    let shape_ok = k > 0 && n.is_multiple_of(16) && k.is_multiple_of(256);
    let repacks = match (level, format) {
        (None, _) => false,
        (Some(_), D::Q4K) => true,
        (Some(_), D::Q6K) => rows > 1,
        (Some(l), D::Q8_0) => l != CandleX86Level::Avx2,
        _ => false,
    };
    match level {
        Some(l) if repacks && shape_ok => {
            // candle's AMX needs its AVX-512 VNNI tier as well as the tiles.
            if format == D::Q4K
                && rows >= 32
                && l == CandleX86Level::Avx512Vnni
                && cpu_has_amx_int8()
            {
                Kernel::CandleAmx
            } else {
                Kernel::CandleRepack(l)
            }
        }
        // candle's ggml dot products take their AVX2 code on the same check as the packed
        // GEMMs (AVX2 and FMA at run time).
        _ => Kernel::CandleGgmlDot {
            avx2: super::sgemm::PackedWeight::supported(),
        },
    }
}

/// One format's kernels by row count, e.g. `candle-ggml-avx2 (1 row), candle-repack-avx2
/// (2+ rows); activations q8k`: `kernel_at` answers for a row count, and the row counts where
/// the harness's or candle's choice can change (1, 2, 4, 32) are asked.
pub fn describe(format: GgmlDType, kernel_at: impl Fn(usize) -> Kernel) -> String {
    let points = [1usize, 2, 4, 32];
    let mut spans: Vec<(usize, Kernel)> = Vec::new();
    for &rows in &points {
        let k = kernel_at(rows);
        if spans.last().map(|s| s.1) != Some(k) {
            spans.push((rows, k));
        }
    }
    let mut parts = Vec::new();
    for (i, &(from, k)) in spans.iter().enumerate() {
        let rows = match spans.get(i + 1) {
            _ if spans.len() == 1 => String::new(),
            Some(&(next, _)) if next == from + 1 => format!(" ({from} row{})", plural(from)),
            Some(&(next, _)) => format!(" ({from}-{} rows)", next - 1),
            None => format!(" ({from}+ rows)"),
        };
        let act = activation_blocks(format, k)
            .map(|a| format!(", activations {a}"))
            .unwrap_or_default();
        parts.push(format!("{}{rows}{act}", k.name()));
    }
    parts.join("; ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_dependent_choice_is_described_by_spans() {
        let d = describe(GgmlDType::Q6K, |rows| {
            if rows > 1 {
                Kernel::CandleRepack(CandleX86Level::Avx2)
            } else {
                Kernel::CandleGgmlDot { avx2: true }
            }
        });
        assert_eq!(
            d,
            "candle-ggml-avx2 (1 row), activations q8k; candle-repack-avx2 (2+ rows), activations q8k"
        );
        let d = describe(GgmlDType::Q4_1, |rows| {
            if rows >= 4 {
                Kernel::Dequantized
            } else {
                Kernel::CandleGgmlDot { avx2: false }
            }
        });
        assert_eq!(
            d,
            format!(
                "candle-ggml-generic (1-3 rows), activations q8_1; {} (4+ rows), activations q8_1",
                Kernel::Dequantized.name()
            )
        );
        assert_eq!(
            describe(GgmlDType::F32, |_| Kernel::HarnessSgemm(F32Level::Avx2)),
            "harness-sgemm-avx2"
        );
    }

    #[test]
    fn candles_choice_follows_shape_and_rows() {
        // Shapes off candle's tiles (n % 16, k % 256) never repack, on any host.
        for f in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0] {
            assert!(matches!(
                candle_quantized_kernel(f, 8, 17, 256),
                Kernel::CandleGgmlDot { .. }
            ));
            assert!(matches!(
                candle_quantized_kernel(f, 8, 16, 96),
                Kernel::CandleGgmlDot { .. }
            ));
        }
        // Q6K at one row keeps the compact weights; Q5K is never repacked.
        assert!(matches!(
            candle_quantized_kernel(GgmlDType::Q6K, 1, 64, 256),
            Kernel::CandleGgmlDot { .. }
        ));
        assert!(matches!(
            candle_quantized_kernel(GgmlDType::Q5K, 8, 64, 256),
            Kernel::CandleGgmlDot { .. }
        ));
        // Which tier the tiled shapes get is the host's; the test says which it checked.
        let q8 = candle_quantized_kernel(GgmlDType::Q8_0, 8, 64, 256);
        match candle_x86_level() {
            Some(CandleX86Level::Avx512Vnni) | Some(CandleX86Level::AvxVnni) => {
                assert!(matches!(q8, Kernel::CandleRepack(_)), "{q8:?}")
            }
            _ => assert!(matches!(q8, Kernel::CandleGgmlDot { .. }), "{q8:?}"),
        }
        eprintln!("candle's x86 tier on this host: {:?}", candle_x86_level());
    }
}
