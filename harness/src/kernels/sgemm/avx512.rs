//! The AVX-512F microkernel of the packed f32 GEMM (issue 16): a tile of up to [`MR`] = 12
//! rows by two 16-column panels, 24 zmm accumulators, the row values broadcast from the
//! input rows where they are straight into the FMAs, and masked loads and stores for the
//! columns past `n`.
//!
//! Why this shape: with 32 vector registers a 12 x 32 tile does 24 FMAs for every two weight
//! loads and twelve broadcasts, where the AVX2 tile (6 x 16 in 16 registers) does 12 for two
//! and six; the FMAs are twice as wide too. The panels and the bias are the AVX2 kernel's
//! layout, and every output is `b[j]` followed by one FMA per `k` in increasing `k`, exactly
//! as there, so the two levels give the same bits (tested in `super::tests`).

use super::Tile;
#[cfg(target_arch = "x86_64")]
use super::{Init, NR};

/// Input rows per microkernel call.
pub const MR: usize = 12;

/// Run the kernel for a tile of `r` rows (1..=12) and `t.panels` panels (1 or 2).
///
/// # Safety
/// The CPU has AVX-512F; the tile's pointers cover what it states.
pub(super) unsafe fn tile(r: usize, t: &Tile) {
    macro_rules! rows {
        ($p:literal) => {
            match r {
                12 => kernel::<12, $p>(t),
                11 => kernel::<11, $p>(t),
                10 => kernel::<10, $p>(t),
                9 => kernel::<9, $p>(t),
                8 => kernel::<8, $p>(t),
                7 => kernel::<7, $p>(t),
                6 => kernel::<6, $p>(t),
                5 => kernel::<5, $p>(t),
                4 => kernel::<4, $p>(t),
                3 => kernel::<3, $p>(t),
                2 => kernel::<2, $p>(t),
                _ => kernel::<1, $p>(t),
            }
        };
    }
    if t.panels == 2 {
        rows!(2)
    } else {
        rows!(1)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const P: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    // Output rows of the next tile: up to two 64-byte lines a row.
    for i in 0..t.next.1 {
        let c = t.next.0.wrapping_add(i * t.ldc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(c);
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(P * NR * 4 - 1));
    }
    // One mask per panel: the columns of the tile that exist.
    let mut masks = [0 as __mmask16; P];
    for (s, m) in masks.iter_mut().enumerate() {
        let cols = t.width.saturating_sub(s * NR).min(NR);
        *m = ((1u32 << cols) - 1) as __mmask16;
    }
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    match t.init {
        Init::Zero => {}
        Init::Bias => {
            let mut b = [_mm512_setzero_ps(); P];
            for (s, v) in b.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(t.bias.as_ptr().add(s * NR));
            }
            acc.iter_mut().for_each(|row| *row = b);
        }
        Init::Accumulate => {
            for (i, row) in acc.iter_mut().enumerate() {
                for (s, v) in row.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(masks[s], t.c.add(i * t.ldc + s * NR));
                }
            }
        }
    }
    let (mut a, mut b) = (t.a, t.b);
    let mut nb = if t.next_b.is_null() { t.b } else { t.next_b };
    for _ in 0..t.kc {
        // As in the AVX2 kernel: each row is one sequential stream for the hardware
        // prefetchers, and the first tile of a panel pair pulls in the next pair's weights
        // (a line per panel per step).
        for s in 0..P {
            _mm_prefetch::<_MM_HINT_T0>(nb.wrapping_add(s * t.panel_stride) as *const i8);
        }
        nb = nb.wrapping_add(NR);
        let mut w = [_mm512_setzero_ps(); P];
        for (s, v) in w.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(b.add(s * t.panel_stride));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(i * t.lda));
            for (v, &ws) in row.iter_mut().zip(&w) {
                *v = _mm512_fmadd_ps(av, ws, *v);
            }
        }
        a = a.add(1);
        b = b.add(NR);
    }
    if t.gelu {
        acc = super::super::ops::gelu_on_zmm_tile(acc);
    }
    for (i, row) in acc.iter().enumerate() {
        for (s, &v) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(t.c.add(i * t.ldc + s * NR), masks[s], v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize, const P: usize>(_: &Tile) {
    unreachable!("the AVX-512 level is never chosen off x86-64")
}
