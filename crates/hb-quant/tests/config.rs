//! Configs shaped like real X3, X5 and S100 configs parse; bad configs give
//! one-line errors naming the key.

use hb_quant::config::{self, InputQ, Placement};
use hb_quant::{March, QType};
use std::path::{Path, PathBuf};

fn cfg_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name)
}

#[test]
fn x3_config() {
    let c = config::load(&cfg_path("x3_resnet.yaml")).unwrap();
    assert_eq!(c.model.march, March::Bernoulli2);
    assert_eq!(c.model.output_model_file_prefix, "resnet_tiny_224x224_nv12");
    assert_eq!(c.model.remove_node_type, vec!["Dequantize"]);
    assert_eq!(c.inputs.len(), 1);
    let i = &c.inputs[0];
    assert_eq!(i.name, None);
    assert_eq!((i.type_train.as_str(), i.type_rt.as_str()), ("rgb", "nv12"));
    assert_eq!(i.mean, vec![123.675, 116.28, 103.53]);
    assert_eq!(i.scale, vec![0.01712475, 0.017507, 0.01742919]);
    assert_eq!(c.calibration.calibration_type.as_deref(), Some("max"));
    assert_eq!(c.calibration.max_percentile, Some(0.99996));
    assert_eq!(c.calibration.run_on_cpu, vec!["Conv_5"]);
    let ignored: Vec<&str> = c.ignored.iter().map(|i| i.key.as_str()).collect();
    assert!(
        ignored.contains(&"compiler_parameters.compile_mode"),
        "{ignored:?}"
    );
    assert!(
        ignored.contains(&"input_parameters.input_space_and_range"),
        "{ignored:?}"
    );
    assert!(!ignored.contains(&"compiler_parameters.optimize_level"));
}

#[test]
fn x5_config_with_json_quant_config() {
    let c = config::load(&cfg_path("x5_seg.yaml")).unwrap();
    assert_eq!(c.model.march, March::Bayes("bayes-e".into()));
    assert_eq!(c.inputs[0].std, vec![57.375, 57.12, 58.395]);
    assert_eq!(c.inputs[0].norm_type, "data_mean_and_scale");
    assert_eq!(c.inputs[0].shape, Some(vec![1, 3, 32, 32]));
    let qc = &c.calibration.quant_config;
    assert_eq!(qc.model.all_node_type, Some(QType::Int16));
    assert_eq!(qc.model.activation.calibration_type, vec!["max", "kl"]);
    assert_eq!(qc.model.activation.per_channel, vec![true, false]);
    assert_eq!(qc.op["Conv"].inputs[&1], InputQ::Type(QType::Int8));
    assert_eq!(qc.node["/head/Conv"].inputs[&0], InputQ::Type(QType::Int16));
    let ni = &c.model.node_info["/dec/Resize"];
    assert_eq!(ni.on, Some(Placement::Bpu));
    assert_eq!(ni.all_inputs, Some(InputQ::Type(QType::Int16)));
    assert_eq!(
        c.calibration.optimization,
        vec!["set_Softmax_input_int16", "bias_correction"]
    );
}

#[test]
fn s100_multi_input_config() {
    let c = config::load(&cfg_path("s100_sem.yaml")).unwrap();
    assert_eq!(c.inputs.len(), 5);
    assert_eq!(c.inputs[3].name.as_deref(), Some("timestep"));
    assert_eq!(c.inputs[3].shape, Some(vec![1]));
    assert_eq!(c.calibration.cal_data_dir.len(), 5);
    let a = &c.calibration.quant_config.model.activation;
    assert_eq!(a.num_bin, vec![2048, 4096]);
    assert_eq!(a.asymmetric, vec![false, true]);
    assert_eq!(a.max_percentile.len(), 3);
    let qc = &c.calibration.quant_config;
    assert_eq!(qc.op["MatMul"].qtype, Some(QType::Float16));
    assert_eq!(qc.subgraph["attn"].qtype, QType::Int16);
    assert_eq!(
        qc.model.weight.bias_correction.as_ref().unwrap().num_sample,
        10
    );
    assert_eq!(c.model.debug_mode, vec!["dump_calibration_data"]);
}

fn err(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("q.json"),
        "{\"model_config\": {\"all_node_typ\": \"int8\"}}",
    )
    .unwrap();
    let e = config::parse(yaml, &dir.path().join("model.yaml"))
        .unwrap_err()
        .to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    e
}

