use super::*;

fn f8(kind: FloatKind) -> impl Fn(f32) -> u32 {
    move |x| kind.encode(x)
}

#[test]
fn float8_max_and_special_values() {
    let e4 = f8(FloatKind::F8E4M3FN);
    assert_eq!(FloatKind::F8E4M3FN.max_finite(), 448.0);
    assert_eq!(FloatKind::F8E5M2.max_finite(), 57344.0);
    assert_eq!(FloatKind::F16.max_finite(), 65504.0);
    assert_eq!(FloatKind::BF16.max_finite() as f32, 3.3895314e38);
    assert_eq!(e4(448.0), 0x7E);
    assert_eq!(FloatKind::F8E4M3FN.decode(0x7E), 448.0);
    assert_eq!(FloatKind::F8E4M3FN.decode(0xFE), -448.0);
    // Saturation (saturate=1): beyond max, and infinities (E4M3FN has none).
    assert_eq!(e4(449.0), 0x7E);
    assert_eq!(e4(464.0), 0x7E); // tie between 448 and the NaN slot
    assert_eq!(e4(1e30), 0x7E);
    assert_eq!(e4(f32::INFINITY), 0x7E);
    assert_eq!(e4(f32::NEG_INFINITY), 0xFE);
    // NaN stays NaN, with its sign.
    assert_eq!(e4(f32::NAN), 0x7F);
    assert_eq!(e4(-f32::NAN), 0xFF);
    assert!(FloatKind::F8E4M3FN.decode(0x7F).is_nan());
    assert!(FloatKind::F8E4M3FN.decode(0xFF).is_nan());
    // E5M2: IEEE-like; saturating conversion maps inf to max too.
    let e5 = f8(FloatKind::F8E5M2);
    assert_eq!(e5(57344.0), 0x7B);
    assert_eq!(e5(61440.0), 0x7B); // tie to the (even) infinity slot saturates
    assert_eq!(e5(f32::INFINITY), 0x7B);
    assert_eq!(e5(f32::NEG_INFINITY), 0xFB);
    assert_eq!(e5(f32::NAN), 0x7E);
    assert_eq!(FloatKind::F8E5M2.decode(0x7C), f32::INFINITY);
    assert!(FloatKind::F8E5M2.decode(0x7D).is_nan());
    // Zero and negative zero.
    assert_eq!(e4(0.0), 0x00);
    assert_eq!(e4(-0.0), 0x80);
}

#[test]
fn float8_subnormals_and_ties() {
    let k = FloatKind::F8E4M3FN;
    // Smallest subnormal 2^-9, largest subnormal 7 * 2^-9, smallest normal 2^-6.
    assert_eq!(k.spec().min_subnormal(), 2f64.powi(-9));
    assert_eq!(k.encode(2f32.powi(-9)), 0x01);
    assert_eq!(k.encode(7.0 * 2f32.powi(-9)), 0x07);
    assert_eq!(k.encode(2f32.powi(-6)), 0x08);
    // Half the smallest subnormal ties to zero (even); just above rounds up.
    assert_eq!(k.encode(2f32.powi(-10)), 0x00);
    assert_eq!(k.encode(2f32.powi(-10) * 1.0001), 0x01);
    // 1.5 * 2^-9 ties between codes 1 and 2: even is 2.
    assert_eq!(k.encode(1.5 * 2f32.powi(-9)), 0x02);
    // Normal ties: 1.0625 lies between 1.0 (0x38) and 1.125 (0x39) -> 1.0;
    // 1.1875 between 1.125 and 1.25 (0x3A) -> 1.25.
    assert_eq!(k.encode(1.0), 0x38);
    assert_eq!(k.encode(1.0625), 0x38);
    assert_eq!(k.encode(1.1875), 0x3A);
    // Rounding carries into the next binade: 1.96875 -> 2.0.
    assert_eq!(k.decode(k.encode(1.96875)), 2.0);
    let k = FloatKind::F8E5M2;
    assert_eq!(k.spec().min_subnormal(), 2f64.powi(-16));
    assert_eq!(k.encode(2f32.powi(-16)), 0x01);
    assert_eq!(k.encode(2f32.powi(-17)), 0x00);
    assert_eq!(k.encode(3.0 * 2f32.powi(-17)), 0x02);
    assert_eq!(k.encode(1.125), 0x3C); // 1.125: tie between 1.0 and 1.25 -> 1.0
}

