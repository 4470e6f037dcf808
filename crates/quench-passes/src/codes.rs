//! Storage of quantized codes in ONNX tensors, for every
//! [`ElemType`]: 8- and 16-bit integers and float8
//! one element per byte / two bytes (little endian), 4-bit integers packed
//! two per byte with the first element in the low nibble (the ONNX layout),
//! float8 codes as their bit patterns.
//!
//! Invariant: [`decode`] inverts [`encode`] for every code inside the
//! element type's range.

use quench_calib::{ElemType, Granularity};
use quench_ir::tensor;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::TensorProto;

/// The ONNX `DataType` of an element type.
pub fn data_type(e: ElemType) -> DataType {
    match e {
        ElemType::Int4 => DataType::Int4,
        ElemType::Uint4 => DataType::Uint4,
        ElemType::Int8 => DataType::Int8,
        ElemType::Uint8 => DataType::Uint8,
        ElemType::Int16 => DataType::Int16,
        ElemType::Uint16 => DataType::Uint16,
        ElemType::F8E4M3FN => DataType::Float8e4m3fn,
        ElemType::F8E5M2 => DataType::Float8e5m2,
        ElemType::F16 => DataType::Float16,
        ElemType::BF16 => DataType::Bfloat16,
    }
}

/// The element type of an ONNX `DataType` code, if it is one.
pub fn elem_type(code: i32) -> Option<ElemType> {
    Some(match DataType::try_from(code).ok()? {
        DataType::Int4 => ElemType::Int4,
        DataType::Uint4 => ElemType::Uint4,
        DataType::Int8 => ElemType::Int8,
        DataType::Uint8 => ElemType::Uint8,
        DataType::Int16 => ElemType::Int16,
        DataType::Uint16 => ElemType::Uint16,
        DataType::Float8e4m3fn => ElemType::F8E4M3FN,
        DataType::Float8e5m2 => ElemType::F8E5M2,
        DataType::Float16 => ElemType::F16,
        DataType::Bfloat16 => ElemType::BF16,
        _ => return None,
    })
}

/// A tensor of `elem` holding `codes` (integer values, or float bit
/// patterns), as raw data. Codes are truncated to the type's width.
pub fn encode(elem: ElemType, dims: &[i64], codes: &[i32]) -> TensorProto {
    let raw: Vec<u8> = match elem {
        ElemType::Int4 | ElemType::Uint4 => codes
            .chunks(2)
            .map(|c| {
                let lo = (c[0] & 0xF) as u8;
                let hi = c.get(1).map_or(0, |v| (v & 0xF) as u8);
                lo | hi << 4
            })
            .collect(),
        ElemType::Int8 | ElemType::Uint8 | ElemType::F8E4M3FN | ElemType::F8E5M2 => {
            codes.iter().map(|c| *c as u8).collect()
        }
        ElemType::Int16 | ElemType::Uint16 | ElemType::F16 | ElemType::BF16 => codes
            .iter()
            .flat_map(|c| (*c as u16).to_le_bytes())
            .collect(),
    };
    tensor::from_raw("", data_type(elem), dims, raw)
}

/// The codes of a tensor of one of the [`ElemType`]s (integers as values,
/// floats as bit patterns); `None` for other types or malformed data.
pub fn decode(t: &TensorProto) -> Option<(ElemType, Vec<i32>)> {
    let elem = elem_type(t.data_type())?;
    let n = tensor::numel(&t.dims)?;
    let Some(raw) = &t.raw_data else {
        // Typed storage: every one of these types lives in int32_data.
        let v: Vec<i32> = t.int32_data.clone();
        return match elem {
            ElemType::Int4 | ElemType::Uint4 => {
                let signed = elem == ElemType::Int4;
                let out: Vec<i32> = (0..n)
                    .map(|i| nibble(v.get(i / 2).copied().unwrap_or(0) as u8, i % 2, signed))
                    .collect();
                (v.len() == n.div_ceil(2)).then_some((elem, out))
            }
            _ => (v.len() == n).then_some((elem, v)),
        };
    };
    let out: Vec<i32> = match elem {
        ElemType::Int4 | ElemType::Uint4 => {
            if raw.len() != n.div_ceil(2) {
                return None;
            }
            let signed = elem == ElemType::Int4;
            (0..n).map(|i| nibble(raw[i / 2], i % 2, signed)).collect()
        }
        ElemType::Int8 => {
            if raw.len() != n {
                return None;
            }
            raw.iter().map(|b| i32::from(*b as i8)).collect()
        }
        ElemType::Uint8 | ElemType::F8E4M3FN | ElemType::F8E5M2 => {
            if raw.len() != n {
                return None;
            }
            raw.iter().map(|b| i32::from(*b)).collect()
        }
        ElemType::Int16 => {
            if raw.len() != 2 * n {
                return None;
            }
            raw.chunks_exact(2)
                .map(|c| i32::from(i16::from_le_bytes([c[0], c[1]])))
                .collect()
        }
        ElemType::Uint16 | ElemType::F16 | ElemType::BF16 => {
            if raw.len() != 2 * n {
                return None;
            }
            raw.chunks_exact(2)
                .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect()
        }
    };
    Some((elem, out))
}

