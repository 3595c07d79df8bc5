//! Rotary position embedding frequencies: the RoPE types of transformers'
//! `modeling_rope_utils.py`
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/modeling_rope_utils.py>)
//! and llama.cpp's per-frequency factors (`rope_freqs.weight` in GGUF files).
//!
//! A [`Rope`] is read from one settings object (`rope_parameters`, or transformers 4's
//! `rope_scaling`) and turns into the inverse frequencies of each rotated pair plus an
//! attention factor that multiplies cos and sin (1 for all but `yarn` and `longrope`):
//! - `default`: `1 / theta^(2i/d)`;
//! - `linear`: divided by `factor`;
//! - `llama3` (Llama 3.1 / 3.2 / 3.3): long wavelengths divided by `factor`, short ones kept,
//!   the band between blended;
//! - `yarn` (Qwen2.5 long context, DeepSeek): interpolation and extrapolation blended by a
//!   ramp over the dimensions, cos and sin scaled by `0.1 ln(factor) + 1`;
//! - `longrope` (Phi-3 128k, Phi-3.5, Phi-4-mini): per-frequency `short_factor` up to
//!   `original_max_position_embeddings` positions and `long_factor` past it, chosen per forward
//!   pass by its last position as transformers' dynamic update does;
//! - per-frequency divisors from a GGUF file (llama.cpp's converter writes Llama 3's scaling so).
//!
//! Other types (`dynamic` NTK among them) are refused by name rather than run wrong.

use candle_core::Result;

/// How the frequencies of one kind of layer are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// `default`.
    None,
    /// `linear`: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// `llama3`.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: f64,
    },
    /// `yarn`.
    Yarn {
        factor: f64,
        original_max: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    /// `longrope`: one factor per rotated pair for short and for long sequences.
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original_max: usize,
        attention_factor: f64,
    },
    /// Per-pair divisors of the frequencies (GGUF `rope_freqs.weight`).
    Divisors(Vec<f32>),
}

/// RoPE settings of one kind of layer: base and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// Limits the model itself states, which some scalings read when their own object does not.
#[derive(Debug, Clone, Copy, Default)]
pub struct PositionLimits {
    /// `max_position_embeddings`.
    pub max: Option<usize>,
    /// Phi-3's top-level `original_max_position_embeddings`.
    pub original_max: Option<usize>,
}

fn number(v: &serde_json::Value, key: &str) -> Option<f64> {
    v.get(key).and_then(|x| x.as_f64())
}

fn need(v: &serde_json::Value, kind: &str, key: &str) -> Result<f64> {
    number(v, key).ok_or_else(|| {
        candle_core::Error::msg(format!(
            "{kind} RoPE scaling without '{key}' in its settings"
        ))
    })
}

/// yarn's and longrope's default attention factor (`get_mscale` in transformers).
fn mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

impl Rope {
    /// Unscaled RoPE with base `theta`.
    pub fn plain(theta: f64) -> Rope {
        Rope {
            theta,
            scaling: RopeScaling::None,
        }
    }

