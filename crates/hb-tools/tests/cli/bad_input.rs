//! Bad input is a tested path: one-line error, exit code 2, no panic, nothing written.

use crate::common;

use hb_ir::{Graph, Model, Node, ValueInfo};
use hb_onnx_proto as pb;
use hb_tensor::{DType, Tensor};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

fn exe(name: &str) -> PathBuf {
    match name {
        "hb-info" => PathBuf::from(env!("CARGO_BIN_EXE_hb-info")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_hb-model-exec")),
    }
}

/// A model `y = Relu(x)` (or another op) with x float32[1,4].
fn tiny_model(op: &str) -> Model {
    let mut g = Graph::default();
    g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1, 4]));
    g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1, 4]));
    g.nodes.push(Node::new("the_node", op, &["x"], &["y"]));
    common::model_of(g)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn save(&self, name: &str, m: &Model) -> PathBuf {
        let p = self.path(name);
        hb_ir::save_model(m, &p).unwrap();
        p
    }
    fn npy(&self, name: &str, t: &Tensor) -> PathBuf {
        let p = self.path(name);
        hb_tensor::io::write_npy(&p, t).unwrap();
        p
    }
}

/// Runs a tool; asserts exit 2, a one-line stderr containing `want`, and no output dir.
fn expect_error(tool: &str, args: &[&str], want: &str, out_dir: Option<&Path>) {
    let out = Command::new(exe(tool)).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for {args:?}: stderr {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(
        stderr.contains(want),
        "stderr {stderr:?} should contain {want:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    if let Some(d) = out_dir {
        assert!(!d.exists(), "{} must not be created on error", d.display());
    }
}

/// `hb-model-exec infer` on `model` with `input` must fail as [`expect_error`] says, leaving `out` uncreated.
fn expect_infer_error(model: &Path, input: &str, out: &Path, want: &str) {
    let args = [
        "infer",
        "--model-file",
        model.to_str().unwrap(),
        "--input-file",
        input,
        "--output-dir",
        out.to_str().unwrap(),
    ];
    expect_error("hb-model-exec", &args, want, Some(out));
}

fn ok_x(c: &Case) -> PathBuf {
    c.npy(
        "x.npy",
        &Tensor::from_vec(&[1, 4], vec![1.0f32, -2.0, 3.0, -4.0]).unwrap(),
    )
}

#[test]
fn truncated_onnx() {
    let c = Case::new();
    let p = c.save("m.onnx", &tiny_model("Relu"));
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect_error("hb-info", &[p.to_str().unwrap()], "m.onnx", None);
    let out = c.path("out");
    let x = ok_x(&c);
    expect_infer_error(&p, x.to_str().unwrap(), &out, "not a valid ONNX model");
}

#[test]
fn non_onnx_file() {
    let c = Case::new();
    let p = c.path("notes.onnx");
    std::fs::write(&p, "this is a text file, not a model\n").unwrap();
    expect_error(
        "hb-info",
        &[p.to_str().unwrap()],
        "notes.onnx: not a valid ONNX model",
        None,
    );
    let empty = c.path("empty.onnx");
    std::fs::write(&empty, "").unwrap();
    expect_error("hb-info", &[empty.to_str().unwrap()], "empty.onnx", None);
    expect_error(
        "hb-info",
        &[c.path("missing.onnx").to_str().unwrap()],
        "no such file",
        None,
    );
}

#[test]
fn op_the_interpreter_lacks() {
    let c = Case::new();
    let p = c.save("m.onnx", &tiny_model("FancyOp"));
    // hb-info still describes it.
    let out = Command::new(exe("hb-info")).arg(&p).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot run: FancyOp"));
    let x = ok_x(&c);
    let dir = c.path("out");
    expect_infer_error(
        &p,
        x.to_str().unwrap(),
        &dir,
        "node 'the_node' has op FancyOp",
    );
}

#[test]
fn wrong_input_dtype_shape_and_missing_input() {
    let c = Case::new();
    let p = c.save("m.onnx", &tiny_model("Relu"));
    let dir = c.path("out");
    let run = |input: &str, want: &str| expect_infer_error(&p, input, &dir, want);
    let wrong_type = c.npy(
        "i.npy",
        &Tensor::from_vec(&[1, 4], vec![1i64, 2, 3, 4]).unwrap(),
    );
    run(
        wrong_type.to_str().unwrap(),
        "i.npy: input 'x' expects float32[1,4], the file holds int64[1,4]",
    );
    let wrong_shape = c.npy("s.npy", &Tensor::from_vec(&[2, 2], vec![1f32; 4]).unwrap());
    run(
        wrong_shape.to_str().unwrap(),
        "s.npy: input 'x' expects float32[1,4], the file holds float32[2,2]",
    );
    run(
        c.path("nope.npy").to_str().unwrap(),
        "nope.npy: no such file",
    );
    let x = ok_x(&c);
    run(
        &format!("{},{}", x.display(), x.display()),
        "gives 2 file(s) but the model has 1 input(s): x",
    );
    let bad_npy = c.path("bad.npy");
    std::fs::write(&bad_npy, b"\x93NUMPY garbage").unwrap();
    run(bad_npy.to_str().unwrap(), "bad.npy");
}

#[test]
fn missing_external_data_file() {
    let c = Case::new();
    let m = tiny_model("Add");
    let mut proto = hb_ir::model_to_proto(&m);
    let g = proto.graph.as_mut().unwrap();
    g.node[0].input.push("w".into());
    g.initializer.push(pb::TensorProto {
        name: Some("w".into()),
        dims: vec![1, 4],
        data_type: Some(1),
        data_location: Some(pb::tensor_proto::DataLocation::External as i32),
        external_data: vec![pb::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("weights.bin".into()),
        }],
        ..Default::default()
    });
    let p = c.path("ext.onnx");
    std::fs::write(&p, proto.encode_to_vec()).unwrap();
    expect_error(
        "hb-info",
        &[p.to_str().unwrap()],
        "external data file",
        None,
    );
    // With the file present the model loads and runs.
    let w: Vec<u8> = [1f32, 1.0, 1.0, 1.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(c.path("weights.bin"), w).unwrap();
    let x = ok_x(&c);
    let dir = c.path("out");
    let out = Command::new(exe("hb-model-exec"))
        .args([
            "infer",
            "--model-file",
            p.to_str().unwrap(),
            "--input-file",
            x.to_str().unwrap(),
            "--output-dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("Add"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(exe("hb-model-exec"))
        .args(["infer"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(exe("hb-info")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
