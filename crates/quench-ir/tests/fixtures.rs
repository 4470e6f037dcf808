//! Every fixture model: import → text snapshot; export → re-import gives
//! the same text and an equivalent ONNX message.

use std::path::{Path, PathBuf};

use prost::Message;
use quench_ir::{parse_model, Model, TextOptions};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

#[test]
fn fixture_text_snapshots_and_round_trip() {
    insta::glob!("../../../testdata", "*.onnx", |path| {
        let loaded = quench_onnx::load_model(path).unwrap();
        let original = loaded.model.clone();
        let model = Model::from_onnx(loaded.model).unwrap();
        model.graph.verify().unwrap();
        let text = model.to_text();
        insta::assert_snapshot!(text);

        let exported = model.to_onnx();
        let again = Model::from_onnx(exported.clone()).unwrap();
        assert_eq!(
            again.to_text(),
            text,
            "re-import of {} prints differently",
            path.display()
        );

        // Everything outside the graph is carried verbatim.
        let mut h1 = original.clone();
        h1.graph = None;
        let mut h2 = exported.clone();
        h2.graph = None;
        assert_eq!(h1, h2);
        // Graph-level data: same nodes (order kept for sorted inputs), same
        // initializers, same inputs/outputs.
        let (g1, g2) = (
            original.graph.as_ref().unwrap(),
            exported.graph.as_ref().unwrap(),
        );
        assert_eq!(g1.node, g2.node, "{}", path.display());
        assert_eq!(g1.input, g2.input);
        assert_eq!(g1.output, g2.output);
        assert_eq!(g1.initializer, g2.initializer);
        assert_eq!(g1.name, g2.name);
        assert_eq!(g1.doc_string, g2.doc_string);
        assert_eq!(g1.metadata_props, g2.metadata_props);
        let mut v1 = g1.value_info.clone();
        let mut v2 = g2.value_info.clone();
        v1.sort_by(|a, b| a.name.cmp(&b.name));
        v2.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(v1, v2);
        assert!(exported.encoded_len() > 0);
    });
}

#[test]
fn bad_fixtures_report_the_offending_names() {
    let bad = testdata().join("bad");
    let cases = [
        ("cycle.onnx", "cycle"),
        (
            "undefined_input.onnx",
            "which no node, graph input or initializer defines",
        ),
        ("duplicate_names.onnx", "defined twice"),
    ];
    for (file, needle) in cases {
        let loaded = quench_onnx::load_model(&bad.join(file)).unwrap();
        let err = Model::from_onnx(loaded.model).unwrap_err().to_string();
        assert!(err.contains(needle), "{file}: {err}");
    }
}

/// The text form reads back: `print(parse(print(m))) == print(m)` for every
/// fixture, without data and with the data of constants up to 64 elements.
#[test]
fn fixture_text_parses_back() {
    let mut n = 0;
    for entry in std::fs::read_dir(testdata()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
            continue;
        }
        let loaded = quench_onnx::load_model(&path).unwrap();
        let model = Model::from_onnx(loaded.model).unwrap();
        for opts in [
            TextOptions::default(),
            TextOptions {
                max_data_elements: 64,
            },
        ] {
            let text = model.to_text_with(&opts);
            let parsed =
                parse_model(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
            parsed
                .graph
                .verify()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                parsed.to_text_with(&opts),
                text,
                "{} does not print back the same",
                path.display()
            );
            // The parsed model is a valid ONNX model again.
            let again = Model::from_onnx(parsed.to_onnx()).unwrap();
            assert_eq!(again.to_text_with(&opts), text, "{}", path.display());
        }
        n += 1;
    }
    assert!(n >= 20, "only {n} fixtures found");
}
