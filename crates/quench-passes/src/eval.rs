//! A small reference evaluator for constant folding.
//!
//! Covers the ops that constant subgraphs in exported models are made of
//! (shape arithmetic, reshapes of weights, masks, element-wise math on
//! constants) for f32, f64, every integer width from 8 to 64 bits and bool.
//! Anything else returns `None` and the node is left alone: declining is
//! always safe.
//!
//! Invariant: every result has exactly the element type ONNX defines for the
//! op (the type of its data input, `bool` for comparisons and logical ops,
//! `int64` for `Shape`/`Size`, `to` for `Cast`, the type of `value` for
//! `ConstantOfShape`). A case whose ONNX result is not defined or that would
//! be computed differently by a runtime (integer division by zero or
//! `MIN / -1`, out-of-range indices, a float out of an integer's range under
//! `Cast`) is declined, never guessed.
//!
//! Invariant: nothing is allocated before the output element count has been
//! computed with overflow-checked products and compared with
//! [`MAX_ELEMENTS`]; inputs larger than that are not decoded either. A node
//! over the cap is left unfolded. Axes, permutations and shapes are checked
//! against the input ranks before use, so no input can make it panic.

use ndarray::{ArrayD, Axis, Dimension, IxDyn};
use quench_ir::{Node, OpKind};
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::TensorProto;

/// Largest tensor the folder will decode or materialise (elements).
pub const MAX_ELEMENTS: usize = 1 << 24;

/// An evaluated tensor: one variant per supported ONNX element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    Bool(ArrayD<bool>),
}

/// Runs `$e` with `$a` bound to the array of any variant of `$t`.
macro_rules! each {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            Tensor::F32($a) => $e,
            Tensor::F64($a) => $e,
            Tensor::I8($a) => $e,
            Tensor::I16($a) => $e,
            Tensor::I32($a) => $e,
            Tensor::I64($a) => $e,
            Tensor::U8($a) => $e,
            Tensor::U16($a) => $e,
            Tensor::U32($a) => $e,
            Tensor::U64($a) => $e,
            Tensor::Bool($a) => $e,
        }
    };
}

/// Runs `$e` on two tensors of the same numeric element type; `$b` on two
/// bools; anything else (mixed types) declines.
macro_rules! pair {
    ($p:expr, $q:expr, |$x:ident, $y:ident| $e:expr, bool => $b:expr) => {
        match ($p, $q) {
            (Tensor::F32($x), Tensor::F32($y)) => $e,
            (Tensor::F64($x), Tensor::F64($y)) => $e,
            (Tensor::I8($x), Tensor::I8($y)) => $e,
            (Tensor::I16($x), Tensor::I16($y)) => $e,
            (Tensor::I32($x), Tensor::I32($y)) => $e,
            (Tensor::I64($x), Tensor::I64($y)) => $e,
            (Tensor::U8($x), Tensor::U8($y)) => $e,
            (Tensor::U16($x), Tensor::U16($y)) => $e,
            (Tensor::U32($x), Tensor::U32($y)) => $e,
            (Tensor::U64($x), Tensor::U64($y)) => $e,
            #[allow(unused_variables)]
            (Tensor::Bool($x), Tensor::Bool($y)) => $b,
            _ => return None,
        }
    };
}

/// Runs `$e` with `$a` bound to a numeric array; bool declines.
macro_rules! numeric {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            Tensor::F32($a) => $e,
            Tensor::F64($a) => $e,
            Tensor::I8($a) => $e,
            Tensor::I16($a) => $e,
            Tensor::I32($a) => $e,
            Tensor::I64($a) => $e,
            Tensor::U8($a) => $e,
            Tensor::U16($a) => $e,
            Tensor::U32($a) => $e,
            Tensor::U64($a) => $e,
            Tensor::Bool(_) => return None,
        }
    };
}

/// An element type the evaluator stores.
pub trait Elem: Copy + PartialEq + PartialOrd + std::fmt::Debug + 'static {
    /// The ONNX element type.
    const DT: DataType;
    /// Bytes per element in `raw_data`.
    const WIDTH: usize;
    fn from_le(b: &[u8]) -> Self;
    fn put_le(self, out: &mut Vec<u8>);
    /// Values from the typed fields of a tensor (`None` if one is out of
    /// the type's range).
    fn typed(t: &TensorProto) -> Option<Vec<Self>>;
    fn wrap(a: ArrayD<Self>) -> Tensor;
    /// The exact value of an integer or bool (`None` for floats).
    fn as_i128(self) -> Option<i128>;
    fn as_f64(self) -> f64;
    /// An integer converted as a C cast would: two's complement truncation
    /// for integers, nearest for floats, `!= 0` for bool.
    fn from_i128(v: i128) -> Self;
    /// A float converted: nearest for floats, `!= 0` for bool, truncation
    /// toward zero for integers (`None` if not finite or out of range).
    fn from_f64(v: f64) -> Option<Self>;
}

/// Element-wise arithmetic of a numeric type; `None` when ONNX leaves the
/// result undefined or the evaluator does not cover the op for the type.
trait Arith: Elem {
    fn bin(self, op: Bin, o: Self) -> Option<Self>;
    fn un(self, op: OpKind) -> Option<Self>;
    fn zero() -> Self;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    /// `Mod` with its `fmod` attribute.
    Mod(bool),
    Pow,
}

