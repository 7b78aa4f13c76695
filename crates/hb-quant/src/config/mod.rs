//! The Horizon-style YAML config (`hb-calib --config model.yaml`).
//!
//! A user's existing config must work unchanged: every documented key of the
//! four groups is accepted; keys that have no effect on a CPU are recorded in
//! [`HbConfig::ignored`]; unknown keys are errors naming the closest valid
//! key. Multi-input values are one string with `;` between inputs (in
//! `input_name` order); per-channel numbers are separated by spaces or commas.

pub mod keys;
pub mod quant_config;

use crate::qtype::{March, QType};
use keys::{split_numbers, Section};
pub use quant_config::{
    BiasCorrection, InputQ, NodeConfig, Placement, QuantConfig, SubgraphConfig,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Config errors; `Display` is one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        msg: String,
    },
    /// A key that no group defines.
    #[error("unknown key '{key}'{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    UnknownKey {
        /// Dotted key path.
        key: String,
        /// The closest valid key.
        suggestion: Option<String>,
    },
    /// A key with a bad value.
    #[error("'{key}': {msg}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

impl ConfigError {
    /// A bad value at `key`.
    pub fn invalid(key: &str, msg: &str) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            msg: msg.to_string(),
        }
    }
}

/// A key accepted but without effect here, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Ignored {
    /// Dotted key.
    pub key: String,
    /// Why it has no effect.
    pub reason: String,
}

/// `model_parameters`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParameters {
    /// `onnx_model`, resolved against the config's folder.
    pub onnx_model: PathBuf,
    /// `march`.
    pub march: March,
    /// `working_dir` (default `model_output`), resolved against the config's folder.
    pub working_dir: PathBuf,
    /// `output_model_file_prefix` (default `model`).
    pub output_model_file_prefix: String,
    /// `output_nodes`.
    pub output_nodes: Vec<String>,
    /// `remove_node_type`.
    pub remove_node_type: Vec<String>,
    /// `remove_node_name`.
    pub remove_node_name: Vec<String>,
    /// `debug_mode` items (e.g. `dump_calibration_data`).
    pub debug_mode: Vec<String>,
    /// `node_info`, by node name.
    pub node_info: BTreeMap<String, NodeConfig>,
    /// `layer_out_dump`.
    pub layer_out_dump: bool,
    /// `log_level`.
    pub log_level: Option<String>,
}

/// Data types an input can have during training / at run time.
pub const INPUT_TYPES: &[&str] = &[
    "rgb",
    "bgr",
    "gray",
    "yuv444",
    "yuv444_128",
    "nv12",
    "featuremap",
];
/// `norm_type` values.
pub const NORM_TYPES: &[&str] = &[
    "no_preprocess",
    "data_mean",
    "data_scale",
    "data_mean_and_scale",
];

/// One model input's `input_parameters` (the `;` lists split per input).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InputParams {
    /// `input_name` (None when the config leaves it empty: single-input models).
    pub name: Option<String>,
    /// `input_type_train`.
    pub type_train: String,
    /// `input_type_rt`.
    pub type_rt: String,
    /// `input_layout_train` (NCHW / NHWC).
    pub layout_train: Option<String>,
    /// `input_shape` (e.g. `1x3x224x224`).
    pub shape: Option<Vec<usize>>,
    /// `input_batch`.
    pub batch: Option<usize>,
    /// `norm_type` (derived from mean/scale/std when absent).
    pub norm_type: String,
    /// `mean_value` per channel.
    pub mean: Vec<f32>,
    /// `scale_value` per channel.
    pub scale: Vec<f32>,
    /// `std_value` per channel.
    pub std: Vec<f32>,
}

impl InputParams {
    /// True for image inputs (a preprocess node is inserted), false for featuremaps.
    pub fn is_image(&self) -> bool {
        self.type_train != "featuremap"
    }
}

/// `calibration_parameters`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CalibrationParameters {
    /// `cal_data_dir` per input, resolved against the config's folder.
    pub cal_data_dir: Vec<PathBuf>,
    /// `cal_data_type` per input (raw binary files: float32 / uint8 ...).
    pub cal_data_type: Vec<String>,
    /// `calibration_type` (default, max, kl, mix, load, skip, ...).
    pub calibration_type: Option<String>,
    /// `max_percentile`.
    pub max_percentile: Option<f64>,
    /// `per_channel`.
    pub per_channel: Option<bool>,
    /// `run_on_cpu` node names.
    pub run_on_cpu: Vec<String>,
    /// `run_on_bpu` node names.
    pub run_on_bpu: Vec<String>,
    /// `optimization` shortcuts.
    pub optimization: Vec<String>,
    /// `quant_config`.
    pub quant_config: QuantConfig,
}

