//! A small reference evaluator for constant folding.
//!
//! Covers the ops that constant subgraphs in exported models are made of
//! (shape arithmetic, reshapes of weights, element-wise math on constants)
//! for f32 and i64 tensors. Anything else returns `None` and the node is
//! left alone: declining is always safe.

use ndarray::{ArrayD, Axis, IxDyn};
use quench_ir::tensor::{self, numel};
use quench_ir::{Node, OpKind};
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::TensorProto;

/// An evaluated tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

/// Largest result the folder will materialise (elements).
const MAX_ELEMENTS: usize = 1 << 24;

impl Tensor {
    pub fn from_proto(t: &TensorProto) -> Option<Tensor> {
        let dims: Vec<usize> = t
            .dims
            .iter()
            .map(|d| usize::try_from(*d).ok())
            .collect::<Option<_>>()?;
        numel(&t.dims)?;
        match DataType::try_from(t.data_type()).ok()? {
            DataType::Float => ArrayD::from_shape_vec(IxDyn(&dims), tensor::to_f32(t).ok()?)
                .ok()
                .map(Tensor::F32),
            DataType::Int64 => ArrayD::from_shape_vec(IxDyn(&dims), tensor::to_i64(t).ok()?)
                .ok()
                .map(Tensor::I64),
            _ => None,
        }
    }

    pub fn to_proto(&self, name: &str) -> TensorProto {
        match self {
            Tensor::F32(a) => {
                let dims: Vec<i64> = a.shape().iter().map(|d| *d as i64).collect();
                tensor::from_f32(name, &dims, &a.iter().copied().collect::<Vec<_>>())
            }
            Tensor::I64(a) => {
                let dims: Vec<i64> = a.shape().iter().map(|d| *d as i64).collect();
                tensor::from_i64(name, &dims, &a.iter().copied().collect::<Vec<_>>())
            }
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::I64(a) => a.shape(),
        }
    }

    fn as_i64s(&self) -> Option<Vec<i64>> {
        match self {
            Tensor::I64(a) => Some(a.iter().copied().collect()),
            Tensor::F32(_) => None,
        }
    }

    fn map_layout(
        &self,
        f: impl Fn(&ArrayD<f32>) -> Option<ArrayD<f32>>,
        g: impl Fn(&ArrayD<i64>) -> Option<ArrayD<i64>>,
    ) -> Option<Tensor> {
        match self {
            Tensor::F32(a) => f(a).map(Tensor::F32),
            Tensor::I64(a) => g(a).map(Tensor::I64),
        }
    }
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

fn binary<T: Clone>(a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(&T, &T) -> T) -> Option<ArrayD<T>> {
    let s = broadcast_shape(a.shape(), b.shape())?;
    let av = a.broadcast(IxDyn(&s))?;
    let bv = b.broadcast(IxDyn(&s))?;
    let data: Vec<T> = av.iter().zip(bv.iter()).map(|(x, y)| f(x, y)).collect();
    ArrayD::from_shape_vec(IxDyn(&s), data).ok()
}

fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|a| *a < rank.max(1))
}

fn reshape_to(t: &Tensor, shape: Vec<usize>) -> Option<Tensor> {
    t.map_layout(
        |a| a.to_shape(IxDyn(&shape)).ok().map(|v| v.to_owned()),
        |a| a.to_shape(IxDyn(&shape)).ok().map(|v| v.to_owned()),
    )
}

