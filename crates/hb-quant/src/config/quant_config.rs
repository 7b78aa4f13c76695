//! `quant_config`: `model_config` < `op_config` < `subgraph_config` <
//! `node_config`, inline in the YAML or a JSON file (with `//` and `/* */`
//! comments). Every list-valued activation option is a search dimension.

use super::keys::closest;
use super::ConfigError;
use crate::qtype::QType;
use serde_json::Value;
use std::collections::BTreeMap;

/// The similarity metrics a search or bias correction may use.
pub const METRICS: &[&str] = &["cosine-similarity", "mse", "mre", "sqnr", "chebyshev"];
/// Calibration methods.
pub const CALIBRATION_TYPES: &[&str] = &[
    "default", "max", "kl", "mix", "load", "skip", "fixed", "min-max",
];

/// The parsed `quant_config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantConfig {
    /// Whole-model settings.
    pub model: ModelConfig,
    /// Per op type (e.g. `Softmax`).
    pub op: BTreeMap<String, NodeConfig>,
    /// Named subgraphs.
    pub subgraph: BTreeMap<String, SubgraphConfig>,
    /// Per node name (as in the optimized model).
    pub node: BTreeMap<String, NodeConfig>,
    /// Not a quant_config key: set from `march` when it has no int16
    /// (bernoulli2); turns off the int16 precision guards
    /// ([`crate::guards`]).
    pub int16_forbidden: bool,
}

/// `model_config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelConfig {
    /// `all_node_type`.
    pub all_node_type: Option<QType>,
    /// `model_output_type`.
    pub model_output_type: Option<QType>,
    /// `activation`.
    pub activation: ActivationConfig,
    /// `weight`.
    pub weight: WeightConfig,
    /// `modelwise_search`.
    pub modelwise_search: Option<SearchConfig>,
    /// `layerwise_search`.
    pub layerwise_search: Option<LayerwiseSearch>,
}

/// `model_config.activation`: each option may be a list (a search dimension).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivationConfig {
    /// `calibration_type` values.
    pub calibration_type: Vec<String>,
    /// `num_bin` values (≥ 129).
    pub num_bin: Vec<usize>,
    /// `max_num_bin`.
    pub max_num_bin: Option<usize>,
    /// `max_percentile` values (≥ 0.5).
    pub max_percentile: Vec<f64>,
    /// `per_channel` values.
    pub per_channel: Vec<bool>,
    /// `asymmetric` values.
    pub asymmetric: Vec<bool>,
}

/// `model_config.weight`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightConfig {
    /// `bias_correction`.
    pub bias_correction: Option<BiasCorrection>,
    /// `max_percentile` for weights.
    pub max_percentile: Option<f64>,
}

/// `weight.bias_correction`.
#[derive(Debug, Clone, PartialEq)]
pub struct BiasCorrection {
    /// Samples used (default 1).
    pub num_sample: usize,
    /// Metric deciding whether a correction is kept.
    pub metric: String,
}

/// `modelwise_search`.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Metric.
    pub metric: String,
    /// Target similarity, if given.
    pub similarity: Option<f64>,
}

/// `layerwise_search`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerwiseSearch {
    /// Metric.
    pub metric: String,
    /// Take the k most sensitive nodes instead of a threshold.
    pub topk: Option<usize>,
    /// Promote the chosen nodes to this qtype.
    pub qtype: Option<QType>,
}

/// A per-input qtype: a type, or `ec` (error compensation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputQ {
    /// A plain qtype.
    Type(QType),
    /// Error compensation (a second int8 residual term).
    Ec,
}

/// Where a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The integer accelerator.
    Bpu,
    /// The CPU, in float.
    Cpu,
}

/// An `op_config` or `node_config` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeConfig {
    /// `qtype` (the node's output and, unless overridden, inputs).
    pub qtype: Option<QType>,
    /// `input0`, `input1`, ... / `InputType0`, ...
    pub inputs: BTreeMap<usize, InputQ>,
    /// `InputType` (every input).
    pub all_inputs: Option<InputQ>,
    /// `OutputType`.
    pub output_type: Option<QType>,
    /// `ON`.
    pub on: Option<Placement>,
}

/// A `subgraph_config` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SubgraphConfig {
    /// Tensors entering the subgraph.
    pub inputs: Vec<String>,
    /// Tensors leaving it.
    pub outputs: Vec<String>,
    /// The qtype of every node between them.
    pub qtype: QType,
}