    /// One settings object (`rope_parameters`, or transformers 4's `rope_scaling`) on top of
    /// `base`: its `rope_theta` when it has one, and its scaling (`rope_type`, or the old key
    /// `type`). A missing or null object keeps `base`.
    pub fn from_settings(
        v: Option<&serde_json::Value>,
        base: &Rope,
        limits: PositionLimits,
    ) -> Result<Rope> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(base.clone());
        };
        let theta = number(v, "rope_theta").unwrap_or(base.theta);
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        // transformers' `standardize_rope_params`: a top-level original length (Phi-3) wins
        // over the settings' own, and the model's length stands in for a missing one.
        let original_max = |kind: &str| -> Result<f64> {
            limits
                .original_max
                .map(|m| m as f64)
                .or(number(v, "original_max_position_embeddings"))
                .or(limits.max.map(|m| m as f64))
                .ok_or_else(|| {
                    candle_core::Error::msg(format!(
                        "{kind} RoPE scaling without 'original_max_position_embeddings'"
                    ))
                })
        };
        let scaling = match kind {
            "default" => base.scaling.clone(),
            "linear" => RopeScaling::Linear {
                factor: need(v, "linear", "factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need(v, "llama3", "factor")?,
                low_freq_factor: need(v, "llama3", "low_freq_factor")?,
                high_freq_factor: need(v, "llama3", "high_freq_factor")?,
                original_max: original_max("llama3")?,
            },
            "yarn" => {
                let original = original_max("yarn")?;
                // Without a factor, the ratio of the model's length to the original one.
                let factor = match (number(v, "factor"), limits.max) {
                    (Some(f), _) => f,
                    (None, Some(max)) => max as f64 / original,
                    (None, None) => need(v, "yarn", "factor")?,
                };
                let attention_factor = match number(v, "attention_factor") {
                    Some(a) => a,
                    None => match (number(v, "mscale"), number(v, "mscale_all_dim")) {
                        (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                            mscale(factor, m) / mscale(factor, all)
                        }
                        _ => mscale(factor, 1.0),
                    },
                };
                RopeScaling::Yarn {
                    factor,
                    original_max: original,
                    beta_fast: number(v, "beta_fast").unwrap_or(32.0),
                    beta_slow: number(v, "beta_slow").unwrap_or(1.0),
                    attention_factor,
                    truncate: v.get("truncate").and_then(|t| t.as_bool()).unwrap_or(true),
                }
            }
            "longrope" => {
                let list = |key: &str| -> Result<Vec<f64>> {
                    v.get(key)
                        .and_then(|l| l.as_array())
                        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                        .ok_or_else(|| {
                            candle_core::Error::msg(format!(
                                "longrope RoPE scaling without '{key}' in its settings"
                            ))
                        })
                };
                // Phi-3 gives no factor: attention is scaled by the ratio of the extended
                // length to the original one.
                let original = original_max("longrope")?;
                let factor = match (number(v, "factor"), limits.max) {
                    (Some(f), _) => f,
                    (None, Some(max)) => max as f64 / original,
                    (None, None) => 1.0,
                };
                let original = original as usize;
                let attention_factor = number(v, "attention_factor").unwrap_or(if factor <= 1.0 {
                    1.0
                } else {
                    (1.0 + factor.ln() / (original as f64).ln()).sqrt()
                });
                RopeScaling::LongRope {
                    short: list("short_factor")?,
                    long: list("long_factor")?,
                    original_max: original,
                    attention_factor,
                }
            }
            other => candle_core::bail!(
                "rope_type '{other}' is not supported (default, linear, llama3, yarn and longrope are)"
            ),
        };
        Ok(Rope { theta, scaling })
    }

    /// The inverse frequency of each of the `dim / 2` rotated pairs, and the factor cos and sin
    /// are multiplied by, for a forward pass whose positions end before `seq_end`.
    pub fn frequencies(&self, dim: usize, seq_end: usize) -> Result<(Vec<f32>, f32)> {
        let half = dim / 2;
        // transformers computes the base frequencies in f32: `base ** (arange(0, dim, 2) / dim)`.
        let exponent = |i: usize| (2 * i) as f32 / dim as f32;
        let pos_freq = |i: usize| (self.theta as f32).powf(exponent(i));
        let base: Vec<f32> = (0..half).map(|i| 1.0 / pos_freq(i)).collect();
        let per_pair = |what: &str, n: usize| -> Result<()> {
            if n != half {
                candle_core::bail!(
                    "{what} has {n} entries, but RoPE rotates {half} pairs of dimensions"
                );
            }
            Ok(())
        };
        Ok(match &self.scaling {
            RopeScaling::None => (base, 1.0),
            RopeScaling::Linear { factor } => {
                (base.iter().map(|f| f / *factor as f32).collect(), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max,
            } => {
                // `_compute_llama3_parameters`, in f64 then rounded as transformers' tensor ops
                // round (its inputs are f32, so the rounding differs by at most an ulp).
                let (factor, low, high, old) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                    *original_max as f32,
                );
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                let freqs = base
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                (freqs, 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => {
                // `_compute_yarn_parameters`.
                let d = dim as f64;
                let correction_dim = |rotations: f64| {
                    d * (original_max / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
                if low == high {
                    high += 0.001;
                }
                let freqs = (0..half)
                    .map(|i| {
                        let ramp =
                            ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        let p = pos_freq(i);
                        let interpolation = 1.0 / (*factor as f32 * p);
                        interpolation * (1.0 - extrapolation) + (1.0 / p) * extrapolation
                    })
                    .collect();
                (freqs, *attention_factor as f32)
            }
            RopeScaling::LongRope {
                short,
                long,
                original_max,
                attention_factor,
            } => {
                let ext = if seq_end > *original_max { long } else { short };
                per_pair("longrope's factor list", ext.len())?;
                let freqs = (0..half)
                    .map(|i| 1.0 / (ext[i] as f32 * pos_freq(i)))
                    .collect();
                (freqs, *attention_factor as f32)
            }
            RopeScaling::Divisors(div) => {
                per_pair("rope_freqs.weight", div.len())?;
                (base.iter().zip(div).map(|(f, d)| f / d).collect(), 1.0)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: serde_json::Value, limits: PositionLimits) -> Result<Rope> {
        Rope::from_settings(Some(&v), &Rope::plain(10000.0), limits)
    }

    #[test]
    fn default_and_linear_frequencies() {
        let (f, a) = Rope::plain(10000.0).frequencies(8, 10).unwrap();
        let want = [1.0, 0.1, 0.01, 0.001];
        for (got, want) in f.iter().zip(want) {
            assert!(
                (got - want).abs() < 1e-6 * want.max(1e-3),
                "{got} vs {want}"
            );
        }
        assert_eq!(a, 1.0);
        let lin = read(
            serde_json::json!({"type": "linear", "factor": 4.0}),
            Default::default(),
        )
        .unwrap();
        let (g, _) = lin.frequencies(8, 10).unwrap();
        assert!((g[1] - 0.025).abs() < 1e-7);
    }

    #[test]
    fn llama3_keeps_short_wavelengths_divides_long_ones_and_blends_between() {
        // Wavelengths 2 pi / f at theta 10000, d 8: 6.28, 62.8, 628, 6283. With an original
        // length of 64, low factor 1 and high factor 4: below 16 kept, above 64 divided by 8,
        // between blended with smooth = (64 / wavelen - 1) / 3.
        let r = read(
            serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
            Default::default(),
        )
        .unwrap();
        let (f, a) = r.frequencies(8, 10).unwrap();
        assert_eq!(a, 1.0);
        assert!((f[0] - 1.0).abs() < 1e-6, "{}", f[0]);
        let wavelen = 2.0 * std::f64::consts::PI / 0.1;
        let smooth = (64.0 / wavelen - 1.0) / 3.0;
        let blended = (1.0 - smooth) * 0.1 / 8.0 + smooth * 0.1;
        assert!(
            (f[1] as f64 - blended).abs() < 1e-6,
            "{} vs {blended}",
            f[1]
        );
        assert!((f[2] as f64 - 0.01 / 8.0).abs() < 1e-8, "{}", f[2]);
        assert!((f[3] as f64 - 0.001 / 8.0).abs() < 1e-9, "{}", f[3]);
    }

    #[test]
    fn yarn_blends_by_its_ramp_and_scales_attention() {
        let r = read(
            serde_json::json!({"rope_type": "yarn", "factor": 4.0,
                "original_max_position_embeddings": 64}),
            Default::default(),
        )
        .unwrap();
        let (f, a) = r.frequencies(8, 10).unwrap();
        assert!((a as f64 - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-6, "{a}");
        // Correction dims: beta_fast 32 -> 8 ln(64 / (64 pi)) / (2 ln 1e4) < 0 -> 0;
        // beta_slow 1 -> 8 ln(64 / 2 pi) / (2 ln 1e4) = 1.01 -> ceil 2. Ramp (i - 0) / 2:
        // pair 0 extrapolates (kept), pair 1 is half and half, pairs 2-3 interpolate (/ 4).
        assert!((f[0] - 1.0).abs() < 1e-6);
        assert!(
            (f[1] as f64 - (0.5 * 0.1 + 0.5 * 0.025)).abs() < 1e-7,
            "{}",
            f[1]
        );
        assert!((f[2] as f64 - 0.0025).abs() < 1e-8);
        assert!((f[3] as f64 - 0.00025).abs() < 1e-9);
    }

    #[test]
    fn longrope_switches_factors_past_the_original_length() {
        let limits = PositionLimits {
            max: Some(256),
            original_max: Some(64),
        };
        let r = read(
            serde_json::json!({"type": "longrope", "short_factor": [1.0, 2.0, 3.0, 4.0],
                "long_factor": [5.0, 6.0, 7.0, 8.0]}),
            limits,
        )
        .unwrap();
        let attn = (1.0 + 4f64.ln() / 64f64.ln()).sqrt();
        let (short, a) = r.frequencies(8, 64).unwrap();
        assert!((a as f64 - attn).abs() < 1e-6);
        assert!((short[1] as f64 - 0.1 / 2.0).abs() < 1e-7);
        let (long, _) = r.frequencies(8, 65).unwrap();
        assert!((long[1] as f64 - 0.1 / 6.0).abs() < 1e-7);
        // A factor list of the wrong length is an error, not a short table.
        let err = r.frequencies(4, 10).unwrap_err().to_string();
        assert!(err.contains("4 entries, but RoPE rotates 2 pairs"), "{err}");
    }

    #[test]
    fn missing_settings_and_unknown_types_are_named() {
        let err = read(
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("llama3 RoPE scaling without 'low_freq_factor'"),
            "{err}"
        );
        let err = read(
            serde_json::json!({"rope_type": "dynamic", "factor": 2.0}),
            Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rope_type 'dynamic' is not supported"),
            "{err}"
        );
    }
}