/// Which scale each element of a tensor uses under a granularity (the
/// ONNX `DequantizeLinear` layouts: one scale, one per index along `axis`,
/// or one per block of `size` along `axis` with scales of the blocked
/// shape).
pub struct Layout {
    /// Number of scales.
    pub groups: usize,
    /// Shape of the scale (and zero point) tensor.
    pub scale_dims: Vec<i64>,
    d: usize,
    inner: usize,
    block: Option<usize>,
    per_axis: bool,
}

impl Layout {
    pub fn new(dims: &[i64], g: Granularity) -> Option<Layout> {
        let ud: Vec<usize> = dims
            .iter()
            .map(|d| usize::try_from(*d).ok())
            .collect::<Option<_>>()?;
        let split = |axis: usize| {
            let d = *ud.get(axis)?;
            let inner: usize = ud[axis + 1..].iter().product();
            let outer: usize = ud[..axis].iter().product();
            Some((outer, d, inner))
        };
        Some(match g {
            Granularity::PerTensor => Layout {
                groups: 1,
                scale_dims: vec![],
                d: 1,
                inner: 1,
                block: None,
                per_axis: false,
            },
            Granularity::PerAxis { axis } => {
                let (_, d, inner) = split(axis)?;
                Layout {
                    groups: d,
                    scale_dims: vec![d as i64],
                    d,
                    inner,
                    block: None,
                    per_axis: true,
                }
            }
            Granularity::Block { axis, size } => {
                let (outer, d, inner) = split(axis)?;
                if size == 0 {
                    return None;
                }
                let nb = d.div_ceil(size);
                let mut scale_dims = dims.to_vec();
                scale_dims[axis] = nb as i64;
                Layout {
                    groups: outer * nb * inner,
                    scale_dims,
                    d,
                    inner,
                    block: Some(size),
                    per_axis: false,
                }
            }
        })
    }

    /// Scale index of flat element `i` (row-major).
    pub fn group(&self, i: usize) -> usize {
        if let Some(size) = self.block {
            let o = i / (self.d * self.inner);
            let a = (i / self.inner) % self.d;
            let r = i % self.inner;
            let nb = self.d.div_ceil(size);
            (o * nb + a / size) * self.inner + r
        } else if self.per_axis {
            (i / self.inner) % self.d
        } else {
            0
        }
    }
}

/// Largest sum of two same-sign int8 weight codes that a pair of u8
/// activation codes cannot push past int16: `255 x 128 = 32640`. ONNX
/// Runtime's u8 x s8 kernels on x86 without VNNI (`VPMADDUBSW`) add two
/// adjacent products along the reduction axis into a saturating int16;
/// a pair of opposite signs stays within `255 x 127`.
pub const PAIR_LIMIT: i32 = 128;

/// Where the pairs of a weight's int8 codes lie that such a kernel adds
/// together: the saturation guard's per-channel "paired" choice
/// (`quench-compile`'s `saturation` module), enforced by the quantizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairLimit {
    /// The weight column at each position of the kernel's reduction axis;
    /// positions `(2j, 2j + 1)` are added together (an odd last one is
    /// added to padding).
    pub order: Vec<usize>,
    /// Flat (row-major) index of row `r` (output channel), column `c`:
    /// `r * row_stride + c * col_stride`.
    pub row_stride: usize,
    pub col_stride: usize,
    /// The rows the limit applies to.
    pub rows: Vec<bool>,
    /// Per scale group (output channel, or one for a per-tensor weight):
    /// the code magnitude its extreme weight gets (scale `amax / qmax`,
    /// see [`scale_for_qmax`]; 127 for the full grid). A smaller grid has
    /// fewer pairs past the limit to bring onto it.
    pub qmax: Vec<i32>,
}