macro_rules! int_elem {
    ($t:ty, $v:ident, $dt:ident, $field:ident) => {
        impl Elem for $t {
            const DT: DataType = DataType::$dt;
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn typed(t: &TensorProto) -> Option<Vec<Self>> {
                t.$field.iter().map(|v| <$t>::try_from(*v).ok()).collect()
            }
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$v(a)
            }
            fn as_i128(self) -> Option<i128> {
                Some(self as i128)
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
            fn from_f64(v: f64) -> Option<Self> {
                if !v.is_finite() {
                    return None;
                }
                let t = v.trunc();
                // The bounds are exact in f64 for MIN; MAX + 1 is a power of
                // two, so `t < MAX + 1` is an exact test.
                if t < <$t>::MIN as f64 || t >= (<$t>::MAX as f64) + 1.0 {
                    return None;
                }
                Some(t as $t)
            }
        }
        impl Arith for $t {
            fn bin(self, op: Bin, o: Self) -> Option<Self> {
                match op {
                    // ONNX runtimes and the reference implementation wrap.
                    Bin::Add => Some(self.wrapping_add(o)),
                    Bin::Sub => Some(self.wrapping_sub(o)),
                    Bin::Mul => Some(self.wrapping_mul(o)),
                    // Truncates toward zero like ONNX; ÷0 and MIN / -1 are
                    // undefined and decline.
                    Bin::Div => self.checked_div(o),
                    Bin::Mod(true) => self.checked_rem(o),
                    Bin::Mod(false) => {
                        // The sign of the result follows the divisor.
                        let r = self.checked_rem(o)?;
                        #[allow(unused_comparisons)]
                        let differ = (r < 0) != (o < 0);
                        Some(if r != 0 && differ {
                            r.wrapping_add(o)
                        } else {
                            r
                        })
                    }
                    Bin::Pow => None,
                }
            }
            fn un(self, op: OpKind) -> Option<Self> {
                let signed = <$t>::MIN != 0;
                match op {
                    OpKind::Neg if signed => Some(self.wrapping_neg()),
                    OpKind::Abs if signed => Some(if self < Self::zero() {
                        self.wrapping_neg()
                    } else {
                        self
                    }),
                    OpKind::Abs => Some(self),
                    OpKind::Relu if signed => Some(if self < Self::zero() {
                        Self::zero()
                    } else {
                        self
                    }),
                    _ => None,
                }
            }
            fn zero() -> Self {
                0
            }
        }
    };
}

int_elem!(i8, I8, Int8, int32_data);
int_elem!(i16, I16, Int16, int32_data);
int_elem!(i32, I32, Int32, int32_data);
int_elem!(i64, I64, Int64, int64_data);
int_elem!(u8, U8, Uint8, int32_data);
int_elem!(u16, U16, Uint16, int32_data);
int_elem!(u32, U32, Uint32, uint64_data);
int_elem!(u64, U64, Uint64, uint64_data);

macro_rules! float_elem {
    ($t:ty, $v:ident, $dt:ident, $field:ident) => {
        impl Elem for $t {
            const DT: DataType = DataType::$dt;
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn from_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn typed(t: &TensorProto) -> Option<Vec<Self>> {
                Some(t.$field.clone())
            }
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$v(a)
            }
            fn as_i128(self) -> Option<i128> {
                None
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
            fn from_f64(v: f64) -> Option<Self> {
                Some(v as $t)
            }
        }
        impl Arith for $t {
            fn bin(self, op: Bin, o: Self) -> Option<Self> {
                Some(match op {
                    Bin::Add => self + o,
                    Bin::Sub => self - o,
                    Bin::Mul => self * o,
                    Bin::Div => self / o,
                    // Float Mod requires fmod=1 (C fmod, the sign of the
                    // dividend), which is Rust's `%`.
                    Bin::Mod(true) => self % o,
                    Bin::Mod(false) => return None,
                    Bin::Pow => self.powf(o),
                })
            }
            fn un(self, op: OpKind) -> Option<Self> {
                Some(match op {
                    OpKind::Neg => -self,
                    OpKind::Abs => self.abs(),
                    // NaN stays NaN, as in numpy's maximum.
                    OpKind::Relu => {
                        if self < 0.0 {
                            0.0
                        } else {
                            self
                        }
                    }
                    OpKind::Sqrt => self.sqrt(),
                    OpKind::Reciprocal => 1.0 / self,
                    OpKind::Exp => self.exp(),
                    OpKind::Log => self.ln(),
                    OpKind::Floor => self.floor(),
                    OpKind::Ceil => self.ceil(),
                    OpKind::Round => self.round_ties_even(),
                    _ => return None,
                })
            }
            fn zero() -> Self {
                0.0
            }
        }
    };
}

float_elem!(f32, F32, Float, float_data);
float_elem!(f64, F64, Double, double_data);