#[test]
fn f16_and_bf16_are_ieee_conversions() {
    let h = FloatKind::F16;
    assert_eq!(h.encode(1.0), 0x3C00);
    assert_eq!(h.encode(65504.0), 0x7BFF);
    assert_eq!(h.encode(65520.0), 0x7C00); // tie rounds to even: infinity
    assert_eq!(h.encode(2f32.powi(-24)), 0x0001);
    assert_eq!(h.decode(0x7C00), f32::INFINITY);
    let b = FloatKind::BF16;
    for x in [1.0f32, -3.5, 1e-20, 3.0e38, 1.2345678] {
        // bf16 is the top half of f32 with round-to-nearest-even.
        let bits = x.to_bits();
        let rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
        assert_eq!(b.encode(x), rounded, "{x}");
        assert_eq!(b.decode(rounded), f32::from_bits(rounded << 16));
    }
}

#[derive(serde::Deserialize)]
struct Table {
    quantize: Vec<(u32, u32)>,
    dequantize: Vec<(u32, u32)>,
}

/// Every entry of the table written by `testdata/reference/float8_table.py`
/// from ONNX's reference QuantizeLinear / DequantizeLinear (opset 19,
/// saturate=1): our conversion gives the same bits (any NaN for NaN).
#[test]
fn float8_matches_onnx_reference_table() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/reference/float8_table.json"
    );
    let text = std::fs::read_to_string(path)?;
    let tables: std::collections::HashMap<String, serde_json::Value> = serde_json::from_str(&text)?;
    let mut checked = 0;
    for (name, kind) in [
        ("f8e4m3fn", FloatKind::F8E4M3FN),
        ("f8e5m2", FloatKind::F8E5M2),
    ] {
        let t: Table = serde_json::from_value(tables[name].clone())?;
        assert!(t.quantize.len() > 2000 && t.dequantize.len() == 256);
        for &(xb, code) in &t.quantize {
            let x = f32::from_bits(xb);
            let ours = kind.encode(x);
            if kind.decode(code).is_nan() {
                assert!(kind.decode(ours).is_nan(), "{name} {x:e}: {ours:#x}");
            } else {
                assert_eq!(ours, code, "{name} {x:e} ({xb:#x})");
            }
            checked += 1;
        }
        for &(code, vb) in &t.dequantize {
            let v = f32::from_bits(vb);
            let ours = kind.decode(code);
            if v.is_nan() {
                assert!(ours.is_nan(), "{name} {code:#x}");
            } else {
                assert_eq!(ours.to_bits(), vb, "{name} {code:#x}");
            }
        }
    }
    assert!(checked > 5000);
    Ok(())
}

#[test]
fn element_types_and_opsets() -> Result<(), CalibError> {
    assert_eq!(QuantFormat::U8.elem().onnx_code(), 2);
    assert_eq!(QuantFormat::I8_WEIGHT.elem().onnx_code(), 3);
    assert_eq!(QuantFormat::U16.elem().onnx_code(), 4);
    assert_eq!(QuantFormat::I4_WEIGHT.elem().onnx_code(), 22);
    assert_eq!(QuantFormat::F8E4M3FN.elem().onnx_code(), 17);
    assert_eq!(QuantFormat::F8E5M2.elem().onnx_code(), 19);
    assert_eq!(QuantFormat::U8.min_opset(), Some(10));
    let pc = QuantFormat::I8_WEIGHT.with_granularity(Granularity::PerAxis { axis: 0 })?;
    assert_eq!(pc.min_opset(), Some(13));
    assert_eq!(QuantFormat::F8E4M3FN.min_opset(), Some(19));
    assert_eq!(QuantFormat::U16.min_opset(), Some(21));
    assert_eq!(QuantFormat::I4_WEIGHT.min_opset(), Some(21));
    let blk = QuantFormat::I8_WEIGHT.with_granularity(Granularity::Block { axis: 0, size: 32 })?;
    assert_eq!(blk.min_opset(), Some(21));
    assert_eq!(QuantFormat::float(FloatKind::F16).min_opset(), None);
    assert!(QuantFormat::I8_WEIGHT
        .with_granularity(Granularity::Block { axis: 0, size: 0 })
        .is_err());
    // Widths without an ONNX type of their own are stored wider.
    let i6 = IntFormat::new(6, true, true, false)?;
    assert_eq!(i6.elem(), ElemType::Int8);
    assert!(!i6.native() && QuantFormat::U8.native() && !QuantFormat::I8_WEIGHT.native());
    let i2 = IntFormat::new(2, true, false, false)?;
    assert_eq!((i2.qmin(), i2.qmax(), i2.elem()), (-2, 1, ElemType::Int4));
    assert_eq!(
        IntFormat::new(1, true, true, false),
        Err(CalibError::InvalidFormatBits(1))
    );
    assert!(IntFormat::new(8, false, false, true).is_err());
    assert!(QuantFormat::U8.even_grid() && !QuantFormat::F8E5M2.even_grid());
    Ok(())
}