/// The int8 weight scale whose extreme weight gets code `qmax` instead of
/// 127, from the full grid's `scale` (f32 arithmetic, so the saturation
/// guard and the quantizer get the same scale).
pub fn scale_for_qmax(scale: f32, qmax: i32) -> f32 {
    if (1..127).contains(&qmax) {
        scale * 127.0 / qmax as f32
    } else {
        scale
    }
}

impl PairLimit {
    /// Whether the layout addresses only elements of a weight of `len`
    /// elements (callers check it before taking the grids in `qmax`, so
    /// that a grid never comes without its limit).
    pub fn fits(&self, len: usize) -> bool {
        let cols = self.order.len();
        let last = (self.rows.len().saturating_sub(1))
            .checked_mul(self.row_stride)
            .zip(cols.saturating_sub(1).checked_mul(self.col_stride))
            .and_then(|(a, b)| a.checked_add(b));
        !self.rows.is_empty()
            && self.order.iter().all(|c| *c < cols)
            && last.is_some_and(|l| l < len)
    }

    /// Brings every same-sign pair of `codes` (flat, the weight's layout)
    /// in the limited rows whose magnitudes sum past [`PAIR_LIMIT`] onto
    /// it, at the integer pair nearest to the unrounded codes `exact(i)`
    /// (weight / scale). `false` (nothing changed) if the layout does not
    /// fit `codes`.
    pub fn apply(&self, codes: &mut [i32], exact: impl Fn(usize) -> f32) -> bool {
        if !self.fits(codes.len()) {
            return false;
        }
        for (r, on) in self.rows.iter().enumerate() {
            if !on {
                continue;
            }
            for p in self.order.chunks_exact(2) {
                let (i, j) = (
                    r * self.row_stride + p[0] * self.col_stride,
                    r * self.row_stride + p[1] * self.col_stride,
                );
                let (a, b) = limit_pair(codes[i], codes[j], exact(i), exact(j));
                codes[i] = a;
                codes[j] = b;
            }
        }
        true
    }
}

/// Whether two codes have one sign and magnitudes summing past
/// [`PAIR_LIMIT`] (only such a pair can saturate).
pub fn past_limit(qa: i32, qb: i32) -> bool {
    qa.signum() * qb.signum() > 0 && qa.abs() + qb.abs() > PAIR_LIMIT
}

/// Codes `(qa, qb)` unchanged unless they have one sign and magnitudes
/// summing past [`PAIR_LIMIT`]; then the integer pair on that sum nearest
/// to the unrounded codes `(fa, fb)`, each magnitude in `[1, 127]`.
pub fn limit_pair(qa: i32, qb: i32, fa: f32, fb: f32) -> (i32, i32) {
    if !past_limit(qa, qb) {
        return (qa, qb);
    }
    let s = qa.signum();
    let (ma, mb) = (fa.abs().min(127.0), fb.abs().min(127.0));
    let excess = (ma + mb - PAIR_LIMIT as f32).max(0.0);
    let a = ((ma - excess / 2.0).round() as i32).clamp(PAIR_LIMIT - 127, 127);
    (s * a, s * (PAIR_LIMIT - a))
}

/// Element `k` (0: low nibble) of a packed byte, sign-extended if `signed`.
fn nibble(b: u8, k: usize, signed: bool) -> i32 {
    let v = if k == 0 { b & 0xF } else { b >> 4 };
    if signed && v >= 8 {
        i32::from(v) - 16
    } else {
        i32::from(v)
    }
}