const BASE: &str = "model_parameters:\n  onnx_model: m.onnx\n  march: bayes-e\n";

#[test]
fn bad_configs_name_the_key() {
    let cases: Vec<(String, &str)> = vec![
        ("model_parameters:\n  onnx_modle: m.onnx\n".into(), "unknown key 'model_parameters.onnx_modle' (did you mean 'onnx_model'?)"),
        ("model_parameters:\n  march: bayes\n".into(), "'model_parameters.onnx_model': is required"),
        ("model_paramters:\n  onnx_model: m.onnx\n".into(), "did you mean 'model_parameters'"),
        (format!("{BASE}  marchh: x\n"), "did you mean 'march'"),
        ("model_parameters:\n  onnx_model: m.onnx\n  march: x9000\n".into(), "'x9000' is not a known march"),
        (format!("{BASE}input_parameters:\n  input_type_train: rgbx\n"), "'rgbx' is not one of"),
        (format!("{BASE}input_parameters:\n  input_name: a;b\n  input_shape: 1x3;1x3;1x3\n"), "has 3 ';'-separated values"),
        (format!("{BASE}input_parameters:\n  input_shape: 1by3\n"), "is not like 1x3x224x224"),
        (format!("{BASE}input_parameters:\n  mean_value: 1 2 x\n"), "'x' is not a number"),
        (format!("{BASE}input_parameters:\n  std_value: 0\n"), "must not be 0"),
        (format!("{BASE}calibration_parameters:\n  calibration_type: kll\n"), "'kll' is not one of"),
        (format!("{BASE}calibration_parameters:\n  max_percentile: 1.5\n"), "must be in [0.5, 1.0]"),
        (format!("{BASE}calibration_parameters:\n  optimization: make_it_better\n"), "'make_it_better' is not a known shortcut"),
        (format!("{BASE}calibration_parameters:\n  quant_config: {{model_config: {{all_node_type: int4}}}}\n"), "'int4' is not a qtype"),
        (format!("{BASE}calibration_parameters:\n  quant_config: {{model_config: {{activation: {{num_bin: 100}}}}}}\n"), "must be a whole number ≥ 129"),
        (format!("{BASE}calibration_parameters:\n  quant_config: {{op_config: {{Conv: {{qtpye: int16}}}}}}\n"), "did you mean 'qtype'"),
        (format!("{BASE}calibration_parameters:\n  quant_config: q.json\n"), "did you mean 'all_node_type'"),
        (format!("{BASE}calibration_parameters:\n  quant_config: missing.json\n"), "missing.json"),
        ("model_parameters:\n  onnx_model: m.onnx\n  march: bernoulli2\ncalibration_parameters:\n  quant_config: {model_config: {all_node_type: int16}}\n".into(), "int16 is not available on march bernoulli2"),
        (format!("{BASE}calibration_parameters:\n  quant_config: {{model_config: {{model_output_type: float16}}}}\n"), "float16 is not available on march bayes-e"),
        (format!("{BASE}compiler_parameters:\n  optimize_level: O7\n"), "'O7' is not O0, O1, O2 or O3"),
        (format!("{BASE}  node_info: \"Conv_0\"\n"), "should be node:qtype"),
        ("model_parameters: [1, 2]\n".into(), "must be a mapping"),
        ("model_parameters:\n  onnx_model: m.onnx\n   bad_indent: 1\n".into(), "not valid YAML"),
        ("model_parameters:\n  caffe_model: m.caffemodel\n".into(), "Caffe models are not supported"),
    ];
    assert!(cases.len() >= 15);
    for (yaml, want) in cases {
        let e = err(&yaml);
        assert!(e.contains(want), "for\n{yaml}\n got: {e}\nwant: {want}");
    }
}

#[test]
fn json_comments_are_stripped_outside_strings() {
    let s =
        config::quant_config::strip_json_comments("{\"a\": \"http://x\" // c\n, /* b */ \"b\": 1}");
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["a"], "http://x");
    assert_eq!(v["b"], 1);
}

#[test]
fn relative_paths_resolve_against_the_config() {
    let c = config::parse(
        "model_parameters:\n  onnx_model: sub/m.onnx\n",
        Path::new("/cfg/model.yaml"),
    )
    .unwrap();
    assert_eq!(c.model.onnx_model, PathBuf::from("/cfg/sub/m.onnx"));
    assert_eq!(c.model.working_dir, PathBuf::from("/cfg/model_output"));
}
