//! The comparison helpers of `tests/common` must see the failures they
//! exist for: NaN, infinities, a missing output, a shape or dtype mismatch,
//! and report figures that are `null` or not numbers.

// `!(x <= tol)` on purpose: NaN must fail the check.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::*;
use ndarray::{ArrayD, IxDyn};
use quench_verify::ArrayData;

fn f(v: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

#[test]
fn rel_err_is_exact_on_finite_data() {
    let e = rel_err(&f(&[1.0, -2.0, 4.0]), &f(&[1.0, -2.0, 4.5])).unwrap();
    assert!((e - 0.125).abs() < 1e-7, "{e}");
    assert_eq!(rel_err(&f(&[0.0, 0.0]), &f(&[0.0, 0.0])).unwrap(), 0.0);
}

#[test]
fn rel_err_rejects_nan_and_inf_on_either_side() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert!(rel_err(&f(&[1.0, 2.0]), &f(&[1.0, bad])).is_err(), "{bad}");
        assert!(rel_err(&f(&[bad, 2.0]), &f(&[1.0, 2.0])).is_err(), "{bad}");
        // The old fold with f32::max returned 0 here; NaN now fails `<=`.
        let e = max_rel_err(&f(&[1.0, 2.0]), &f(&[1.0, bad]));
        assert!(!(e <= 1e-5), "{bad}: {e}");
    }
}

#[test]
fn rel_err_rejects_shape_mismatch() {
    let a = ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1f32; 4]).unwrap();
    let b = ArrayD::from_shape_vec(IxDyn(&[4]), vec![1f32; 4]).unwrap();
    assert!(rel_err(&a, &b).unwrap_err().contains("shape"));
}

#[test]
fn compare_outputs_sees_missing_outputs_dtype_and_values() {
    let a = ArrayData::F32(f(&[1.0, 2.0]));
    let b = ArrayData::F32(f(&[1.0, 2.0]));
    assert_eq!(compare_outputs(&[a.clone()], &[b.clone()], 1e-5), Ok(()));
    // A missing output (zip would have hidden it).
    let e = compare_outputs(&[a.clone(), a.clone()], &[b.clone()], 1e-5).unwrap_err();
    assert!(e.contains("2 reference outputs but 1"), "{e}");
    // Nothing compared is not a pass.
    assert!(compare_outputs(&[], &[], 1e-5).is_err());
    // Same values, different element type.
    let d = ArrayData::F64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1f64, 2.0]).unwrap());
    let e = compare_outputs(&[a.clone()], &[d], 1e-5).unwrap_err();
    assert!(e.contains("element type"), "{e}");
    // NaN in the second output.
    let n = ArrayData::F32(f(&[1.0, f32::NAN]));
    let e = compare_outputs(&[a.clone(), a.clone()], &[b.clone(), n], 1e-5).unwrap_err();
    assert!(e.starts_with("output 1"), "{e}");
    // Over the tolerance.
    let c = ArrayData::F32(f(&[1.0, 2.1]));
    assert!(compare_outputs(&[a], &[c], 1e-5).is_err());
}

#[test]
fn finite_f64_rejects_null_strings_and_missing_fields() {
    let j: serde_json::Value = serde_json::json!({"a": 3.5, "b": null, "c": "nan", "d": "inf"});
    assert_eq!(finite_f64(&j["a"]), Ok(3.5));
    for k in ["b", "c", "d", "missing"] {
        assert!(finite_f64(&j[k]).is_err(), "{k}");
    }
}

#[test]
fn sqnr_of_accepts_numbers_and_exact_infinity_only() {
    use serde_json::json;
    assert_eq!(
        sqnr_of(&json!({"sqnr_db": 31.5, "max_abs_err": 0.1})),
        Ok(31.5)
    );
    let exact = json!({"sqnr_db": null, "max_abs_err": 0.0, "non_finite": {"sqnr_db": "inf"}});
    assert_eq!(sqnr_of(&exact), Ok(f64::INFINITY));
    for bad in [
        json!({"sqnr_db": null, "max_abs_err": null, "non_finite": {"sqnr_db": "nan"}}),
        json!({"sqnr_db": null, "max_abs_err": 0.5, "non_finite": {"sqnr_db": "inf"}}),
        json!({"sqnr_db": null}),
        json!({"sqnr_db": "nan"}),
        json!({"sqnr_db": "inf", "max_abs_err": 0.0}),
        json!({}),
    ] {
        assert!(sqnr_of(&bad).is_err(), "{bad}");
    }
}
