//! Detection of models that are already quantized.
//!
//! quench quantizes FP32 models. A model that already holds Q/DQ pairs
//! (`QuantizeLinear`/`DequantizeLinear`) or integer operators
//! (`QLinearConv`, `MatMulInteger`, ...) would get a second layer of
//! quantization on top of the first, so [`compile`](crate::compile)
//! refuses it in every quantizing mode (`--no-quantize` still runs the
//! passes), and `quench inspect` says what form it is in.
//!
//! Contract: [`detect`] looks at every node of the main graph and of every
//! subgraph (If/Loop/Scan bodies), in the default domain and in
//! `com.microsoft` (ONNX Runtime's contrib ops); it reads names only and is
//! linear in the number of nodes.

use quench_onnx::proto::{GraphProto, NodeProto};

/// How an already-quantized model represents its quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizedForm {
    /// Float ops between `QuantizeLinear`/`DequantizeLinear` nodes (QDQ),
    /// including weight-only models (only `DequantizeLinear` on weights).
    Qdq,
    /// Integer operators (`QLinearConv`, `QLinearMatMul`, `MatMulInteger`,
    /// `ConvInteger`, `DynamicQuantizeLinear`, ...): the QOperator form.
    QOperator,
    /// Both forms in one model.
    Mixed,
}

impl std::fmt::Display for QuantizedForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuantizedForm::Qdq => "QDQ",
            QuantizedForm::QOperator => "QOperator",
            QuantizedForm::Mixed => "QDQ and QOperator",
        })
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantized {
    pub form: QuantizedForm,
    /// `QuantizeLinear` nodes.
    pub quantize: usize,
    /// `DequantizeLinear` nodes.
    pub dequantize: usize,
    /// Integer (QOperator) nodes.
    pub integer_ops: usize,
    /// One quantization node, by name (its first output when unnamed), and
    /// its op type.
    pub example: (String, String),
}

impl std::fmt::Display for Quantized {
    /// `QDQ: 12 QuantizeLinear and 24 DequantizeLinear nodes, e.g. node `x` (QuantizeLinear)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.form)?;
        let mut parts = Vec::new();
        if self.quantize + self.dequantize > 0 {
            parts.push(format!(
                "{} QuantizeLinear and {} DequantizeLinear nodes",
                self.quantize, self.dequantize
            ));
        }
        if self.integer_ops > 0 {
            parts.push(format!("{} integer (QOperator) nodes", self.integer_ops));
        }
        write!(
            f,
            "{}, e.g. node `{}` ({})",
            parts.join(" and "),
            self.example.0,
            self.example.1
        )
    }
}

fn is_onnx_or_ms(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx" || domain == "com.microsoft"
}

/// QOperator op types: integer kernels of the default domain and ONNX
/// Runtime's contrib domain. Every `QLinear*` op counts.
fn is_integer_op(op: &str) -> bool {
    op.starts_with("QLinear")
        || matches!(
            op,
            "MatMulInteger"
                | "ConvInteger"
                | "DynamicQuantizeLinear"
                | "DynamicQuantizeMatMul"
                | "MatMulIntegerToFloat"
                | "QGemm"
                | "QAttention"
                | "DynamicQuantizeLSTM"
                | "QEmbedLayerNormalization"
        )
}

#[derive(Default)]
struct Counts {
    quantize: usize,
    dequantize: usize,
    integer_ops: usize,
    example: Option<(String, String)>,
}

fn visit(g: &GraphProto, c: &mut Counts) {
    for n in &g.node {
        classify(n, c);
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                visit(sub, c);
            }
        }
    }
}

fn classify(n: &NodeProto, c: &mut Counts) {
    if !is_onnx_or_ms(n.domain()) {
        return;
    }
    let op = n.op_type();
    match op {
        "QuantizeLinear" => c.quantize += 1,
        "DequantizeLinear" => c.dequantize += 1,
        _ if is_integer_op(op) => c.integer_ops += 1,
        _ => return,
    }
    if c.example.is_none() {
        let name = if n.name().is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name().to_string()
        };
        c.example = Some((name, op.to_string()));
    }
}

