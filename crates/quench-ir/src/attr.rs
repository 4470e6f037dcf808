//! Building ONNX attributes for nodes that passes create.

use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::AttributeProto;

/// An `INT` attribute.
pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// A `FLOAT` attribute.
pub fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}