impl Elem for bool {
    const DT: DataType = DataType::Bool;
    const WIDTH: usize = 1;
    fn from_le(b: &[u8]) -> Self {
        b.first().is_some_and(|v| *v != 0)
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn typed(t: &TensorProto) -> Option<Vec<Self>> {
        Some(t.int32_data.iter().map(|v| *v != 0).collect())
    }
    fn wrap(a: ArrayD<Self>) -> Tensor {
        Tensor::Bool(a)
    }
    fn as_i128(self) -> Option<i128> {
        Some(self as i128)
    }
    fn as_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_i128(v: i128) -> Self {
        v != 0
    }
    fn from_f64(v: f64) -> Option<Self> {
        // NaN is true, as in numpy.
        Some(v != 0.0)
    }
}

/// Element count of a shape, `None` on overflow or above [`MAX_ELEMENTS`].
/// Called before anything of that shape is allocated. The product of the
/// non-zero dims is capped too: an empty `[0, 2^63]` has no elements but is
/// not a shape anything can be built with (ndarray refuses it).
pub fn capped_count(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .filter(|d| **d != 0)
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .filter(|n| *n <= MAX_ELEMENTS)?;
    Some(if shape.contains(&0) {
        0
    } else {
        shape.iter().product()
    })
}

fn decode<T: Elem>(t: &TensorProto, dims: &[usize], n: usize) -> Option<ArrayD<T>> {
    let data: Vec<T> = match &t.raw_data {
        Some(raw) => {
            if raw.len() != n.checked_mul(T::WIDTH)? {
                return None;
            }
            raw.chunks_exact(T::WIDTH).map(T::from_le).collect()
        }
        None => T::typed(t)?,
    };
    if data.len() != n {
        return None;
    }
    ArrayD::from_shape_vec(IxDyn(dims), data).ok()
}

fn encode<T: Elem>(name: &str, a: &ArrayD<T>) -> TensorProto {
    let mut raw = Vec::with_capacity(a.len() * T::WIDTH);
    for v in a.iter() {
        v.put_le(&mut raw);
    }
    quench_ir::tensor::from_raw(name, T::DT, &shape_i64(a.shape()), raw)
}

fn shape_i64(s: &[usize]) -> Vec<i64> {
    // Shapes come from arrays of at most MAX_ELEMENTS elements: they fit.
    s.iter().map(|d| *d as i64).collect()
}

impl Tensor {
    /// Decodes a constant. `None` for element types the evaluator does not
    /// cover (f16, bf16, strings, ...), external data that is not loaded,
    /// data whose length does not match the dims, negative dims, and
    /// tensors over [`MAX_ELEMENTS`].
    pub fn from_proto(t: &TensorProto) -> Option<Tensor> {
        let dims: Vec<usize> = t
            .dims
            .iter()
            .map(|d| usize::try_from(*d).ok())
            .collect::<Option<_>>()?;
        let n = capped_count(&dims)?;
        Some(match DataType::try_from(t.data_type()).ok()? {
            DataType::Float => Tensor::F32(decode(t, &dims, n)?),
            DataType::Double => Tensor::F64(decode(t, &dims, n)?),
            DataType::Int8 => Tensor::I8(decode(t, &dims, n)?),
            DataType::Int16 => Tensor::I16(decode(t, &dims, n)?),
            DataType::Int32 => Tensor::I32(decode(t, &dims, n)?),
            DataType::Int64 => Tensor::I64(decode(t, &dims, n)?),
            DataType::Uint8 => Tensor::U8(decode(t, &dims, n)?),
            DataType::Uint16 => Tensor::U16(decode(t, &dims, n)?),
            DataType::Uint32 => Tensor::U32(decode(t, &dims, n)?),
            DataType::Uint64 => Tensor::U64(decode(t, &dims, n)?),
            DataType::Bool => Tensor::Bool(decode(t, &dims, n)?),
            _ => return None,
        })
    }

    /// The tensor as an initializer of the same element type (raw data).
    pub fn to_proto(&self, name: &str) -> TensorProto {
        each!(self, a => encode(name, a))
    }

    /// The ONNX element type.
    pub fn data_type(&self) -> DataType {
        fn dt<T: Elem>(_: &ArrayD<T>) -> DataType {
            T::DT
        }
        each!(self, a => dt(a))
    }

    pub fn shape(&self) -> &[usize] {
        each!(self, a => a.shape())
    }

    /// Values of an int64 tensor (shapes, axes, repeats).
    fn i64s(&self) -> Option<Vec<i64>> {
        match self {
            Tensor::I64(a) => Some(a.iter().copied().collect()),
            _ => None,
        }
    }

    /// Values of an int32 or int64 tensor (indices, slice bounds).
    fn indices(&self) -> Option<Vec<i64>> {
        match self {
            Tensor::I64(a) => Some(a.iter().copied().collect()),
            Tensor::I32(a) => Some(a.iter().map(|v| *v as i64).collect()),
            _ => None,
        }
    }
}

/// Multidirectional (numpy) broadcasting of shapes.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| {
            let (da, db) = (dim(a, i), dim(b, i));
            if da == db || db == 1 {
                Some(da)
            } else if da == 1 {
                Some(db)
            } else {
                None
            }
        })
        .collect()
}

fn zip2<A: Copy, B: Copy, O>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> Option<O>,
) -> Option<ArrayD<O>> {
    let s = broadcast_shape(a.shape(), b.shape())?;
    capped_count(&s)?;
    let av = a.broadcast(IxDyn(&s))?;
    let bv = b.broadcast(IxDyn(&s))?;
    let data: Vec<O> = av
        .iter()
        .zip(bv.iter())
        .map(|(x, y)| f(*x, *y))
        .collect::<Option<_>>()?;
    ArrayD::from_shape_vec(IxDyn(&s), data).ok()
}

fn select<T: Copy>(c: &ArrayD<bool>, a: &ArrayD<T>, b: &ArrayD<T>) -> Option<ArrayD<T>> {
    let s = broadcast_shape(&broadcast_shape(c.shape(), a.shape())?, b.shape())?;
    capped_count(&s)?;
    let cv = c.broadcast(IxDyn(&s))?;
    let av = a.broadcast(IxDyn(&s))?;
    let bv = b.broadcast(IxDyn(&s))?;
    let data: Vec<T> = cv
        .iter()
        .zip(av.iter().zip(bv.iter()))
        .map(|(c, (x, y))| if *c { *x } else { *y })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&s), data).ok()
}

/// `axis` in `[-rank, rank)` made non-negative.
fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    usize::try_from(a).ok().filter(|a| *a < rank)
}

/// Distinct axes normalised against `rank`.
fn norm_axes(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|a| norm_axis(*a, rank))
        .collect::<Option<_>>()?;
    ax.sort_unstable();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    Some(ax)
}

fn reshape<T: Clone>(a: &ArrayD<T>, shape: &[usize]) -> Option<ArrayD<T>> {
    a.to_shape(IxDyn(shape)).ok().map(|v| v.to_owned())
}