/// `compiler_parameters` (mostly without effect on a CPU).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompilerParameters {
    /// `optimize_level` (O0–O3).
    pub optimize_level: Option<String>,
    /// `compile_mode`.
    pub compile_mode: Option<String>,
    /// `core_num`.
    pub core_num: Option<usize>,
    /// `jobs`.
    pub jobs: Option<usize>,
}

/// A whole config file.
#[derive(Debug, Clone, PartialEq)]
pub struct HbConfig {
    /// The config file.
    pub path: PathBuf,
    /// `model_parameters`.
    pub model: ModelParameters,
    /// `input_parameters`, one entry per input.
    pub inputs: Vec<InputParams>,
    /// `calibration_parameters`.
    pub calibration: CalibrationParameters,
    /// `compiler_parameters`.
    pub compiler: CompilerParameters,
    /// Keys accepted without effect.
    pub ignored: Vec<Ignored>,
}

const MODEL_KEYS: &[&str] = &[
    "onnx_model",
    "caffe_model",
    "prototxt",
    "march",
    "working_dir",
    "output_model_file_prefix",
    "output_nodes",
    "remove_node_type",
    "remove_node_name",
    "debug_mode",
    "node_info",
    "layer_out_dump",
    "log_level",
    "set_node_data_type",
];
const INPUT_KEYS: &[&str] = &[
    "input_name",
    "input_type_train",
    "input_type_rt",
    "input_layout_train",
    "input_layout_rt",
    "input_shape",
    "input_batch",
    "norm_type",
    "mean_value",
    "scale_value",
    "std_value",
    "input_space_and_range",
    "separate_batch",
    "separate_name",
];
const CALIB_KEYS: &[&str] = &[
    "cal_data_dir",
    "cal_data_type",
    "preprocess_on",
    "calibration_type",
    "max_percentile",
    "per_channel",
    "run_on_cpu",
    "run_on_bpu",
    "optimization",
    "quant_config",
];
const COMPILER_KEYS: &[&str] = &[
    "optimize_level",
    "compile_mode",
    "core_num",
    "jobs",
    "debug",
    "max_time_per_fc",
    "input_source",
    "advice",
    "balance_factor",
    "cache_mode",
    "cache_path",
    "extra_params",
    "hbdk_pass_through_params",
    "ability_entry",
];
const GROUPS: &[&str] = &[
    "model_parameters",
    "input_parameters",
    "calibration_parameters",
    "compiler_parameters",
    "custom_op",
];

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<HbConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    parse(&text, path)
}

/// Parses config text; `path` locates relative paths and names the file in messages.
pub fn parse(text: &str, path: &Path) -> Result<HbConfig, ConfigError> {
    let file_err = |msg: String| ConfigError::File {
        path: path.display().to_string(),
        msg,
    };
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| file_err(format!("not valid YAML: {e}")))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let top = Section::new("", Some(&doc), GROUPS).map_err(|e| match e {
        ConfigError::UnknownKey { key, suggestion } => ConfigError::UnknownKey {
            key: key.trim_start_matches('.').to_string(),
            suggestion,
        },
        other => other,
    })?;
    let mut ignored = Vec::new();
    if top.get("custom_op").is_some() {
        ignored.push(Ignored {
            key: "custom_op".into(),
            reason: "custom CPU ops are not supported; the group is ignored".into(),
        });
    }
    let model = parse_model(
        &Section::new("model_parameters", top.get("model_parameters"), MODEL_KEYS)?,
        &base,
        &mut ignored,
    )?;
    let inputs = parse_inputs(
        &Section::new("input_parameters", top.get("input_parameters"), INPUT_KEYS)?,
        &mut ignored,
    )?;
    let calibration = parse_calibration(
        &Section::new(
            "calibration_parameters",
            top.get("calibration_parameters"),
            CALIB_KEYS,
        )?,
        &base,
        &mut ignored,
    )?;
    let compiler = parse_compiler(
        &Section::new(
            "compiler_parameters",
            top.get("compiler_parameters"),
            COMPILER_KEYS,
        )?,
        &mut ignored,
    )?;
    let cfg = HbConfig {
        path: path.to_path_buf(),
        model,
        inputs,
        calibration,
        compiler,
        ignored,
    };
    check_qtypes(&cfg)?;
    Ok(cfg)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p.trim());
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn parse_model(
    s: &Section,
    base: &Path,
    ignored: &mut Vec<Ignored>,
) -> Result<ModelParameters, ConfigError> {
    if s.get("caffe_model").is_some() || s.get("prototxt").is_some() {
        return Err(s.err(
            "caffe_model",
            "Caffe models are not supported; convert the model to ONNX",
        ));
    }
    let onnx = s
        .string("onnx_model")?
        .ok_or_else(|| s.err("onnx_model", "is required"))?;
    let march = match s.string("march")? {
        Some(m) => March::parse(&m).ok_or_else(|| s.err("march", &format!("'{m}' is not a known march (bernoulli2, bayes, bayes-e, nash-e, nash-m, nash-p)")))?,
        None => March::default(),
    };
    let mut node_info = BTreeMap::new();
    if let Some(v) = s.get("node_info") {
        node_info = parse_node_info(v, &s.path)?;
    }
    for k in ["log_level", "layer_out_dump"] {
        if s.get(k).is_some() {
            ignored.push(Ignored {
                key: format!("model_parameters.{k}"),
                reason: "logging/dump level has no effect; use hb-model-exec --dump-intermediate"
                    .into(),
            });
        }
    }
    Ok(ModelParameters {
        onnx_model: resolve(base, &onnx),
        march,
        working_dir: resolve(
            base,
            &s.string("working_dir")?
                .unwrap_or_else(|| "model_output".into()),
        ),
        output_model_file_prefix: s
            .string("output_model_file_prefix")?
            .unwrap_or_else(|| "model".into()),
        output_nodes: s.list("output_nodes")?,
        remove_node_type: s.list("remove_node_type")?,
        remove_node_name: s.list("remove_node_name")?,
        debug_mode: s.list("debug_mode")?,
        node_info,
        layer_out_dump: s.bool("layer_out_dump")?.unwrap_or(false),
        log_level: s.string("log_level")?,
    })
}