/// Removes `//` and `/* */` comments outside JSON strings.
pub fn strip_json_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_str = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

fn obj<'a>(
    v: &'a Value,
    path: &str,
    known: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, ConfigError> {
    let m = v
        .as_object()
        .ok_or_else(|| ConfigError::invalid(path, "must be a mapping"))?;
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            return Err(ConfigError::UnknownKey {
                key: format!("{path}.{k}"),
                suggestion: closest(k, known),
            });
        }
    }
    Ok(m)
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

fn text(v: &Value, path: &str) -> Result<String, ConfigError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigError::invalid(path, "must be a value")),
    }
}

fn number(v: &Value, path: &str) -> Result<f64, ConfigError> {
    let t = text(v, path)?;
    t.trim()
        .parse()
        .map_err(|_| ConfigError::invalid(path, &format!("'{t}' is not a number")))
}

fn boolean(v: &Value, path: &str) -> Result<bool, ConfigError> {
    let t = text(v, path)?;
    super::keys::parse_bool(&t)
        .ok_or_else(|| ConfigError::invalid(path, &format!("'{t}' is not true/false")))
}

fn qtype(v: &Value, path: &str) -> Result<QType, ConfigError> {
    let t = text(v, path)?;
    QType::parse(&t).ok_or_else(|| {
        ConfigError::invalid(
            path,
            &format!("'{t}' is not a qtype (use {})", QType::NAMES.join(", ")),
        )
    })
}

fn input_q(v: &Value, path: &str) -> Result<InputQ, ConfigError> {
    let t = text(v, path)?;
    if t.trim().eq_ignore_ascii_case("ec") {
        Ok(InputQ::Ec)
    } else {
        qtype(v, path).map(InputQ::Type)
    }
}

fn metric(v: &Value, path: &str) -> Result<String, ConfigError> {
    let t = text(v, path)?.to_ascii_lowercase();
    if METRICS.contains(&t.as_str()) {
        Ok(t)
    } else {
        Err(ConfigError::invalid(
            path,
            &format!("'{t}' is not a metric (use {})", METRICS.join(", ")),
        ))
    }
}

/// Parses a `quant_config` value (already JSON-shaped).
pub fn parse(v: &Value, path: &str) -> Result<QuantConfig, ConfigError> {
    let top = obj(
        v,
        path,
        &[
            "model_config",
            "op_config",
            "subgraph_config",
            "node_config",
        ],
    )?;
    let mut qc = QuantConfig::default();
    if let Some(m) = top.get("model_config") {
        qc.model = parse_model_config(m, &format!("{path}.model_config"))?;
    }
    for (section, target) in [("op_config", &mut qc.op), ("node_config", &mut qc.node)] {
        if let Some(m) = top.get(section) {
            let p = format!("{path}.{section}");
            let entries = m
                .as_object()
                .ok_or_else(|| ConfigError::invalid(&p, "must be a mapping"))?;
            for (name, e) in entries {
                target.insert(name.clone(), parse_node_config(e, &format!("{p}.{name}"))?);
            }
        }
    }
    if let Some(m) = top.get("subgraph_config") {
        let p = format!("{path}.subgraph_config");
        let entries = m
            .as_object()
            .ok_or_else(|| ConfigError::invalid(&p, "must be a mapping"))?;
        for (name, e) in entries {
            let ep = format!("{p}.{name}");
            let o = obj(e, &ep, &["inputs", "outputs", "qtype"])?;
            let names = |k: &str| -> Result<Vec<String>, ConfigError> {
                o.get(k)
                    .map(|v| {
                        as_list(v)
                            .into_iter()
                            .map(|x| text(x, &format!("{ep}.{k}")))
                            .collect()
                    })
                    .unwrap_or(Ok(Vec::new()))
            };
            let q = o
                .get("qtype")
                .ok_or_else(|| ConfigError::invalid(&ep, "needs a qtype"))?;
            let sg = SubgraphConfig {
                inputs: names("inputs")?,
                outputs: names("outputs")?,
                qtype: qtype(q, &format!("{ep}.qtype"))?,
            };
            if sg.inputs.is_empty() || sg.outputs.is_empty() {
                return Err(ConfigError::invalid(&ep, "needs inputs and outputs"));
            }
            qc.subgraph.insert(name.clone(), sg);
        }
    }
    Ok(qc)
}