/// Builds an array of `shape` whose element at index `i` is `a[src(i)]`;
/// `src` writes the source index into its second argument.
fn gather_fn<T: Copy>(
    a: &ArrayD<T>,
    shape: &[usize],
    src: impl Fn(&[usize], &mut [usize]),
) -> Option<ArrayD<T>> {
    capped_count(shape)?;
    let mut from = vec![0usize; a.ndim()];
    Some(ArrayD::from_shape_fn(IxDyn(shape), |i| {
        src(i.slice(), &mut from);
        a[from.as_slice()]
    }))
}

fn transpose<T: Clone>(a: &ArrayD<T>, perm: &[usize]) -> ArrayD<T> {
    a.view()
        .permuted_axes(IxDyn(perm))
        .as_standard_layout()
        .into_owned()
}

fn concat<T: Clone>(arrs: &[&ArrayD<T>], axis: usize) -> Option<ArrayD<T>> {
    let views: Vec<_> = arrs.iter().map(|a| a.view()).collect();
    ndarray::concatenate(Axis(axis), &views).ok()
}

fn cast<S: Elem, D: Elem>(a: &ArrayD<S>) -> Option<ArrayD<D>> {
    let data: Vec<D> = a
        .iter()
        .map(|v| match v.as_i128() {
            Some(i) => Some(D::from_i128(i)),
            None => D::from_f64(v.as_f64()),
        })
        .collect::<Option<_>>()?;
    ArrayD::from_shape_vec(IxDyn(a.shape()), data).ok()
}

fn cast_to<S: Elem>(a: &ArrayD<S>, to: i64) -> Option<Tensor> {
    let to = DataType::try_from(i32::try_from(to).ok()?).ok()?;
    Some(match to {
        DataType::Float => Tensor::F32(cast(a)?),
        DataType::Double => Tensor::F64(cast(a)?),
        DataType::Int8 => Tensor::I8(cast(a)?),
        DataType::Int16 => Tensor::I16(cast(a)?),
        DataType::Int32 => Tensor::I32(cast(a)?),
        DataType::Int64 => Tensor::I64(cast(a)?),
        DataType::Uint8 => Tensor::U8(cast(a)?),
        DataType::Uint16 => Tensor::U16(cast(a)?),
        DataType::Uint32 => Tensor::U32(cast(a)?),
        DataType::Uint64 => Tensor::U64(cast(a)?),
        DataType::Bool => Tensor::Bool(cast(a)?),
        _ => return None,
    })
}

/// `Range(start, limit, delta)` of one numeric type.
fn range<T: Arith>(start: &ArrayD<T>, limit: &ArrayD<T>, delta: &ArrayD<T>) -> Option<Tensor> {
    let one = |a: &ArrayD<T>| -> Option<T> {
        if a.len() == 1 {
            a.iter().next().copied()
        } else {
            None
        }
    };
    let (s, l, d) = (one(start)?, one(limit)?, one(delta)?);
    let data: Vec<T> = match (s.as_i128(), l.as_i128(), d.as_i128()) {
        (Some(s), Some(l), Some(d)) => {
            if d == 0 {
                return None;
            }
            // ceil((l - s) / d), at least 0; exact in i128.
            let diff = l - s;
            let n = if (diff > 0) == (d > 0) && diff != 0 {
                (diff + d - d.signum()) / d
            } else {
                0
            };
            let n = usize::try_from(n).ok()?;
            capped_count(&[n])?;
            (0..n as i128).map(|i| T::from_i128(s + i * d)).collect()
        }
        _ => {
            let (s, l, d) = (s.as_f64(), l.as_f64(), d.as_f64());
            let n = ((l - s) / d).ceil();
            if !n.is_finite() || d == 0.0 {
                return None;
            }
            let n = if n < 0.0 { 0.0 } else { n };
            if n > MAX_ELEMENTS as f64 {
                return None;
            }
            let (s, d) = (T::from_f64(s)?, T::from_f64(d)?);
            let mut v = Vec::with_capacity(n as usize);
            for i in 0..n as usize {
                v.push(s.bin(Bin::Add, T::from_i128(i as i128).bin(Bin::Mul, d)?)?);
            }
            v
        }
    };
    let n = data.len();
    Some(T::wrap(ArrayD::from_shape_vec(IxDyn(&[n]), data).ok()?))
}

/// Output shape of `Reshape`: `0` copies the input dim (unless `allowzero`),
/// one `-1` is inferred; the element count must be preserved.
fn reshape_shape(input: &[usize], spec: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let total = capped_count(input)?;
    let mut shape: Vec<Option<usize>> = Vec::with_capacity(spec.len());
    for (i, d) in spec.iter().enumerate() {
        shape.push(match *d {
            0 if !allowzero => Some(*input.get(i)?),
            -1 => None,
            d => Some(usize::try_from(d).ok()?),
        });
    }
    if shape.iter().filter(|d| d.is_none()).count() > 1 {
        return None;
    }
    let known = shape
        .iter()
        .flatten()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))?;
    let out: Vec<usize> = if shape.iter().any(|d| d.is_none()) {
        if known == 0 || total % known != 0 {
            return None;
        }
        shape.iter().map(|d| d.unwrap_or(total / known)).collect()
    } else {
        shape.into_iter().flatten().collect()
    };
    (capped_count(&out)? == total).then_some(out)
}

/// Start index and element count of one sliced axis (ONNX `Slice` clamping).
fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> Option<(i128, usize)> {
    if step == 0 {
        return None;
    }
    let d = dim as i128;
    let norm = |v: i64| {
        let v = v as i128;
        if v < 0 {
            v + d
        } else {
            v
        }
    };
    let (s, e, step) = (norm(start), norm(end), step as i128);
    let (s, e) = if step > 0 {
        (s.clamp(0, d), e.clamp(0, d))
    } else {
        (s.clamp(0, d - 1), e.clamp(-1, d - 1))
    };
    let n = if step > 0 {
        (e - s + step - 1) / step
    } else {
        (s - e + (-step) - 1) / (-step)
    };
    Some((s, usize::try_from(n.max(0)).ok()?))
}

