//! Analytic FLOPs of one encoder forward pass (multiply-adds count as 2), per example:
//! per layer, Q/K/V and output projections `8 s h^2`, attention scores and weighted values
//! `4 s^2 h`, feed-forward `4 s h i`. Embedding lookups, norms and softmax are ignored (under
//! 1% at BERT sizes).

/// Shape of an encoder, as far as FLOPs are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderDims {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
}

/// FLOPs for one sequence of `seq` tokens.
pub fn encoder_flops(d: EncoderDims, seq: usize) -> f64 {
    let (s, h, i) = (seq as f64, d.hidden as f64, d.intermediate as f64);
    d.layers as f64 * (8.0 * s * h * h + 4.0 * s * s * h + 4.0 * s * h * i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bert_base_at_128_tokens() {
        // 12 x (8*128*768^2 + 4*128^2*768 + 4*128*768*3072) = 12 x (603,979,776 + 50,331,648 + 1,207,959,552)
        let f = encoder_flops(
            EncoderDims {
                layers: 12,
                hidden: 768,
                intermediate: 3072,
            },
            128,
        );
        assert_eq!(f, 12.0 * (603_979_776.0 + 50_331_648.0 + 1_207_959_552.0));
        // About 22.3 GFLOPs, the usual figure for BERT-base at 128 tokens.
        assert!((f / 1e9 - 22.35).abs() < 0.05);
    }
}