/// `node_info`: `"Conv_0:int16;Conv_1:int16"` or `{node: {ON: .., InputType: .., OutputType: ..}}`.
fn parse_node_info(
    v: &serde_yaml::Value,
    group: &str,
) -> Result<BTreeMap<String, NodeConfig>, ConfigError> {
    let path = format!("{group}.node_info");
    let mut out = BTreeMap::new();
    match v {
        serde_yaml::Value::String(s) => {
            for item in keys::split_inputs(s) {
                let (node, q) = item.split_once(':').ok_or_else(|| {
                    ConfigError::invalid(&path, &format!("'{item}' should be node:qtype"))
                })?;
                let q = QType::parse(q)
                    .ok_or_else(|| ConfigError::invalid(&path, &format!("'{q}' is not a qtype")))?;
                out.insert(
                    node.trim().to_string(),
                    NodeConfig {
                        qtype: Some(q),
                        ..Default::default()
                    },
                );
            }
        }
        serde_yaml::Value::Mapping(_) => {
            let json =
                serde_json::to_value(v).map_err(|e| ConfigError::invalid(&path, &e.to_string()))?;
            let obj = json
                .as_object()
                .ok_or_else(|| ConfigError::invalid(&path, "must be a mapping"))?;
            for (node, e) in obj {
                let wrapped = serde_json::json!({ "node_config": { node: e } });
                let qc = quant_config::parse(&wrapped, &path)?;
                out.extend(qc.node);
            }
        }
        _ => return Err(ConfigError::invalid(&path, "must be a string or a mapping")),
    }
    Ok(out)
}