/// Evaluates `node` on constant inputs (`None` for omitted optional inputs).
/// Returns the outputs, or `None` if the op, its types or its sizes are not
/// covered (see the module docs).
pub fn eval(node: &Node, inputs: &[Option<Tensor>]) -> Option<Vec<Tensor>> {
    let x = |i: usize| inputs.get(i).and_then(|t| t.as_ref());
    let k = node.kind();
    let out = match k {
        OpKind::Identity => x(0)?.clone(),
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div | OpKind::Mod | OpKind::Pow => {
            let op = match k {
                OpKind::Add => Bin::Add,
                OpKind::Sub => Bin::Sub,
                OpKind::Mul => Bin::Mul,
                OpKind::Div => Bin::Div,
                OpKind::Mod => Bin::Mod(node.attr_int("fmod").unwrap_or(0) != 0),
                _ => Bin::Pow,
            };
            pair!(x(0)?, x(1)?, |a, b| Elem::wrap(zip2(a, b, |p, q| p.bin(op, q))?), bool => return None)
        }
        OpKind::Neg
        | OpKind::Abs
        | OpKind::Relu
        | OpKind::Sqrt
        | OpKind::Reciprocal
        | OpKind::Exp
        | OpKind::Log
        | OpKind::Floor
        | OpKind::Ceil
        | OpKind::Round => numeric!(x(0)?, a => {
            let data = a.iter().map(|v| v.un(k)).collect::<Option<Vec<_>>>()?;
            Elem::wrap(ArrayD::from_shape_vec(IxDyn(a.shape()), data).ok()?)
        }),
        OpKind::Equal => pair!(x(0)?, x(1)?,
            |a, b| Tensor::Bool(zip2(a, b, |p, q| Some(p == q))?),
            bool => Tensor::Bool(zip2(a, b, |p, q| Some(p == q))?)),
        OpKind::Less | OpKind::Greater => {
            let less = k == OpKind::Less;
            pair!(x(0)?, x(1)?,
                |a, b| Tensor::Bool(zip2(a, b, |p, q| Some(if less { p < q } else { p > q }))?),
                bool => return None)
        }
        OpKind::And | OpKind::Or | OpKind::Xor => {
            let (Tensor::Bool(a), Tensor::Bool(b)) = (x(0)?, x(1)?) else {
                return None;
            };
            Tensor::Bool(zip2(a, b, |p, q| {
                Some(match k {
                    OpKind::And => p && q,
                    OpKind::Or => p || q,
                    _ => p != q,
                })
            })?)
        }
        OpKind::Not => {
            let Tensor::Bool(a) = x(0)? else { return None };
            Tensor::Bool(a.mapv(|v| !v))
        }
        OpKind::Where => {
            let Tensor::Bool(c) = x(0)? else { return None };
            pair!(x(1)?, x(2)?, |a, b| Elem::wrap(select(c, a, b)?),
                bool => Tensor::Bool(select(c, a, b)?))
        }
        OpKind::Cast => {
            let to = node.attr_int("to")?;
            each!(x(0)?, a => cast_to(a, to)?)
        }
        OpKind::Shape => {
            let s = shape_i64(x(0)?.shape());
            let r = s.len() as i64;
            let clamp = |v: i64| {
                let v = if v < 0 { v.saturating_add(r) } else { v };
                v.clamp(0, r) as usize
            };
            let start = clamp(node.attr_int("start").unwrap_or(0));
            let end = clamp(node.attr_int("end").unwrap_or(r));
            let s = if start < end {
                s[start..end].to_vec()
            } else {
                vec![]
            };
            Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[s.len()]), s).ok()?)
        }
        OpKind::Size => {
            let n = capped_count(x(0)?.shape())?;
            Tensor::I64(ArrayD::from_elem(IxDyn(&[]), n as i64))
        }
        OpKind::Reshape => {
            let t = x(0)?;
            let spec = x(1)?.i64s()?;
            let allowzero = node.attr_int("allowzero").unwrap_or(0) != 0;
            let shape = reshape_shape(t.shape(), &spec, allowzero)?;
            each!(t, a => Elem::wrap(reshape(a, &shape)?))
        }
        OpKind::Flatten => {
            let t = x(0)?;
            let r = t.shape().len();
            let axis = node.attr_int("axis").unwrap_or(1);
            let a = if axis < 0 { axis + r as i64 } else { axis };
            let a = usize::try_from(a).ok().filter(|a| *a <= r)?;
            let outer = capped_count(&t.shape()[..a])?;
            let inner = capped_count(&t.shape()[a..])?;
            each!(t, arr => Elem::wrap(reshape(arr, &[outer, inner])?))
        }
        OpKind::Unsqueeze | OpKind::Squeeze => {
            let t = x(0)?;
            let axes: Option<Vec<i64>> = match node.attr_ints("axes") {
                Some(a) => Some(a.to_vec()),
                None => match x(1) {
                    Some(a) => Some(a.i64s()?),
                    None => None,
                },
            };
            let mut shape: Vec<usize> = t.shape().to_vec();
            if k == OpKind::Unsqueeze {
                let axes = axes?;
                for a in norm_axes(&axes, shape.len() + axes.len())? {
                    shape.insert(a, 1);
                }
            } else {
                match axes {
                    Some(axes) => {
                        for a in norm_axes(&axes, shape.len())?.into_iter().rev() {
                            if shape[a] != 1 {
                                return None;
                            }
                            shape.remove(a);
                        }
                    }
                    None => shape.retain(|d| *d != 1),
                }
            }
            each!(t, a => Elem::wrap(reshape(a, &shape)?))
        }
        OpKind::Transpose => {
            let t = x(0)?;
            let r = t.shape().len();
            let perm: Vec<usize> = match node.attr_ints("perm") {
                Some(p) => p
                    .iter()
                    .map(|a| usize::try_from(*a).ok())
                    .collect::<Option<_>>()?,
                None => (0..r).rev().collect(),
            };
            // A permutation of 0..r: each axis exactly once.
            let mut check = perm.clone();
            check.sort_unstable();
            if check != (0..r).collect::<Vec<_>>() {
                return None;
            }
            each!(t, a => Elem::wrap(transpose(a, &perm)))
        }
        OpKind::Concat => {
            let ts: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect::<Option<_>>()?;
            let first = *ts.first()?;
            let rank = first.shape().len();
            let axis = norm_axis(node.attr_int("axis")?, rank)?;
            let mut along = 0usize;
            for t in &ts {
                let s = t.shape();
                if t.data_type() != first.data_type() || s.len() != rank {
                    return None;
                }
                if (0..rank).any(|i| i != axis && s[i] != first.shape()[i]) {
                    return None;
                }
                along = along.checked_add(s[axis])?;
            }
            let mut out_shape = first.shape().to_vec();
            out_shape[axis] = along;
            capped_count(&out_shape)?;
            macro_rules! cat {
                ($v:ident) => {{
                    let arrs: Vec<_> = ts
                        .iter()
                        .map(|t| match t {
                            Tensor::$v(a) => Some(a),
                            _ => None,
                        })
                        .collect::<Option<_>>()?;
                    Tensor::$v(concat(&arrs, axis)?)
                }};
            }
            match first {
                Tensor::F32(_) => cat!(F32),
                Tensor::F64(_) => cat!(F64),
                Tensor::I8(_) => cat!(I8),
                Tensor::I16(_) => cat!(I16),
                Tensor::I32(_) => cat!(I32),
                Tensor::I64(_) => cat!(I64),
                Tensor::U8(_) => cat!(U8),
                Tensor::U16(_) => cat!(U16),
                Tensor::U32(_) => cat!(U32),
                Tensor::U64(_) => cat!(U64),
                Tensor::Bool(_) => cat!(Bool),
            }
        }
        OpKind::Gather => {
            let t = x(0)?;
            let idx = x(1)?;
            let ind = idx.indices()?;
            let r = t.shape().len();
            let axis = norm_axis(node.attr_int("axis").unwrap_or(0), r)?;
            let n = t.shape()[axis] as i64;
            let flat: Vec<usize> = ind
                .iter()
                .map(|i| {
                    let j = if *i < 0 { i + n } else { *i };
                    usize::try_from(j).ok().filter(|j| (*j as i64) < n)
                })
                .collect::<Option<_>>()?;
            let mut out_shape: Vec<usize> = t.shape()[..axis].to_vec();
            out_shape.extend_from_slice(idx.shape());
            out_shape.extend_from_slice(&t.shape()[axis + 1..]);
            capped_count(&out_shape)?;
            each!(t, a => Elem::wrap(reshape(&a.select(Axis(axis), &flat), &out_shape)?))
        }
        OpKind::Expand => {
            let t = x(0)?;
            let spec: Vec<usize> = x(1)?
                .i64s()?
                .iter()
                .map(|d| usize::try_from(*d).ok())
                .collect::<Option<_>>()?;
            let shape = broadcast_shape(t.shape(), &spec)?;
            capped_count(&shape)?;
            each!(t, a => Elem::wrap(a.broadcast(IxDyn(&shape))?.to_owned()))
        }
        OpKind::Tile => {
            let t = x(0)?;
            let reps = x(1)?.i64s()?;
            if reps.len() != t.shape().len() {
                return None;
            }
            let shape: Vec<usize> = t
                .shape()
                .iter()
                .zip(&reps)
                .map(|(d, r)| usize::try_from(*r).ok().and_then(|r| d.checked_mul(r)))
                .collect::<Option<_>>()?;
            let dims = t.shape().to_vec();
            each!(t, a => Elem::wrap(gather_fn(a, &shape, |i, from| {
                for (k, v) in i.iter().enumerate() {
                    from[k] = v % dims[k];
                }
            })?))
        }
        OpKind::Slice => {
            let t = x(0)?;
            let rank = t.shape().len();
            let (starts, ends, axes, steps) = if node.attr("starts").is_some() {
                (
                    node.attr_ints("starts")?.to_vec(),
                    node.attr_ints("ends")?.to_vec(),
                    node.attr_ints("axes").map(|a| a.to_vec()),
                    None,
                )
            } else {
                (
                    x(1)?.indices()?,
                    x(2)?.indices()?,
                    match x(3) {
                        Some(a) => Some(a.indices()?),
                        None => None,
                    },
                    match x(4) {
                        Some(s) => Some(s.indices()?),
                        None => None,
                    },
                )
            };
            let n = starts.len();
            let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; n]);
            if ends.len() != n || axes.len() != n || steps.len() != n {
                return None;
            }
            // Distinct axes in the given order (not sorted).
            let ax: Vec<usize> = axes
                .iter()
                .map(|a| norm_axis(*a, rank))
                .collect::<Option<_>>()?;
            if norm_axes(&axes, rank)?.len() != n {
                return None;
            }
            let mut first = vec![0i128; rank];
            let mut step = vec![1i128; rank];
            let mut shape = t.shape().to_vec();
            for i in 0..n {
                let a = ax[i];
                let (s, len) = slice_axis(shape[a], starts[i], ends[i], steps[i])?;
                first[a] = s;
                step[a] = steps[i] as i128;
                shape[a] = len;
            }
            each!(t, a => Elem::wrap(gather_fn(a, &shape, |i, from| {
                for (k, v) in i.iter().enumerate() {
                    // In range by construction of `shape`.
                    from[k] = (first[k] + *v as i128 * step[k]) as usize;
                }
            })?))
        }
        OpKind::Range => match (x(0)?, x(1)?, x(2)?) {
            (Tensor::F32(s), Tensor::F32(l), Tensor::F32(d)) => range(s, l, d)?,
            (Tensor::F64(s), Tensor::F64(l), Tensor::F64(d)) => range(s, l, d)?,
            (Tensor::I16(s), Tensor::I16(l), Tensor::I16(d)) => range(s, l, d)?,
            (Tensor::I32(s), Tensor::I32(l), Tensor::I32(d)) => range(s, l, d)?,
            (Tensor::I64(s), Tensor::I64(l), Tensor::I64(d)) => range(s, l, d)?,
            _ => return None,
        },
        OpKind::ConstantOfShape => {
            let shape: Vec<usize> = x(0)?
                .i64s()?
                .iter()
                .map(|d| usize::try_from(*d).ok())
                .collect::<Option<_>>()?;
            capped_count(&shape)?;
            let value = match node.attr_tensor("value") {
                Some(v) => Tensor::from_proto(v)?,
                None => Tensor::F32(ArrayD::zeros(IxDyn(&[1]))),
            };
            each!(&value, v => {
                if v.len() != 1 {
                    return None;
                }
                Elem::wrap(ArrayD::from_elem(IxDyn(&shape), *v.iter().next()?))
            })
        }
        OpKind::ArgMax
        | OpKind::AveragePool
        | OpKind::BatchNormalization
        | OpKind::Clip
        | OpKind::Constant
        | OpKind::Conv
        | OpKind::ConvTranspose
        | OpKind::DepthToSpace
        | OpKind::DequantizeLinear
        | OpKind::Dropout
        | OpKind::DynamicQuantizeLinear
        | OpKind::Einsum
        | OpKind::Elu
        | OpKind::Erf
        | OpKind::GatherElements
        | OpKind::GatherND
        | OpKind::Gelu
        | OpKind::Gemm
        | OpKind::GlobalAveragePool
        | OpKind::GlobalMaxPool
        | OpKind::GroupNormalization
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::If
        | OpKind::InstanceNormalization
        | OpKind::LayerNormalization
        | OpKind::LeakyRelu
        | OpKind::LogSoftmax
        | OpKind::Loop
        | OpKind::LpNormalization
        | OpKind::LRN
        | OpKind::LSTM
        | OpKind::GRU
        | OpKind::RNN
        | OpKind::MatMul
        | OpKind::MatMulInteger
        | OpKind::Max
        | OpKind::MaxPool
        | OpKind::Mean
        | OpKind::Min
        | OpKind::Mish
        | OpKind::Pad
        | OpKind::PRelu
        | OpKind::QLinearConv
        | OpKind::QLinearMatMul
        | OpKind::QuantizeLinear
        | OpKind::ReduceL2
        | OpKind::ReduceMax
        | OpKind::ReduceMean
        | OpKind::ReduceMin
        | OpKind::ReduceProd
        | OpKind::ReduceSum
        | OpKind::Resize
        | OpKind::Scan
        | OpKind::ScatterElements
        | OpKind::ScatterND
        | OpKind::Selu
        | OpKind::Sigmoid
        | OpKind::Sign
        | OpKind::Sin
        | OpKind::Cos
        | OpKind::Softmax
        | OpKind::Softplus
        | OpKind::Softsign
        | OpKind::SpaceToDepth
        | OpKind::Split
        | OpKind::Sum
        | OpKind::Tanh
        | OpKind::TopK
        | OpKind::Upsample
        | OpKind::CumSum
        | OpKind::NonZero
        | OpKind::OneHot
        | OpKind::Trilu
        | OpKind::Celu
        | OpKind::ThresholdedRelu
        | OpKind::Swish
        | OpKind::Other => return None,
    };
    capped_count(out.shape())?;
    Some(vec![out])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Regression tests for inputs that panicked or exhausted memory before
    //! the evaluator checked its arithmetic and sizes (issue 12, defect 3).
    //! The op-by-op comparison with ONNX's reference implementation is in
    //! `tests/eval_reference.rs`.

    use super::*;
    use quench_onnx::proto::AttributeProto;

    fn node(op: &str) -> Node {
        Node::new(op, "n")
    }

    fn with_ints(mut n: Node, name: &str, v: &[i64]) -> Node {
        n.set_attr(AttributeProto {
            name: Some(name.into()),
            r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::Ints as i32),
            ints: v.to_vec(),
            ..Default::default()
        });
        n
    }

    fn i64s(dims: &[usize], v: Vec<i64>) -> Option<Tensor> {
        Some(Tensor::I64(ArrayD::from_shape_vec(IxDyn(dims), v).ok()?))
    }

    fn f32s(dims: &[usize], v: Vec<f32>) -> Option<Tensor> {
        Some(Tensor::F32(ArrayD::from_shape_vec(IxDyn(dims), v).ok()?))
    }

    #[test]
    fn integer_division_edges_decline() {
        // i64::MIN / -1 overflowed (panic in debug, SIGFPE-like abort
        // semantics in ONNX); x / 0 and x mod 0 are undefined.
        let div = node("Div");
        assert_eq!(
            eval(&div, &[i64s(&[1], vec![i64::MIN]), i64s(&[1], vec![-1])]),
            None
        );
        assert_eq!(eval(&div, &[i64s(&[1], vec![5]), i64s(&[], vec![0])]), None);
        assert_eq!(
            eval(&node("Mod"), &[i64s(&[1], vec![5]), i64s(&[1], vec![0])]),
            None
        );
        assert_eq!(
            eval(
                &node("Mod"),
                &[i64s(&[1], vec![i64::MIN]), i64s(&[1], vec![-1])]
            ),
            None
        );
        // Still folds the defined cases.
        assert_eq!(
            eval(&div, &[i64s(&[2], vec![-7, 7]), i64s(&[], vec![2])]),
            Some(vec![Tensor::I64(
                ArrayD::from_shape_vec(IxDyn(&[2]), vec![-3, 3]).unwrap()
            )])
        );
    }

    #[test]
    fn scalar_inputs_of_axis_ops_decline() {
        // Gather and Squeeze of a scalar indexed shape[0] of a rank-0 shape.
        let scalar = f32s(&[], vec![1.0]);
        assert_eq!(
            eval(&node("Gather"), &[scalar.clone(), i64s(&[], vec![0])]),
            None
        );
        assert_eq!(
            eval(&node("Squeeze"), &[scalar.clone(), i64s(&[1], vec![0])]),
            None
        );
        assert_eq!(
            eval(
                &with_ints(node("Squeeze"), "axes", &[-1]),
                std::slice::from_ref(&scalar)
            ),
            None
        );
        let mut concat = node("Concat");
        concat.set_attr(AttributeProto {
            name: Some("axis".into()),
            r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::Int as i32),
            i: Some(0),
            ..Default::default()
        });
        assert_eq!(eval(&concat, &[scalar.clone(), scalar.clone()]), None);
        // Squeeze with no axes of a scalar is the scalar.
        assert_eq!(
            eval(&node("Squeeze"), std::slice::from_ref(&scalar)),
            Some(vec![scalar.unwrap()])
        );
    }

    #[test]
    fn transpose_perm_must_be_a_permutation() {
        let t = f32s(&[2, 3], vec![0.0; 6]);
        for perm in [&[0, 0][..], &[1, 1], &[0], &[0, 1, 2], &[0, -1]] {
            let n = with_ints(node("Transpose"), "perm", perm);
            assert_eq!(eval(&n, std::slice::from_ref(&t)), None, "perm {perm:?}");
        }
        let n = with_ints(node("Transpose"), "perm", &[1, 0]);
        assert_eq!(
            eval(&n, &[t]).map(|o| o[0].shape().to_vec()),
            Some(vec![3, 2])
        );
    }

    #[test]
    fn sizes_are_checked_before_allocating() {
        // [2^32, 2^32] has 2^64 elements: the product wrapped to 0 before.
        let cos = node("ConstantOfShape");
        for shape in [
            vec![1i64 << 32, 1 << 32],
            vec![1 << 32, 1 << 32, 0],
            vec![1 << 62, 4],
        ] {
            let n = shape.len();
            assert_eq!(eval(&cos, &[i64s(&[n], shape.clone())]), None, "{shape:?}");
        }
        // Add of [1, N] and [N, 1] with N = 60000 asked for 14 GB; it must
        // decline without materialising anything (this test would take
        // minutes and gigabytes otherwise).
        let n = 60_000;
        let start = std::time::Instant::now();
        let row = f32s(&[1, n], vec![1.0; n]);
        let col = f32s(&[n, 1], vec![2.0; n]);
        assert_eq!(eval(&node("Add"), &[row, col]), None);
        assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
        // Expand, Tile and Range over the cap.
        assert_eq!(
            eval(
                &node("Expand"),
                &[f32s(&[1], vec![1.0]), i64s(&[2], vec![1 << 31, 1 << 31])]
            ),
            None
        );
        assert_eq!(
            eval(
                &node("Tile"),
                &[f32s(&[2], vec![1.0, 2.0]), i64s(&[1], vec![1 << 62])]
            ),
            None
        );
        assert_eq!(
            eval(
                &node("Range"),
                &[
                    i64s(&[], vec![0]),
                    i64s(&[], vec![i64::MAX]),
                    i64s(&[], vec![1])
                ]
            ),
            None
        );
        assert_eq!(
            eval(
                &node("Range"),
                &[
                    i64s(&[], vec![i64::MIN]),
                    i64s(&[], vec![i64::MAX]),
                    i64s(&[], vec![i64::MAX])
                ]
            )
            .map(|o| o[0].clone()),
            i64s(&[3], vec![i64::MIN, -1, i64::MAX - 1])
        );
    }

    #[test]
    fn constant_of_shape_keeps_the_value_type() {
        // A bool `value` became a float tensor before (issue 12, defect 1).
        let mut n = node("ConstantOfShape");
        n.set_attr(AttributeProto {
            name: Some("value".into()),
            r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::Tensor as i32),
            t: Some(quench_ir::tensor::from_raw(
                "v",
                DataType::Bool,
                &[1],
                vec![1],
            )),
            ..Default::default()
        });
        let out = eval(&n, &[i64s(&[2], vec![2, 3])]).unwrap();
        assert_eq!(
            out[0],
            Tensor::Bool(ArrayD::from_elem(IxDyn(&[2, 3]), true))
        );
        let p = out[0].to_proto("m");
        assert_eq!(p.data_type(), DataType::Bool as i32);
        assert_eq!(p.raw_data.as_deref(), Some(&[1u8; 6][..]));
    }

    #[test]
    fn malformed_constants_are_not_decoded() {
        // Short raw data, negative dims, unknown types, huge dims.
        let mut t = quench_ir::tensor::from_f32("w", &[4], &[1.0; 4]);
        t.dims = vec![4, (1 << 60) + 1];
        assert_eq!(Tensor::from_proto(&t), None);
        t.dims = vec![-4];
        assert_eq!(Tensor::from_proto(&t), None);
        t.dims = vec![5];
        assert_eq!(Tensor::from_proto(&t), None);
        t.dims = vec![4];
        t.data_type = Some(999);
        assert_eq!(Tensor::from_proto(&t), None);
        t.data_type = Some(0);
        assert_eq!(Tensor::from_proto(&t), None);
    }
}
