//! A save interrupted or killed at any point leaves a consistent model and
//! data pair and, on SIGINT/SIGTERM, no temporary file.
//!
//! The binary pauses at a named step of a save when
//! `QUENCH_TEST_SAVE_PAUSE=<step>:<ms>` is set (a test hook in
//! `quench_onnx::save_model`; it prints `test pause before save step` on
//! stderr), so each test signals the process at a known point instead of
//! racing a timer.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Starts `quench convert IN -o OUT FLAG` paused at `step`, and waits
/// until it reports the pause.
fn start_paused(input: &Path, out: &Path, flag: &str, step: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quench"))
        .args([
            "convert",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            flag,
        ])
        .env("QUENCH_TEST_SAVE_PAUSE", format!("{step}:60000"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "quench ended before pausing at `{step}`");
        if line.contains("test pause before save step") {
            assert!(line.contains(&format!("`{step}`")), "{line}");
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    child
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn external_files(model: &Path) -> Vec<String> {
    quench_onnx::load_model(model).unwrap().external.files
}

/// SIGINT while the (complete, synced) temporary file of an inline save
/// waits for its rename: the handler removes it and the process exits 130;
/// nothing is left in the output directory.
#[test]
fn sigint_during_an_inline_write_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.onnx");
    let mut child = start_paused(&testdata("resnet_tiny.onnx"), &out, "--inline", "rename");
    let files = listing(tmp.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].contains("quench-tmp"), "{files:?}");
    signal(&child, "-INT");
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    assert_eq!(listing(tmp.path()), Vec::<String>::new());
}

/// SIGTERM after the external data file is written under its fresh name
/// but before the model refers to it: both are removed, and an existing
/// output pair is left as it was.
#[test]
fn sigterm_between_data_and_model_leaves_the_old_pair_and_no_new_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.onnx");
    let ok = Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(["convert", testdata("mlp.onnx").to_str().unwrap(), "-o"])
        .arg(&out)
        .arg("--external-data")
        .status()
        .unwrap();
    assert!(ok.success());
    let before = listing(tmp.path());
    assert_eq!(before.len(), 2, "{before:?}");
    let old_model = std::fs::read(&out).unwrap();
    let mut child = start_paused(
        &testdata("resnet_tiny.onnx"),
        &out,
        "--external-data",
        "model",
    );
    assert_eq!(listing(tmp.path()).len(), 3, "the new data file is written");
    signal(&child, "-TERM");
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    assert_eq!(listing(tmp.path()), before);
    assert_eq!(std::fs::read(&out).unwrap(), old_model);
    assert!(quench_onnx::load_model(&out).is_ok());
}

/// SIGKILL (no handler runs) at each step of an external-data save over an
/// existing output: the model at `-o` always loads with the data file it
/// names, and is the old model before the model's rename and the new one
/// after it.
#[test]
fn sigkill_at_each_step_leaves_a_consistent_pair() {
    let old_src = testdata("mlp.onnx");
    let new_src = testdata("resnet_tiny.onnx");
    let text = |p: &Path| {
        quench_ir::Model::from_onnx(quench_onnx::load_model(p).unwrap().model)
            .unwrap()
            .to_text()
    };
    for (step, expect_new) in [
        ("data", false),
        ("rename", false),
        ("model", false),
        ("cleanup", true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.onnx");
        let ok = Command::new(env!("CARGO_BIN_EXE_quench"))
            .args(["convert", old_src.to_str().unwrap(), "-o"])
            .arg(&out)
            .arg("--external-data")
            .status()
            .unwrap();
        assert!(ok.success());
        let old_text = text(&out);
        let old_data = external_files(&out);
        let mut child = start_paused(&new_src, &out, "--external-data", step);
        signal(&child, "-KILL");
        let _ = child.wait().unwrap();
        let loaded = quench_onnx::load_model(&out)
            .unwrap_or_else(|e| panic!("after a kill at `{step}`: {e}"));
        let now = text(&out);
        if expect_new {
            assert_eq!(now, text(&new_src), "kill at `{step}`");
            assert_ne!(loaded.external.files, old_data);
        } else {
            assert_eq!(now, old_text, "kill at `{step}`");
            assert_eq!(loaded.external.files, old_data);
        }
        // A following save cleans up: one model, one data file (plus, for
        // a kill, the orphans of the killed save: never the old pair's).
        let ok = Command::new(env!("CARGO_BIN_EXE_quench"))
            .args(["convert", new_src.to_str().unwrap(), "-o"])
            .arg(&out)
            .arg("--external-data")
            .status()
            .unwrap();
        assert!(ok.success());
        assert_eq!(text(&out), text(&new_src));
    }
}