/// A constant of element type `elem` (f32, f16 or bf16) holding `values`,
/// f16 and bf16 rounded to nearest even.
pub fn float_const(elem: i32, dims: &[i64], values: &[f32]) -> quench_onnx::proto::TensorProto {
    let kind = if elem == quench_onnx::proto::tensor_proto::DataType::Float16 as i32 {
        (
            quench_calib::FloatKind::F16,
            quench_onnx::proto::tensor_proto::DataType::Float16,
        )
    } else if elem == quench_onnx::proto::tensor_proto::DataType::Bfloat16 as i32 {
        (
            quench_calib::FloatKind::BF16,
            quench_onnx::proto::tensor_proto::DataType::Bfloat16,
        )
    } else {
        return quench_ir::tensor::from_f32("", dims, values);
    };
    let raw: Vec<u8> = values
        .iter()
        .flat_map(|v| (kind.0.encode(*v) as u16).to_le_bytes())
        .collect();
    quench_ir::tensor::from_raw("", kind.1, dims, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type() {
        let cases: [(ElemType, Vec<i32>); 7] = [
            (ElemType::Int4, vec![-8, 7, 0, -1, 3]),
            (ElemType::Uint4, vec![0, 15, 9]),
            (ElemType::Int8, vec![-128, 127, 0]),
            (ElemType::Uint8, vec![0, 255, 17]),
            (ElemType::Int16, vec![-32768, 32767, -2]),
            (ElemType::Uint16, vec![0, 65535, 300]),
            (ElemType::F8E4M3FN, vec![0x7E, 0xFE, 0x01]),
        ];
        for (elem, codes) in cases {
            let t = encode(elem, &[codes.len() as i64], &codes);
            assert_eq!(decode(&t), Some((elem, codes.clone())), "{elem:?}");
        }
        // ONNX layout: first element in the low nibble.
        let t = encode(ElemType::Int4, &[2], &[-8, 7]);
        assert_eq!(t.raw_data.as_deref(), Some(&[0x78u8][..]));
    }

    /// Pairs of one sign past the limit land on it, at the integer pair
    /// nearest the unrounded codes; opposite signs, zeros and pairs within
    /// the limit stay; 255 times either pair fits int16 afterwards.
    #[test]
    fn limit_pair_brings_same_sign_pairs_onto_the_limit() {
        assert_eq!(limit_pair(100, 60, 100.2, 59.9), (84, 44));
        assert_eq!(limit_pair(-127, -127, -127.0, -127.0), (-64, -64));
        assert_eq!(limit_pair(127, 2, 126.8, 2.2), (126, 2));
        assert_eq!(limit_pair(64, 64, 64.4, 63.6), (64, 64));
        assert_eq!(limit_pair(127, -127, 127.0, -127.0), (127, -127));
        assert_eq!(limit_pair(127, 0, 127.0, 0.3), (127, 0));
        for a in -127..=127 {
            for b in -127..=127 {
                let (x, y) = limit_pair(a, b, a as f32 + 0.3, b as f32 - 0.2);
                let sum = 255 * (x + y);
                assert!((-32768..=32767).contains(&sum), "({a}, {b}) -> ({x}, {y})");
                assert!(x.abs() <= 127 && y.abs() <= 127);
                if a.signum() * b.signum() <= 0 || a.abs() + b.abs() <= PAIR_LIMIT {
                    assert_eq!((x, y), (a, b));
                } else {
                    // Same signs, on the limit, nearest the line's point.
                    assert_eq!((x.signum(), y.signum()), (a.signum(), b.signum()));
                    assert_eq!(x.abs() + y.abs(), PAIR_LIMIT, "({a}, {b})");
                }
            }
        }
    }

    /// `PairLimit::apply` on a [K, N] layout (rows are columns of the
    /// matrix, stride 1; columns stride N) in a permuted order: only the
    /// limited rows' pairs change, only those of one sign past the limit.
    #[test]
    fn pair_limit_applies_in_the_kernel_order() {
        // K = 4, N = 2: flat index k * 2 + n.
        let mut q = vec![
            100, 100, // k = 0
            10, 90, //   k = 1
            90, 90, //   k = 2
            -5, 90, //   k = 3
        ];
        let exact: Vec<f32> = q.iter().map(|v| *v as f32).collect();
        let pl = PairLimit {
            order: vec![0, 2, 1, 3], // pairs (0, 2) and (1, 3)
            row_stride: 1,
            col_stride: 2,
            rows: vec![true, false],
            qmax: vec![127, 127],
        };
        assert!(pl.apply(&mut q, |i| exact[i]));
        // Row 0: pair (k0, k2) = (100, 90) -> (69, 59); (k1, k3) = (10, -5) stays.
        // Row 1 unlimited: (100, 90) and (90, 90) stay.
        assert_eq!(q, vec![69, 100, 10, 90, 59, 90, -5, 90]);
        // A layout past the codes changes nothing.
        let bad = PairLimit {
            col_stride: 3,
            ..pl.clone()
        };
        let mut r = exact.iter().map(|v| *v as i32).collect::<Vec<_>>();
        assert!(!bad.apply(&mut r, |i| exact[i]));
        assert_eq!(r, exact.iter().map(|v| *v as i32).collect::<Vec<_>>());
        assert_eq!(scale_for_qmax(1.0, 127), 1.0);
        assert_eq!(scale_for_qmax(0.5, 63), 0.5 * 127.0 / 63.0);
    }
}