fn parse_inputs(s: &Section, ignored: &mut Vec<Ignored>) -> Result<Vec<InputParams>, ConfigError> {
    let names = s.list("input_name")?;
    let lists: BTreeMap<&str, Vec<String>> = INPUT_KEYS
        .iter()
        .map(|k| Ok((*k, s.list(k)?)))
        .collect::<Result<_, ConfigError>>()?;
    let n = if names.len() > 1 {
        names.len()
    } else {
        lists.values().map(Vec::len).max().unwrap_or(0).max(1)
    };
    for (k, v) in &lists {
        if v.len() > 1 && v.len() != n {
            return Err(s.err(
                k,
                &format!(
                    "has {} ';'-separated values but the config describes {n} inputs",
                    v.len()
                ),
            ));
        }
    }
    for k in [
        "input_space_and_range",
        "separate_batch",
        "separate_name",
        "input_layout_rt",
    ] {
        if s.get(k).is_some() {
            ignored.push(Ignored {
                key: format!("input_parameters.{k}"),
                reason: "describes the on-device input format; hbkit feeds the training format"
                    .into(),
            });
        }
    }
    let pick = |k: &str, i: usize| -> Option<String> {
        let v = &lists[k];
        let x = if v.len() == 1 { v.first() } else { v.get(i) };
        x.cloned().filter(|x| !x.is_empty())
    };
    (0..n)
        .map(|i| {
            let type_train = pick("input_type_train", i)
                .unwrap_or_else(|| "featuremap".into())
                .to_ascii_lowercase();
            if !INPUT_TYPES.contains(&type_train.as_str()) {
                return Err(s.err(
                    "input_type_train",
                    &format!("'{type_train}' is not one of {}", INPUT_TYPES.join(", ")),
                ));
            }
            let type_rt = pick("input_type_rt", i)
                .unwrap_or_else(|| type_train.clone())
                .to_ascii_lowercase();
            if !INPUT_TYPES.contains(&type_rt.as_str()) {
                return Err(s.err(
                    "input_type_rt",
                    &format!("'{type_rt}' is not one of {}", INPUT_TYPES.join(", ")),
                ));
            }
            let layout_train = pick("input_layout_train", i).map(|l| l.to_ascii_uppercase());
            if let Some(l) = &layout_train {
                if l != "NCHW" && l != "NHWC" {
                    return Err(s.err("input_layout_train", &format!("'{l}' is not NCHW or NHWC")));
                }
            }
            let shape = pick("input_shape", i)
                .map(|t| {
                    t.split('x')
                        .map(|d| {
                            d.trim().parse::<usize>().map_err(|_| {
                                s.err("input_shape", &format!("'{t}' is not like 1x3x224x224"))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let batch = pick("input_batch", i)
                .map(|b| {
                    b.parse::<usize>()
                        .map_err(|_| s.err("input_batch", &format!("'{b}' is not a whole number")))
                })
                .transpose()?;
            let nums = |k: &str| -> Result<Vec<f32>, ConfigError> {
                pick(k, i)
                    .map(|t| split_numbers(&t).map_err(|m| s.err(k, &m)))
                    .unwrap_or(Ok(Vec::new()))
            };
            let (mean, scale, std) = (
                nums("mean_value")?,
                nums("scale_value")?,
                nums("std_value")?,
            );
            if std.contains(&0.0) {
                return Err(s.err("std_value", "must not be 0"));
            }
            let derived = match (mean.is_empty(), scale.is_empty() && std.is_empty()) {
                (true, true) => "no_preprocess",
                (false, true) => "data_mean",
                (true, false) => "data_scale",
                (false, false) => "data_mean_and_scale",
            };
            let norm_type = pick("norm_type", i).unwrap_or_else(|| derived.to_string());
            if !NORM_TYPES.contains(&norm_type.as_str()) {
                return Err(s.err(
                    "norm_type",
                    &format!("'{norm_type}' is not one of {}", NORM_TYPES.join(", ")),
                ));
            }
            Ok(InputParams {
                name: names.get(i).cloned().filter(|n| !n.is_empty()),
                type_train,
                type_rt,
                layout_train,
                shape,
                batch,
                norm_type,
                mean,
                scale,
                std,
            })
        })
        .collect()
}

/// Legacy `optimization` shortcuts.
pub const OPTIMIZATIONS: &[&str] = &[
    "set_all_nodes_int16",
    "set_model_output_int8",
    "set_model_output_int16",
    "asymmetric",
    "bias_correction",
    "run_fast",
];

fn parse_calibration(
    s: &Section,
    base: &Path,
    ignored: &mut Vec<Ignored>,
) -> Result<CalibrationParameters, ConfigError> {
    let calibration_type = s
        .string("calibration_type")?
        .map(|t| t.to_ascii_lowercase());
    if let Some(t) = &calibration_type {
        if !quant_config::CALIBRATION_TYPES.contains(&t.as_str()) {
            return Err(s.err(
                "calibration_type",
                &format!(
                    "'{t}' is not one of {}",
                    quant_config::CALIBRATION_TYPES.join(", ")
                ),
            ));
        }
    }
    let max_percentile = s.f64("max_percentile")?;
    if let Some(p) = max_percentile {
        if !(0.5..=1.0).contains(&p) {
            return Err(s.err("max_percentile", &format!("{p} must be in [0.5, 1.0]")));
        }
    }
    let optimization = s.list("optimization")?;
    for o in &optimization {
        let known = OPTIMIZATIONS.contains(&o.as_str())
            || (o.starts_with("set_")
                && (o.ends_with("_input_int16") || o.ends_with("_output_int16")));
        if !known {
            return Err(s.err(
                "optimization",
                &format!(
                    "'{o}' is not a known shortcut ({}, set_<Op>_input_int16)",
                    OPTIMIZATIONS.join(", ")
                ),
            ));
        }
        if o == "run_fast" {
            ignored.push(Ignored {
                key: "calibration_parameters.optimization.run_fast".into(),
                reason: "hbkit is always fast".into(),
            });
        }
    }
    if s.get("preprocess_on").is_some() {
        ignored.push(Ignored {
            key: "calibration_parameters.preprocess_on".into(),
            reason: "calibration data must already be preprocessed .npy/.bin".into(),
        });
    }
    let quant_config = match s.get("quant_config") {
        None => QuantConfig::default(),
        Some(serde_yaml::Value::String(p)) => {
            let file = resolve(base, p);
            let text = std::fs::read_to_string(&file).map_err(|e| ConfigError::File {
                path: file.display().to_string(),
                msg: e.to_string(),
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&quant_config::strip_json_comments(&text)).map_err(|e| {
                    ConfigError::File {
                        path: file.display().to_string(),
                        msg: format!("not valid JSON: {e}"),
                    }
                })?;
            quant_config::parse(&json, "quant_config")?
        }
        Some(v) => {
            let json =
                serde_json::to_value(v).map_err(|e| s.err("quant_config", &e.to_string()))?;
            quant_config::parse(&json, "quant_config")?
        }
    };
    Ok(CalibrationParameters {
        cal_data_dir: s
            .list("cal_data_dir")?
            .iter()
            .map(|d| resolve(base, d))
            .collect(),
        cal_data_type: s.list("cal_data_type")?,
        calibration_type,
        max_percentile,
        per_channel: s.bool("per_channel")?,
        run_on_cpu: s.list("run_on_cpu")?,
        run_on_bpu: s.list("run_on_bpu")?,
        optimization,
        quant_config,
    })
}

fn parse_compiler(
    s: &Section,
    ignored: &mut Vec<Ignored>,
) -> Result<CompilerParameters, ConfigError> {
    let optimize_level = s.string("optimize_level")?;
    if let Some(o) = &optimize_level {
        if !["O0", "O1", "O2", "O3"].contains(&o.to_ascii_uppercase().as_str()) {
            return Err(s.err("optimize_level", &format!("'{o}' is not O0, O1, O2 or O3")));
        }
    }
    let compile_mode = s.string("compile_mode")?;
    if let Some(m) = &compile_mode {
        if !["latency", "bandwidth", "balance"].contains(&m.as_str()) {
            return Err(s.err(
                "compile_mode",
                &format!("'{m}' is not latency, bandwidth or balance"),
            ));
        }
    }
    let keys: Vec<String> = s.keys().map(str::to_string).collect();
    for k in keys {
        if k != "optimize_level" {
            ignored.push(Ignored {
                key: format!("compiler_parameters.{k}"),
                reason: "no effect on the CPU runtime".into(),
            });
        }
    }
    Ok(CompilerParameters {
        optimize_level,
        compile_mode,
        core_num: s.usize("core_num")?,
        jobs: s.usize("jobs")?,
    })
}

/// Every qtype named in the config must be legal for `march`.
fn check_qtypes(cfg: &HbConfig) -> Result<(), ConfigError> {
    let march = &cfg.model.march;
    let qc = &cfg.calibration.quant_config;
    let mut named: Vec<(String, QType)> = Vec::new();
    if let Some(q) = qc.model.all_node_type {
        named.push(("quant_config.model_config.all_node_type".into(), q));
    }
    if let Some(q) = qc.model.model_output_type {
        named.push(("quant_config.model_config.model_output_type".into(), q));
    }
    for (section, map) in [
        ("op_config", &qc.op),
        ("node_config", &qc.node),
        ("node_info", &cfg.model.node_info),
    ] {
        for (name, nc) in map {
            let inputs = nc
                .inputs
                .values()
                .chain(nc.all_inputs.iter())
                .filter_map(|i| {
                    if let InputQ::Type(q) = i {
                        Some(*q)
                    } else {
                        None
                    }
                });
            for q in nc.qtype.into_iter().chain(nc.output_type).chain(inputs) {
                named.push((format!("{section}.{name}"), q));
            }
        }
    }
    for (name, sg) in &qc.subgraph {
        named.push((
            format!("quant_config.subgraph_config.{name}.qtype"),
            sg.qtype,
        ));
    }
    for (key, q) in named {
        if !march.allows(q) {
            return Err(ConfigError::invalid(
                &key,
                &format!("{q} is not available on march {}", march.name()),
            ));
        }
    }
    Ok(())
}