fn parse_model_config(v: &Value, path: &str) -> Result<ModelConfig, ConfigError> {
    let known = [
        "all_node_type",
        "model_output_type",
        "activation",
        "weight",
        "modelwise_search",
        "layerwise_search",
    ];
    let m = obj(v, path, &known)?;
    let p = |k: &str| format!("{path}.{k}");
    let mut mc = ModelConfig::default();
    if let Some(x) = m.get("all_node_type") {
        mc.all_node_type = Some(qtype(x, &p("all_node_type"))?);
    }
    if let Some(x) = m.get("model_output_type") {
        mc.model_output_type = Some(qtype(x, &p("model_output_type"))?);
    }
    if let Some(a) = m.get("activation") {
        mc.activation = parse_activation(a, &p("activation"))?;
    }
    if let Some(w) = m.get("weight") {
        let wp = p("weight");
        let o = obj(w, &wp, &["bias_correction", "max_percentile"])?;
        if let Some(bc) = o.get("bias_correction") {
            let bp = format!("{wp}.bias_correction");
            let b = obj(bc, &bp, &["num_sample", "metric"])?;
            let num_sample = match b.get("num_sample") {
                Some(n) => number(n, &format!("{bp}.num_sample"))? as usize,
                None => 1,
            };
            let metric = match b.get("metric") {
                Some(x) => metric(x, &format!("{bp}.metric"))?,
                None => "cosine-similarity".into(),
            };
            mc.weight.bias_correction = Some(BiasCorrection {
                num_sample: num_sample.max(1),
                metric,
            });
        }
        if let Some(x) = o.get("max_percentile") {
            mc.weight.max_percentile = Some(number(x, &format!("{wp}.max_percentile"))?);
        }
    }
    if let Some(s) = m.get("modelwise_search") {
        let sp = p("modelwise_search");
        let o = obj(s, &sp, &["metric", "similarity"])?;
        mc.modelwise_search = Some(SearchConfig {
            metric: o
                .get("metric")
                .map(|x| metric(x, &format!("{sp}.metric")))
                .transpose()?
                .unwrap_or_else(|| "cosine-similarity".into()),
            similarity: o
                .get("similarity")
                .map(|x| number(x, &format!("{sp}.similarity")))
                .transpose()?,
        });
    }
    if let Some(s) = m.get("layerwise_search") {
        let sp = p("layerwise_search");
        let o = obj(s, &sp, &["metric", "topk", "qtype"])?;
        mc.layerwise_search = Some(LayerwiseSearch {
            metric: o
                .get("metric")
                .map(|x| metric(x, &format!("{sp}.metric")))
                .transpose()?
                .unwrap_or_else(|| "cosine-similarity".into()),
            topk: o
                .get("topk")
                .map(|x| number(x, &format!("{sp}.topk")).map(|n| n as usize))
                .transpose()?,
            qtype: o
                .get("qtype")
                .map(|x| qtype(x, &format!("{sp}.qtype")))
                .transpose()?,
        });
    }
    Ok(mc)
}

fn parse_activation(v: &Value, path: &str) -> Result<ActivationConfig, ConfigError> {
    let known = [
        "calibration_type",
        "num_bin",
        "max_num_bin",
        "max_percentile",
        "per_channel",
        "asymmetric",
    ];
    let m = obj(v, path, &known)?;
    let p = |k: &str| format!("{path}.{k}");
    let mut a = ActivationConfig::default();
    if let Some(x) = m.get("calibration_type") {
        for t in as_list(x) {
            let s = text(t, &p("calibration_type"))?.to_ascii_lowercase();
            if !CALIBRATION_TYPES.contains(&s.as_str()) {
                return Err(ConfigError::invalid(
                    &p("calibration_type"),
                    &format!(
                        "'{s}' is not a calibration type (use {})",
                        CALIBRATION_TYPES.join(", ")
                    ),
                ));
            }
            a.calibration_type.push(s);
        }
    }
    if let Some(x) = m.get("num_bin") {
        for t in as_list(x) {
            let n = number(t, &p("num_bin"))?;
            if n < 129.0 || n.fract() != 0.0 {
                return Err(ConfigError::invalid(
                    &p("num_bin"),
                    &format!("{n} must be a whole number ≥ 129"),
                ));
            }
            a.num_bin.push(n as usize);
        }
    }
    if let Some(x) = m.get("max_num_bin") {
        a.max_num_bin = Some(number(x, &p("max_num_bin"))? as usize);
    }
    if let Some(x) = m.get("max_percentile") {
        for t in as_list(x) {
            let n = number(t, &p("max_percentile"))?;
            if !(0.5..=1.0).contains(&n) {
                return Err(ConfigError::invalid(
                    &p("max_percentile"),
                    &format!("{n} must be in [0.5, 1.0]"),
                ));
            }
            a.max_percentile.push(n);
        }
    }
    for (k, target) in [
        ("per_channel", &mut a.per_channel),
        ("asymmetric", &mut a.asymmetric),
    ] {
        if let Some(x) = m.get(k) {
            for t in as_list(x) {
                target.push(boolean(t, &p(k))?);
            }
        }
    }
    Ok(a)
}