#[test]
fn integer_formats_match_quant_target() -> Result<(), CalibError> {
    for t in [
        QuantTarget::U8,
        QuantTarget::I8,
        QuantTarget::I8_SYMMETRIC,
        QuantTarget::U16,
        QuantTarget::I16_SYMMETRIC,
        QuantTarget::new(4, true, true)?,
    ] {
        let f = QuantFormat::from(t);
        assert_eq!(f.target(), Some(t));
        for (lo, hi) in [(-1.0f32, 2.0f32), (0.0, 6.0), (-3.5, -0.25), (0.0, 0.0)] {
            let p = f.params(lo, hi)?;
            assert_eq!(p, QuantParams::from_range(lo, hi, t)?);
            for x in [-4.0f32, -0.3, 0.0, 0.7, 1.9, 10.0] {
                assert_eq!(f.quantize(x, &p), p.quantize(x, t));
                assert_eq!(f.fake_quantize(x, &p), p.dequantize(p.quantize(x, t)));
            }
        }
    }
    Ok(())
}

#[test]
fn narrow_weights_use_max_abs_over_qmax() -> Result<(), CalibError> {
    // The classic int8 weight scheme: scale = amax / 127, codes in [-127, 127].
    let f = QuantFormat::I8_WEIGHT;
    let p = f.params(-0.5, 1.27)?;
    assert_eq!(
        p,
        QuantParams {
            scale: 1.27f32 / 127.0,
            zero_point: 0
        }
    );
    assert_eq!(f.quantize(-1.27, &p), -127);
    assert_eq!(f.quantize(-5.0, &p), -127);
    let p = QuantFormat::I4_WEIGHT.params(-0.7, 0.1)?;
    assert_eq!(p.scale, 0.7f32 / 7.0);
    assert_eq!(QuantFormat::I4_WEIGHT.quantize(-0.7, &p), -7);
    assert_eq!(QuantFormat::I4_WEIGHT.quantize(0.35, &p), 4); // 3.5 -> 4 (even)
    Ok(())
}

#[test]
fn float_params_and_round_trip() -> Result<(), CalibError> {
    let f = QuantFormat::F8E4M3FN;
    let p = f.params(-2.0, 0.5)?;
    assert_eq!(
        p,
        QuantParams {
            scale: 2.0 / 448.0,
            zero_point: 0
        }
    );
    assert_eq!(f.fake_quantize(-2.0, &p), -2.0);
    assert_eq!(f.fake_quantize(0.0, &p), 0.0);
    assert_eq!(f.fake_quantize(5.0, &p), 2.0); // saturates at amax
                                               // Relative error of normal values is at most half a mantissa step: 2^-4.
    for i in 1..200 {
        let x = i as f32 * 0.01 - 1.0;
        let y = f.fake_quantize(x, &p);
        assert!((y - x).abs() <= x.abs() * 0.0625 + 1e-6, "{x} {y}");
    }
    assert_eq!(f.params(0.0, 0.0)?.scale, 1.0);
    assert!(f.params(f32::NAN, 1.0).is_err());
    Ok(())
}

#[test]
fn format_serde_round_trip() -> Result<(), Box<dyn std::error::Error>> {
    let f = QuantFormat::I4_WEIGHT.with_granularity(Granularity::Block { axis: 0, size: 32 })?;
    let json = serde_json::to_string(&f)?;
    let back: QuantFormat = serde_json::from_str(&json)?;
    assert_eq!(back, f);
    let bad = json.replace("\"bits\":4", "\"bits\":40");
    assert!(serde_json::from_str::<QuantFormat>(&bad).is_err());
    Ok(())
}
