//! The program format: round trip, the reference interpreter and the engine
//! on a small hand-made program, and one-line errors (no panic) for
//! corrupt, truncated and other-version files.

use hb_bpu::engine::{Engine, EngineOptions, Workspace};
use hb_bpu::fixed_point::Requant;
use hb_bpu::program::interp::Interpreter;
use hb_bpu::program::{decode, encode, pb, NoCpu, Program};
use hb_tensor::{DType, Tensor};
use std::sync::Arc;

fn value(name: &str, dt: DType, shape: &[u64], scale: Option<f32>) -> pb::TensorInfo {
    pb::TensorInfo {
        name: name.into(),
        dtype: dt.onnx_code(),
        shape: shape.to_vec(),
        quant: scale.map(|s| pb::QuantInfo {
            kind: pb::QuantType::QuantScale as i32,
            scales: vec![s],
            qtype: "int8".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn op(name: &str, ins: &[i32], outs: &[u32], kind: pb::op::Kind) -> pb::Op {
    pb::Op {
        name: name.into(),
        op_type: name.into(),
        inputs: ins.to_vec(),
        outputs: outs.to_vec(),
        placement: pb::Placement::Bpu as i32,
        qtype: "int8".into(),
        kind: Some(kind),
        ..Default::default()
    }
}

fn rq(r: Requant) -> pb::Requant {
    pb::Requant {
        multiplier: r.multiplier(),
        shift: r.shift(),
    }
}

/// x (f32 [2,3]) → Quantize(0.1) → Relu at scale 0.05 → Add(itself) → Dequantize.
fn small() -> Program {
    let half = Requant::from_ratio(2.0).unwrap();
    let r2 = hb_bpu::reference::eltwise::add_rescale(0.05, 0.05, 0.1).unwrap();
    Program {
        version: hb_bpu::program::FORMAT_VERSION,
        kind: pb::ProgramKind::Bc as i32,
        tensors: vec![
            value("x", DType::F32, &[2, 3], None),
            value("x:q8", DType::I8, &[2, 3], Some(0.1)),
            value("r:q8", DType::I8, &[2, 3], Some(0.05)),
            value("s:q8", DType::I8, &[2, 3], Some(0.1)),
            value("y", DType::F32, &[2, 3], None),
        ],
        inputs: vec![0],
        outputs: vec![4],
        ops: vec![
            op(
                "Quantize",
                &[0],
                &[1],
                pb::op::Kind::Quantize(pb::QuantizeOp {
                    scale: 0.1,
                    lo: -128,
                    hi: 127,
                    keep_masks: false,
                    mask_limit: 0.0,
                }),
            ),
            op(
                "Relu",
                &[1],
                &[2],
                pb::op::Kind::Rescale(pb::RescaleOp {
                    requant: vec![rq(half)],
                    axis: 0,
                    has_clamp: true,
                    lo: 0,
                    hi: 127,
                }),
            ),
            op(
                "Add",
                &[2, 2],
                &[3],
                pb::op::Kind::Add(pb::AddOp {
                    ma: r2.ma,
                    mb: r2.mb,
                    shift: r2.shift,
                }),
            ),
            op(
                "Dequantize",
                &[3],
                &[4],
                pb::op::Kind::Dequantize(pb::DequantizeOp {}),
            ),
        ],
        ..Default::default()
    }
}

#[test]
fn round_trip_and_run() {
    let p = small();
    let bytes = encode(&p);
    let q = decode(&bytes, "t.bc").unwrap();
    assert_eq!(p, q);
    let x = Tensor::from_f32(&[2, 3], vec![-1.0, 0.04, 0.26, 1.0, 5.0, 100.0]).unwrap();
    let interp = Interpreter::new(Arc::new(q.clone())).unwrap();
    let y = interp.run(std::slice::from_ref(&x), &NoCpu).unwrap();
    // q(x) at 0.1 = [-10, 0, 3, 10, 50, 127]; relu at 0.05 = [0, 0, 6, 20, 100, 127];
    // r + r at 0.1 = [0, 0, 6, 20, 100, 127].
    let v: Vec<f32> = y[0].to_f32().unwrap().iter().copied().collect();
    let want = [0.0f32, 0.0, 0.6, 2.0, 10.0, 12.7];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{v:?}");
    }
    let engine = Engine::new(Arc::new(q), EngineOptions::default()).unwrap();
    let mut ws = Workspace::new();
    for _ in 0..2 {
        assert_eq!(
            engine
                .run(std::slice::from_ref(&x), &NoCpu, &mut ws)
                .unwrap(),
            y
        );
    }
}

#[test]
fn bad_files_are_one_line_errors() {
    let bytes = encode(&small());
    let err = |b: &[u8]| decode(b, "m.bc").unwrap_err().to_string();
    assert!(err(&bytes[..10]).contains("truncated"));
    assert!(err(&bytes[..bytes.len() - 3]).contains("truncated"));
    let mut v = bytes.clone();
    v[0] = b'X';
    assert!(err(&v).contains("bad magic"));
    let mut v = bytes.clone();
    v[8] = 99;
    assert!(err(&v).contains("version 99 is not supported"));
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(err(&extra).contains("unexpected bytes"));
    // Flip every payload byte in turn: never a panic, always an error or a
    // program that still validates.
    for i in 16..bytes.len() {
        let mut v = bytes.clone();
        v[i] ^= 0xff;
        if let Ok(p) = decode(&v, "m.bc") {
            let _ = Interpreter::new(Arc::new(p));
        }
    }
    for e in [err(&bytes[..10]), err(&v_with_bad_id(&bytes))] {
        assert!(!e.contains('\n'), "{e}");
    }
}

fn v_with_bad_id(_: &[u8]) -> Vec<u8> {
    let mut p = small();
    p.ops[1].inputs[0] = 77;
    encode(&p)
}

#[test]
fn wrong_inputs_are_errors() {
    let interp = Interpreter::new(Arc::new(small())).unwrap();
    let bad_shape = Tensor::from_f32(&[3, 2], vec![0.0; 6]).unwrap();
    let e = interp.run(&[bad_shape], &NoCpu).unwrap_err().to_string();
    assert!(e.contains("input 'x' must be"), "{e}");
    let bad_type = Tensor::from_vec(&[2, 3], vec![0i8; 6]).unwrap();
    assert!(interp.run(&[bad_type], &NoCpu).is_err());
    assert!(interp.run(&[], &NoCpu).is_err());
}

/// `save` streams the file: its bytes are exactly `encode`'s, also with a
/// constant larger than the writer's 64 KiB buffer, and it loads back.
#[test]
fn save_writes_the_bytes_of_encode() {
    let mut p = small();
    p.tensors.push(pb::TensorInfo {
        name: "big".into(),
        dtype: DType::I8.onnx_code(),
        shape: vec![100_000],
        is_const: true,
        data: (0..100_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into(),
        ..Default::default()
    });
    let dir = std::env::temp_dir().join(format!("hb_bpu_save_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.bc");
    hb_bpu::program::save(&p, &path).unwrap();
    let written = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(written, encode(&p));
    assert_eq!(decode(&written, "p.bc").unwrap(), p);
}