/// Evaluates `node` on constant inputs (`None` for omitted optional inputs).
/// Returns the outputs, or `None` if the op or its types are not covered.
pub fn eval(node: &Node, inputs: &[Option<Tensor>]) -> Option<Vec<Tensor>> {
    let x = |i: usize| inputs.get(i).and_then(|t| t.as_ref());
    let out = match node.kind() {
        OpKind::Identity => x(0)?.clone(),
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div | OpKind::Pow => {
            let k = node.kind();
            match (x(0)?, x(1)?) {
                (Tensor::F32(a), Tensor::F32(b)) => Tensor::F32(binary(a, b, |p, q| match k {
                    OpKind::Add => p + q,
                    OpKind::Sub => p - q,
                    OpKind::Mul => p * q,
                    OpKind::Div => p / q,
                    _ => p.powf(*q),
                })?),
                (Tensor::I64(a), Tensor::I64(b)) => {
                    if k == OpKind::Pow || (k == OpKind::Div && b.iter().any(|v| *v == 0)) {
                        return None;
                    }
                    Tensor::I64(binary(a, b, |p, q| match k {
                        OpKind::Add => p.wrapping_add(*q),
                        OpKind::Sub => p.wrapping_sub(*q),
                        OpKind::Mul => p.wrapping_mul(*q),
                        // ONNX integer Div truncates toward zero, like Rust.
                        _ => p / q,
                    })?)
                }
                _ => return None,
            }
        }
        OpKind::Neg
        | OpKind::Sqrt
        | OpKind::Reciprocal
        | OpKind::Exp
        | OpKind::Log
        | OpKind::Relu
        | OpKind::Abs => {
            let k = node.kind();
            match x(0)? {
                Tensor::F32(a) => Tensor::F32(a.mapv(|v| match k {
                    OpKind::Neg => -v,
                    OpKind::Sqrt => v.sqrt(),
                    OpKind::Reciprocal => 1.0 / v,
                    OpKind::Exp => v.exp(),
                    OpKind::Log => v.ln(),
                    OpKind::Relu => v.max(0.0),
                    _ => v.abs(),
                })),
                Tensor::I64(a) => match k {
                    OpKind::Neg => Tensor::I64(a.mapv(|v| v.wrapping_neg())),
                    OpKind::Abs => Tensor::I64(a.mapv(|v| v.wrapping_abs())),
                    OpKind::Relu => Tensor::I64(a.mapv(|v| v.max(0))),
                    _ => return None,
                },
            }
        }
        OpKind::Cast => {
            let to = node.attr_int("to")?;
            match (x(0)?, to) {
                (Tensor::F32(a), t) if t == DataType::Float as i64 => Tensor::F32(a.clone()),
                (Tensor::I64(a), t) if t == DataType::Int64 as i64 => Tensor::I64(a.clone()),
                (Tensor::I64(a), t) if t == DataType::Float as i64 => {
                    Tensor::F32(a.mapv(|v| v as f32))
                }
                (Tensor::F32(a), t) if t == DataType::Int64 as i64 => {
                    if a.iter().any(|v| !v.is_finite()) {
                        return None;
                    }
                    Tensor::I64(a.mapv(|v| v.trunc() as i64))
                }
                _ => return None,
            }
        }
        OpKind::Shape => {
            let s: Vec<i64> = x(0)?.shape().iter().map(|d| *d as i64).collect();
            let r = s.len() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).clamp(0, r) } else { v.clamp(0, r) } as usize;
            let start = clamp(node.attr_int("start").unwrap_or(0));
            let end = clamp(node.attr_int("end").unwrap_or(r));
            let s = if start < end {
                s[start..end].to_vec()
            } else {
                vec![]
            };
            Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[s.len()]), s).ok()?)
        }
        OpKind::Reshape => {
            let t = x(0)?;
            let spec = x(1)?.as_i64s()?;
            let allowzero = node.attr_int("allowzero").unwrap_or(0) != 0;
            let total: usize = t.shape().iter().product();
            let mut shape: Vec<i64> = Vec::with_capacity(spec.len());
            for (i, d) in spec.iter().enumerate() {
                shape.push(if *d == 0 && !allowzero {
                    *t.shape().get(i)? as i64
                } else {
                    *d
                });
            }
            let neg = shape.iter().filter(|d| **d == -1).count();
            if neg > 1 || shape.iter().any(|d| *d < -1) {
                return None;
            }
            if neg == 1 {
                let known: i64 = shape.iter().filter(|d| **d != -1).product();
                if known <= 0 || total as i64 % known != 0 {
                    return None;
                }
                for d in shape.iter_mut() {
                    if *d == -1 {
                        *d = total as i64 / known;
                    }
                }
            }
            let shape: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            if shape.iter().product::<usize>() != total {
                return None;
            }
            reshape_to(t, shape)?
        }
        OpKind::Flatten => {
            let t = x(0)?;
            let r = t.shape().len();
            let axis = node.attr_int("axis").unwrap_or(1);
            let a = if axis < 0 { axis + r as i64 } else { axis };
            let a = usize::try_from(a).ok().filter(|a| *a <= r)?;
            let outer: usize = t.shape()[..a].iter().product();
            let inner: usize = t.shape()[a..].iter().product();
            reshape_to(t, vec![outer, inner])?
        }
        OpKind::Unsqueeze | OpKind::Squeeze => {
            let t = x(0)?;
            let axes: Option<Vec<i64>> = match node.attr_ints("axes") {
                Some(a) => Some(a.to_vec()),
                None => x(1).and_then(|a| a.as_i64s()),
            };
            let mut shape: Vec<usize> = t.shape().to_vec();
            if node.kind() == OpKind::Unsqueeze {
                let axes = axes?;
                let r = shape.len() + axes.len();
                let mut ax: Vec<usize> = axes
                    .iter()
                    .map(|a| norm_axis(*a, r))
                    .collect::<Option<_>>()?;
                ax.sort();
                for a in ax {
                    if a > shape.len() {
                        return None;
                    }
                    shape.insert(a, 1);
                }
            } else {
                match axes {
                    Some(axes) => {
                        let r = shape.len();
                        let mut ax: Vec<usize> = axes
                            .iter()
                            .map(|a| norm_axis(*a, r))
                            .collect::<Option<_>>()?;
                        ax.sort();
                        for a in ax.into_iter().rev() {
                            if shape[a] != 1 {
                                return None;
                            }
                            shape.remove(a);
                        }
                    }
                    None => shape.retain(|d| *d != 1),
                }
            }
            reshape_to(t, shape)?
        }
        OpKind::Transpose => {
            let t = x(0)?;
            let r = t.shape().len();
            let perm: Vec<usize> = match node.attr_ints("perm") {
                Some(p) => p.iter().map(|a| norm_axis(*a, r)).collect::<Option<_>>()?,
                None => (0..r).rev().collect(),
            };
            let mut check = perm.clone();
            check.sort();
            if check != (0..r).collect::<Vec<_>>() {
                return None;
            }
            t.map_layout(
                |a| {
                    Some(
                        a.clone()
                            .permuted_axes(IxDyn(&perm))
                            .as_standard_layout()
                            .to_owned(),
                    )
                },
                |a| {
                    Some(
                        a.clone()
                            .permuted_axes(IxDyn(&perm))
                            .as_standard_layout()
                            .to_owned(),
                    )
                },
            )?
        }
        OpKind::Concat => {
            let ts: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect::<Option<_>>()?;
            let first = ts.first()?;
            let axis = norm_axis(node.attr_int("axis")?, first.shape().len())?;
            match first {
                Tensor::F32(_) => {
                    let arrs: Vec<_> = ts
                        .iter()
                        .map(|t| {
                            if let Tensor::F32(a) = t {
                                Some(a.view())
                            } else {
                                None
                            }
                        })
                        .collect::<Option<_>>()?;
                    Tensor::F32(ndarray::concatenate(Axis(axis), &arrs).ok()?)
                }
                Tensor::I64(_) => {
                    let arrs: Vec<_> = ts
                        .iter()
                        .map(|t| {
                            if let Tensor::I64(a) = t {
                                Some(a.view())
                            } else {
                                None
                            }
                        })
                        .collect::<Option<_>>()?;
                    Tensor::I64(ndarray::concatenate(Axis(axis), &arrs).ok()?)
                }
            }
        }
        OpKind::Gather => {
            let t = x(0)?;
            let idx = x(1)?;
            let Tensor::I64(ind) = idx else { return None };
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
            out_shape.extend_from_slice(ind.shape());
            out_shape.extend_from_slice(&t.shape()[axis + 1..]);
            let sel = |a: &ArrayD<f32>| {
                a.select(Axis(axis), &flat)
                    .to_shape(IxDyn(&out_shape))
                    .ok()
                    .map(|v| v.to_owned())
            };
            let sel_i = |a: &ArrayD<i64>| {
                a.select(Axis(axis), &flat)
                    .to_shape(IxDyn(&out_shape))
                    .ok()
                    .map(|v| v.to_owned())
            };
            t.map_layout(sel, sel_i)?
        }
        OpKind::ConstantOfShape => {
            let shape: Vec<usize> = x(0)?
                .as_i64s()?
                .iter()
                .map(|d| usize::try_from(*d).ok())
                .collect::<Option<_>>()?;
            if shape.iter().product::<usize>() > MAX_ELEMENTS {
                return None;
            }
            // A value of a type not covered here (bool, i32, ...) declines;
            // the f32 default applies only when there is no value at all.
            let value = match node.attr_tensor("value") {
                Some(v) => Tensor::from_proto(v)?,
                None => Tensor::F32(ArrayD::zeros(IxDyn(&[1]))),
            };
            match value {
                Tensor::F32(v) => Tensor::F32(ArrayD::from_elem(IxDyn(&shape), *v.iter().next()?)),
                Tensor::I64(v) => Tensor::I64(ArrayD::from_elem(IxDyn(&shape), *v.iter().next()?)),
            }
        }
        _ => return None,
    };
    if out.shape().iter().product::<usize>() > MAX_ELEMENTS {
        return None;
    }
    Some(vec![out])
}
