//! hb-calib on bad configs and bad calibration data: one-line error naming
//! the file or key, exit code 2, no panic, nothing written.

use crate::common;

use hb_ir::{Graph, Model, Node, ValueInfo};
use hb_tensor::{io, DType, Tensor};
use std::path::PathBuf;
use std::process::Command;

/// `y = Relu(MatMul(x, W))`, x float32[1, 4], W [4, 3].
fn model(op_after: &str) -> Model {
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1, 4]));
    g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1, 3]));
    let w: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) * 0.1).collect();
    g.initializers.insert(
        "W".into(),
        std::sync::Arc::new(Tensor::from_f32(&[4, 3], w).unwrap()),
    );
    g.nodes.push(Node::new("mm", "MatMul", &["x", "W"], &["h"]));
    g.nodes.push(Node::new("act", op_after, &["h"], &["y"]));
    common::model_of(g)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    /// A valid setup: model.onnx, calib/ with 3 samples, model.yaml.
    fn new() -> Self {
        let c = Case {
            dir: tempfile::tempdir().unwrap(),
        };
        hb_ir::save_model(&model("Relu"), &c.path("model.onnx")).unwrap();
        std::fs::create_dir_all(c.path("calib")).unwrap();
        for k in 0..3 {
            let x: Vec<f32> = (0..4).map(|i| (i + k) as f32 * 0.25 - 0.5).collect();
            c.npy(
                &format!("calib/{k}.npy"),
                Tensor::from_f32(&[1, 4], x).unwrap(),
            );
        }
        c.yaml("");
        c
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn npy(&self, rel: &str, t: Tensor) {
        io::write_npy(&self.path(rel), &t).unwrap();
    }

    /// Writes model.yaml; `extra` is appended to calibration_parameters.
    fn yaml(&self, extra: &str) {
        self.raw_yaml(&format!(
            "model_parameters:\n  onnx_model: model.onnx\n  march: nash-e\n  working_dir: work\ninput_parameters:\n  input_name: x\n  input_type_train: featuremap\ncalibration_parameters:\n  cal_data_dir: calib\n{extra}"
        ));
    }

    fn raw_yaml(&self, text: &str) {
        std::fs::write(self.path("model.yaml"), text).unwrap();
    }

    /// Runs hb-calib; asserts exit 2, one line naming `needle`, nothing written.
    fn fails(&self, needle: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_hb-calib"))
            .arg("--config")
            .arg(self.path("model.yaml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("hb-calib: error: "), "{err}");
        assert!(err.contains(needle), "'{needle}' not in: {err}");
        assert!(!err.contains("internal error"), "{err}");
        assert!(!self.path("work").exists(), "nothing may be written: {err}");
    }

    fn succeeds(&self) {
        common::run_ok(
            Command::new(env!("CARGO_BIN_EXE_hb-calib"))
                .arg("--config")
                .arg(self.path("model.yaml"))
                .arg("--json"),
        );
        assert!(self.path("work/model_calibrated_model.onnx").exists());
        assert!(self.path("work/hb_calib.log").exists());
    }
}

#[test]
fn the_valid_setup_works() {
    Case::new().succeeds();
}

#[test]
fn config_errors() {
    let c = Case::new();
    c.raw_yaml("model_parameters:\n  onnx_modle: model.onnx\n");
    c.fails("did you mean 'onnx_model'");

    c.raw_yaml("model_parameters:\n  march: nash-e\n");
    c.fails("onnx_model");

    c.raw_yaml("model_parameters:\n  onnx_model: model.onnx\n  march: pentium\n");
    c.fails("march");

    c.raw_yaml("model_parameters: [unclosed\n");
    c.fails("model.yaml");

    c.yaml("  calibration_type: magic\n");
    c.fails("calibration_type");

    c.yaml("  max_percentile: 0.2\n");
    c.fails("max_percentile");

    c.yaml("  calibration_type: load\n");
    c.fails("'load' takes thresholds from an already quantized (QAT) model");

    c.yaml("  quant_config: missing.json\n");
    c.fails("missing.json");

    std::fs::write(
        c.path("qc.json"),
        "{ \"model_config\": { // comment\n  \"all_node_type\": \"int8\",, }",
    )
    .unwrap();
    c.yaml("  quant_config: qc.json\n");
    c.fails("qc.json");

    c.yaml("  quant_config: {\"node_config\": {\"mmm\": {\"qtype\": \"int16\"}}}\n");
    c.fails("'mmm' is not in the optimized model (did you mean 'mm'?)");

    c.raw_yaml("model_parameters:\n  onnx_model: model.onnx\n  march: bernoulli2\n  working_dir: work\ncalibration_parameters:\n  cal_data_dir: calib\n  quant_config: {\"model_config\": {\"all_node_type\": \"int16\"}}\n");
    c.fails("bernoulli2");

    c.raw_yaml("model_parameters:\n  onnx_model: model.onnx\n  working_dir: work\ninput_parameters:\n  input_name: image\ncalibration_parameters:\n  cal_data_dir: calib\n");
    c.fails("'image' is not an input of the model");

    c.raw_yaml("model_parameters:\n  onnx_model: model.onnx\n  working_dir: work\n");
    c.fails("cal_data_dir");
}

#[test]
fn missing_files() {
    let c = Case::new();
    let out = Command::new(env!("CARGO_BIN_EXE_hb-calib"))
        .args(["--config", "/nonexistent/model.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.yaml"));

    c.raw_yaml("model_parameters:\n  onnx_model: nope.onnx\n  working_dir: work\ncalibration_parameters:\n  cal_data_dir: calib\n");
    c.fails("nope.onnx");

    c.yaml("");
    std::fs::write(
        c.path("model.yaml"),
        std::fs::read_to_string(c.path("model.yaml"))
            .unwrap()
            .replace("cal_data_dir: calib", "cal_data_dir: nowhere"),
    )
    .unwrap();
    c.fails("nowhere");

    c.yaml("");
    std::fs::write(
        c.path("model.yaml"),
        std::fs::read_to_string(c.path("model.yaml"))
            .unwrap()
            .replace("cal_data_dir: calib", "cal_data_dir: calib;calib"),
    )
    .unwrap();
    c.fails("cal_data_dir");
}

#[test]
fn bad_calibration_data() {
    let c = Case::new();
    c.npy(
        "calib/1.npy",
        Tensor::from_f32(&[1, 5], vec![0.0; 5]).unwrap(),
    );
    c.fails("1.npy");

    let c = Case::new();
    c.npy(
        "calib/2.npy",
        Tensor::from_vec(&[1, 4], vec![1i64, 2, 3, 4]).unwrap(),
    );
    c.fails("2.npy");

    let c = Case::new();
    c.npy(
        "calib/0.npy",
        Tensor::from_f32(&[1, 4], vec![0.0, f32::NAN, 1.0, 2.0]).unwrap(),
    );
    c.fails("NaN");

    let c = Case::new();
    std::fs::write(c.path("calib/1.npy"), b"\x93NUMPY garbage").unwrap();
    c.fails("1.npy");

    // Samples are checked as the statistics workers read them; with
    // several bad files the first in order is named, every time.
    for _ in 0..3 {
        let c = Case::new();
        for k in 1..3 {
            std::fs::write(c.path(&format!("calib/{k}.npy")), b"\x93NUMPY garbage").unwrap();
        }
        c.fails("1.npy");
    }

    let c = Case::new();
    for k in 0..3 {
        std::fs::remove_file(c.path(&format!("calib/{k}.npy"))).unwrap();
    }
    c.fails("no .npy or .bin calibration files");
}

#[test]
fn an_op_the_interpreter_lacks() {
    let c = Case::new();
    hb_ir::save_model(&model("NoSuchOp"), &c.path("model.onnx")).unwrap();
    c.fails("NoSuchOp");
}

#[test]
fn mismatched_sample_counts_across_inputs() {
    let c = Case::new();
    let mut m = model("Relu");
    m.graph
        .inputs
        .push(ValueInfo::tensor("z", DType::F32, &[1, 3]));
    m.graph.nodes[1] = Node::new("act", "Add", &["h", "z"], &["y"]);
    hb_ir::save_model(&m, &c.path("model.onnx")).unwrap();
    std::fs::create_dir_all(c.path("calib_z")).unwrap();
    c.npy(
        "calib_z/0.npy",
        Tensor::from_f32(&[1, 3], vec![0.0; 3]).unwrap(),
    );
    c.raw_yaml("model_parameters:\n  onnx_model: model.onnx\n  working_dir: work\ninput_parameters:\n  input_name: x;z\ncalibration_parameters:\n  cal_data_dir: calib;calib_z\n");
    c.fails("one file per sample");
}
