//! Every fixture model, run by the float interpreter, matches the committed
//! ONNX Runtime outputs: max |err| ≤ 1e-4 × output range, cosine ≥ 0.99999 —
//! both as loaded and after the graph passes (BN fold, constant folding).

use hb_float::{fold::fold_constants, Registry, Session};
use hb_tensor::metrics;
use hb_testkit::fixtures::{all_models, load_samples, FixtureModel};

fn check_model(fm: &FixtureModel, optimize: bool) -> Vec<String> {
    let mut model = hb_ir::load_model(&fm.model).unwrap();
    if optimize {
        hb_ir::passes::optimize(&mut model.graph).unwrap();
        fold_constants(&mut model, &Registry::standard()).unwrap();
    }
    let session = Session::new(&model).unwrap_or_else(|e| panic!("{}: {e}", fm.model.display()));
    let names: Vec<String> = model.graph.inputs.iter().map(|v| v.name.clone()).collect();
    let samples = load_samples(&fm.test_dir, &names).unwrap();
    assert!(!samples.is_empty());
    let mut failures = Vec::new();
    for (k, s) in samples.iter().enumerate() {
        let outs = session
            .run(s)
            .unwrap_or_else(|e| panic!("{} sample {k}: {e}", fm.model.display()));
        for (name, got) in outs {
            let want =
                hb_tensor::io::read_npy(&fm.ort_dir.join(&name).join(format!("{k}.npy"))).unwrap();
            assert_eq!(want.shape(), got.shape(), "{name}");
            let (w, g) = (want.to_f32().unwrap(), got.to_f32().unwrap());
            let (w, g) = (w.as_slice().unwrap(), g.as_slice().unwrap());
            let rel = metrics::max_abs_rel_to_range(w, g);
            let cos = metrics::cosine(w, g);
            if rel > 1e-4 || cos < 0.99999 {
                failures.push(format!("{} opt={optimize} sample {k} output {name}: max err/range {rel:.2e}, cosine {cos:.7}", fm.model.display()));
            }
        }
    }
    failures
}

#[test]
fn fixtures_match_onnx_runtime() {
    let models = all_models().unwrap();
    assert!(
        models.len() >= 7,
        "expected every fixture model, found {}",
        models.len()
    );
    let mut failures = Vec::new();
    for fm in &models {
        failures.extend(check_model(fm, false));
        failures.extend(check_model(fm, true));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn batch_norm_is_folded_in_resnet_tiny() {
    let fm = all_models()
        .unwrap()
        .into_iter()
        .find(|m| m.fixture == "resnet_tiny")
        .unwrap();
    let mut model = hb_ir::load_model(&fm.model).unwrap();
    let before = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .count();
    let report = hb_ir::passes::optimize(&mut model.graph).unwrap();
    let after = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .count();
    assert!(before >= 4);
    assert_eq!(report.batch_norms, before);
    assert_eq!(after, 0);
}

#[test]
fn digits_cnn_accuracy_matches_float() {
    let fm = all_models()
        .unwrap()
        .into_iter()
        .find(|m| m.fixture == "digits_cnn")
        .unwrap();
    let model = hb_ir::load_model(&fm.model).unwrap();
    let session = Session::new(&model).unwrap();
    let samples = load_samples(&fm.test_dir, &["image".to_string()]).unwrap();
    let labels = hb_tensor::io::read_npy(&fm.test_dir.join("labels.npy"))
        .unwrap()
        .to_i64_vec()
        .unwrap();
    let mut correct = 0;
    for (s, &label) in samples.iter().zip(&labels) {
        let out = session.run(s).unwrap();
        let logits = out[0].1.to_f32().unwrap();
        let pred = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as i64)
            .unwrap();
        correct += (pred == label) as usize;
    }
    let acc = correct as f64 / samples.len() as f64;
    assert!(acc >= 0.95, "accuracy {acc}");
}