fn parse_node_config(v: &Value, path: &str) -> Result<NodeConfig, ConfigError> {
    let m = v
        .as_object()
        .ok_or_else(|| ConfigError::invalid(path, "must be a mapping"))?;
    let mut nc = NodeConfig::default();
    for (k, x) in m {
        let kp = format!("{path}.{k}");
        let input_index = k
            .strip_prefix("input")
            .or_else(|| k.strip_prefix("InputType"))
            .filter(|s| !s.is_empty())
            .and_then(|s| s.parse::<usize>().ok());
        match k.as_str() {
            "qtype" => nc.qtype = Some(qtype(x, &kp)?),
            "InputType" => nc.all_inputs = Some(input_q(x, &kp)?),
            "OutputType" => nc.output_type = Some(qtype(x, &kp)?),
            "ON" | "on" => {
                nc.on = Some(match text(x, &kp)?.to_ascii_uppercase().as_str() {
                    "BPU" => Placement::Bpu,
                    "CPU" => Placement::Cpu,
                    other => {
                        return Err(ConfigError::invalid(
                            &kp,
                            &format!("'{other}' is not BPU or CPU"),
                        ))
                    }
                })
            }
            _ if input_index.is_some() => {
                nc.inputs.insert(input_index.unwrap_or(0), input_q(x, &kp)?);
            }
            _ => {
                let known = [
                    "qtype",
                    "input0",
                    "input1",
                    "InputType",
                    "InputType0",
                    "InputType1",
                    "OutputType",
                    "ON",
                ];
                return Err(ConfigError::UnknownKey {
                    key: kp,
                    suggestion: closest(k, &known),
                });
            }
        }
    }
    Ok(nc)
}

fn list_value<T: Clone + Into<Value>>(v: &[T]) -> Value {
    if v.len() == 1 {
        v[0].clone().into()
    } else {
        Value::Array(v.iter().cloned().map(Into::into).collect())
    }
}

fn input_q_text(q: InputQ) -> String {
    match q {
        InputQ::Ec => "ec".into(),
        InputQ::Type(t) => t.to_string(),
    }
}

/// One `op_config` / `node_config` entry as JSON (Horizon spelling:
/// `qtype`, `inputK`, `InputType`, `OutputType`, `ON`).
pub fn node_config_json(nc: &NodeConfig) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(q) = nc.qtype {
        m.insert("qtype".into(), q.to_string().into());
    }
    for (k, q) in &nc.inputs {
        m.insert(format!("input{k}"), input_q_text(*q).into());
    }
    if let Some(q) = nc.all_inputs {
        m.insert("InputType".into(), input_q_text(q).into());
    }
    if let Some(q) = nc.output_type {
        m.insert("OutputType".into(), q.to_string().into());
    }
    if let Some(p) = nc.on {
        let on = match p {
            Placement::Bpu => "BPU",
            Placement::Cpu => "CPU",
        };
        m.insert("ON".into(), on.into());
    }
    Value::Object(m)
}