/// The refusal of an already-quantized model at `path`, shared by
/// `compile` and `calibrate_table` so that both say the same thing;
/// `hint` is appended after `; ` when not empty.
pub fn refusal(path: &std::path::Path, q: &Quantized, hint: &str) -> String {
    let mut m = format!(
        "{}: model is already quantized ({q}); quench quantizes FP32 models",
        path.display()
    );
    if !hint.is_empty() {
        m.push_str("; ");
        m.push_str(hint);
    }
    m
}

/// Whether `g` (and its subgraphs) is already quantized, and how.
pub fn detect(g: &GraphProto) -> Option<Quantized> {
    let mut c = Counts::default();
    visit(g, &mut c);
    let example = c.example?;
    let qdq = c.quantize + c.dequantize > 0;
    let form = match (qdq, c.integer_ops > 0) {
        (true, true) => QuantizedForm::Mixed,
        (true, false) => QuantizedForm::Qdq,
        (false, _) => QuantizedForm::QOperator,
    };
    Some(Quantized {
        form,
        quantize: c.quantize,
        dequantize: c.dequantize,
        integer_ops: c.integer_ops,
        example,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node(op: &str, domain: &str, name: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            domain: Some(domain.into()),
            name: Some(name.into()),
            output: vec![format!("{name}_out")],
            ..Default::default()
        }
    }

    fn graph(nodes: Vec<NodeProto>) -> GraphProto {
        GraphProto {
            node: nodes,
            ..Default::default()
        }
    }

    #[test]
    fn float_models_are_not_quantized() {
        let g = graph(vec![node("Conv", "", "c"), node("Relu", "", "r")]);
        assert_eq!(detect(&g), None);
        // A custom domain's op of the same name is not ONNX's.
        let g = graph(vec![node("QuantizeLinear", "my.domain", "q")]);
        assert_eq!(detect(&g), None);
    }

    #[test]
    fn forms_are_told_apart() {
        let g = graph(vec![
            node("Conv", "", "c"),
            node("QuantizeLinear", "", "q1"),
            node("DequantizeLinear", "", "d1"),
            node("DequantizeLinear", "", "d2"),
        ]);
        let q = detect(&g).unwrap();
        assert_eq!(q.form, QuantizedForm::Qdq);
        assert_eq!((q.quantize, q.dequantize, q.integer_ops), (1, 2, 0));
        assert_eq!(q.example, ("q1".to_string(), "QuantizeLinear".to_string()));
        assert_eq!(
            q.to_string(),
            "QDQ: 1 QuantizeLinear and 2 DequantizeLinear nodes, e.g. node `q1` (QuantizeLinear)"
        );

        let g = graph(vec![
            node("QLinearConv", "", "qc"),
            node("QLinearAdd", "com.microsoft", "qa"),
            node("MatMulInteger", "", "mi"),
        ]);
        let q = detect(&g).unwrap();
        assert_eq!(q.form, QuantizedForm::QOperator);
        assert_eq!(q.integer_ops, 3);
        assert_eq!(q.example.0, "qc");

        let g = graph(vec![
            node("DynamicQuantizeLinear", "", "dq"),
            node("DequantizeLinear", "", "d"),
        ]);
        assert_eq!(detect(&g).unwrap().form, QuantizedForm::Mixed);
    }

    #[test]
    fn subgraphs_are_searched() {
        use quench_onnx::proto::AttributeProto;
        let mut if_node = node("If", "", "branch");
        if_node.attribute = vec![AttributeProto {
            name: Some("then_branch".into()),
            g: Some(graph(vec![node("ConvInteger", "", "inner")])),
            ..Default::default()
        }];
        let q = detect(&graph(vec![if_node])).unwrap();
        assert_eq!(q.form, QuantizedForm::QOperator);
        assert_eq!(q.example, ("inner".to_string(), "ConvInteger".to_string()));
    }
}
