//! Every pass reports `Changed` truthfully: on a graph it has nothing to do
//! with (one Relu, no constants) each returns `false` and logs nothing, and
//! the graph prints the same. (Mutation testing found passes that would
//! claim a change unchecked; see benches/results/mutants_2026-11-27.md.)

use quench_ir::parse_model;
use quench_passes::{pipeline, PassCx};

#[test]
fn passes_with_nothing_to_do_report_no_change() -> Result<(), String> {
    let text = "# ir_version 8; opset ai.onnx 17
graph main(%x: f32[1,4]) -> (%0)
  %0 = Relu(%x) : f32[1,4]                      # relu: y
";
    let mut passes = pipeline::default_pipeline();
    passes.extend(pipeline::optional_passes());
    assert_eq!(passes.len(), 10);
    for p in &passes {
        let mut m = parse_model(text).map_err(|e| e.to_string())?;
        let before = m.to_text();
        let mut cx = PassCx::new(17);
        let changed = p.run(&mut m.graph, &mut cx).map_err(|e| e.to_string())?;
        assert!(!changed, "{} claims a change", p.name());
        assert!(cx.log.is_empty(), "{}: {:?}", p.name(), cx.log);
        assert_eq!(m.to_text(), before, "{}", p.name());
    }
    Ok(())
}