/// The quant_config as the JSON [`parse`] reads (`parse(&to_json(qc))`
/// gives `qc` back); empty sections and unset options are left out.
pub fn to_json(qc: &QuantConfig) -> Value {
    use serde_json::{json, Map};
    let mut top = Map::new();
    let mc = &qc.model;
    let mut model = Map::new();
    if let Some(q) = mc.all_node_type {
        model.insert("all_node_type".into(), q.to_string().into());
    }
    if let Some(q) = mc.model_output_type {
        model.insert("model_output_type".into(), q.to_string().into());
    }
    let a = &mc.activation;
    let mut act = Map::new();
    if !a.calibration_type.is_empty() {
        act.insert("calibration_type".into(), list_value(&a.calibration_type));
    }
    if !a.num_bin.is_empty() {
        let v: Vec<u64> = a.num_bin.iter().map(|&n| n as u64).collect();
        act.insert("num_bin".into(), list_value(&v));
    }
    if let Some(n) = a.max_num_bin {
        act.insert("max_num_bin".into(), (n as u64).into());
    }
    if !a.max_percentile.is_empty() {
        act.insert("max_percentile".into(), list_value(&a.max_percentile));
    }
    if !a.per_channel.is_empty() {
        act.insert("per_channel".into(), list_value(&a.per_channel));
    }
    if !a.asymmetric.is_empty() {
        act.insert("asymmetric".into(), list_value(&a.asymmetric));
    }
    if !act.is_empty() {
        model.insert("activation".into(), Value::Object(act));
    }
    let mut weight = Map::new();
    if let Some(bc) = &mc.weight.bias_correction {
        weight.insert(
            "bias_correction".into(),
            json!({"num_sample": bc.num_sample, "metric": bc.metric}),
        );
    }
    if let Some(p) = mc.weight.max_percentile {
        weight.insert("max_percentile".into(), p.into());
    }
    if !weight.is_empty() {
        model.insert("weight".into(), Value::Object(weight));
    }
    if let Some(s) = &mc.modelwise_search {
        let mut m = Map::new();
        m.insert("metric".into(), s.metric.clone().into());
        if let Some(t) = s.similarity {
            m.insert("similarity".into(), t.into());
        }
        model.insert("modelwise_search".into(), Value::Object(m));
    }
    if let Some(s) = &mc.layerwise_search {
        let mut m = Map::new();
        m.insert("metric".into(), s.metric.clone().into());
        if let Some(k) = s.topk {
            m.insert("topk".into(), (k as u64).into());
        }
        if let Some(q) = s.qtype {
            m.insert("qtype".into(), q.to_string().into());
        }
        model.insert("layerwise_search".into(), Value::Object(m));
    }
    if !model.is_empty() {
        top.insert("model_config".into(), Value::Object(model));
    }
    for (key, section) in [("op_config", &qc.op), ("node_config", &qc.node)] {
        if !section.is_empty() {
            let m: Map<String, Value> = section
                .iter()
                .map(|(k, v)| (k.clone(), node_config_json(v)))
                .collect();
            top.insert(key.into(), Value::Object(m));
        }
    }
    if !qc.subgraph.is_empty() {
        let m: Map<String, Value> = qc
            .subgraph
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    json!({"inputs": s.inputs, "outputs": s.outputs, "qtype": s.qtype.to_string()}),
                )
            })
            .collect();
        top.insert("subgraph_config".into(), Value::Object(m));
    }
    Value::Object(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn to_json_round_trips() {
        let v = json!({
            "model_config": {
                "all_node_type": "int8",
                "model_output_type": "int16",
                "activation": {"calibration_type": ["max", "kl"], "num_bin": 2048,
                    "max_num_bin": 8192, "max_percentile": [0.99995, 1.0],
                    "per_channel": false, "asymmetric": [true, false]},
                "weight": {"bias_correction": {"num_sample": 2, "metric": "mse"}, "max_percentile": 0.999},
                "modelwise_search": {"metric": "cosine-similarity", "similarity": 0.99},
                "layerwise_search": {"metric": "mse", "topk": 3, "qtype": "int16"}
            },
            "op_config": {"Softmax": {"qtype": "int16"}, "Resize": {"input0": "ec"}},
            "subgraph_config": {"head": {"inputs": ["a"], "outputs": ["b", "c"], "qtype": "float16"}},
            "node_config": {"Conv_0": {"qtype": "int16", "input1": "ec", "OutputType": "int8", "ON": "BPU"},
                            "Add_1": {"InputType": "int16", "ON": "CPU"}}
        });
        let qc = parse(&v, "quant_config").expect("parses");
        let back = parse(&to_json(&qc), "quant_config").expect("parses again");
        assert_eq!(qc, back);
        assert_eq!(to_json(&QuantConfig::default()), json!({}));
    }
}
