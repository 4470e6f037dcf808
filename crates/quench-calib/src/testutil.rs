//! Test helpers: a deterministic PRNG, samplers and closed-form references.

use crate::TensorStats;

/// Error type for tests that mix error sources.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// 64-bit linear congruential generator (Knuth's MMIX constants). Only the
/// high bits are used, which are good enough for test data.
#[derive(Debug, Clone)]
pub struct Lcg {
    state: u64,
    spare_normal: Option<f64>,
}

impl Lcg {
    pub fn new(seed: u64) -> Self {
        let mut rng = Lcg {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare_normal: None,
        };
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.state
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`, safe for logarithms.
    pub fn uniform_open(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal via Box–Muller (both outputs used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let r = (-2.0 * self.uniform_open().ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Laplace with scale `b` by inverse CDF.
    pub fn laplace(&mut self, b: f64) -> f64 {
        let e = -b * self.uniform_open().ln();
        if self.next_u64() >> 63 == 1 {
            e
        } else {
            -e
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Exact equality including the bit patterns of min and max.
pub fn bit_identical(a: &TensorStats, b: &TensorStats) -> bool {
    a.min.to_bits() == b.min.to_bits()
        && a.max.to_bits() == b.max.to_bits()
        && a.count == b.count
        && a.nonfinite == b.nonfinite
        && a.histogram == b.histogram
}

/// Complementary error function (Numerical Recipes `erfcc`, relative error
/// below 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// `P(|Z| > t)` for a standard normal `Z`.
pub fn normal_two_sided_tail(t: f64) -> f64 {
    erfc(t / std::f64::consts::SQRT_2)
}

/// `t` with `P(|Z| > t) = tail`, by bisection.
pub fn normal_abs_quantile(tail: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 40.0);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if normal_two_sided_tail(mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Expected squared error of symmetric quantization of N(0, 1) clipped at
/// `t` with `steps` steps over `[-t, t]`: rounding `step^2/12` inside plus
/// `2 E[(|Z| - t)^2; |Z| > t] = 2((1 + t^2) Q(t) - t phi(t))`.
pub fn gaussian_mse(t: f64, steps: f64) -> f64 {
    let q = 0.5 * normal_two_sided_tail(t);
    let phi = (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let step = 2.0 * t / steps;
    (1.0 - 2.0 * q) * step * step / 12.0 + 2.0 * ((1.0 + t * t) * q - t * phi)
}

/// Same for Laplace(0, b): inside mass `1 - e^(-t/b)`, clipping
/// `2 b^2 e^(-t/b)`.
pub fn laplace_mse(t: f64, steps: f64, b: f64) -> f64 {
    let tail = (-t / b).exp();
    let step = 2.0 * t / steps;
    (1.0 - tail) * step * step / 12.0 + 2.0 * b * b * tail
}

/// Minimizer of `f` over `(0, hi]` on a grid of step `hi / n`.
pub fn argmin(f: impl Fn(f64) -> f64, hi: f64, n: usize) -> f64 {
    (1..=n)
        .map(|k| hi * k as f64 / n as f64)
        .map(|t| (f(t), t))
        .fold((f64::INFINITY, 0.0), |best, cur| {
            if cur.0 < best.0 {
                cur
            } else {
                best
            }
        })
        .1
}
