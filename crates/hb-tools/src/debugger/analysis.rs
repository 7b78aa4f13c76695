//! `sensitivity-analysis`: promote the units whose sensitivity is at or
//! below a threshold to a higher-precision qtype and report the model
//! outputs before and after — the sensitivity-sorted int16 promotion of the
//! Horizon tuning guide, one row per threshold — with the quant_config
//! (`node_config`) that makes hb-calib do the same.

use super::common::{at_or_worse, fmt_metric, to_json, write_text, Calibrated};
use super::sensitivity::{self, Granularity, Observed, SensOptions, Sensitivity};
use super::AnalysisArgs;
use crate::cli::{ToolError, ToolResult};
use crate::inputs::Sample;
use hb_float::Session;
use hb_ir::{Attr, Model};
use hb_quant::qtype::QType;
use hb_quant::report::table;
use hb_tensor::metrics;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Per-output result of one configuration (means over samples).
#[derive(Debug, Clone, Serialize)]
pub struct OutputScore {
    /// Output name.
    pub output: String,
    /// The chosen metric.
    pub metric: f64,
    /// Cosine similarity.
    pub cosine: f64,
    /// Unique values of the float output.
    pub float_unique: f64,
    /// Unique values of the calibrated output.
    pub calibrated_unique: f64,
}

/// Scores `model` against the float reference on `samples`.
pub fn evaluate(
    cal: &Calibrated,
    model: &Model,
    samples: &[Sample],
    metric: &str,
) -> ToolResult<Vec<OutputScore>> {
    let float = cal.float_session()?;
    let quant = Session::new(model)?;
    let mut rows: Vec<OutputScore> = Vec::new();
    for s in samples {
        let (a, b) = (float.run(s)?, quant.run(s)?);
        for (k, ((name, x), (_, y))) in a.iter().zip(&b).enumerate() {
            let (Some(x), Some(y)) = (super::common::flat(x), super::common::flat(y)) else {
                continue;
            };
            if rows.len() <= k {
                rows.push(OutputScore {
                    output: name.clone(),
                    metric: 0.0,
                    cosine: 0.0,
                    float_unique: 0.0,
                    calibrated_unique: 0.0,
                });
            }
            let r = &mut rows[k];
            r.metric += metrics::by_name(metric, &x, &y).unwrap_or(f64::NAN);
            r.cosine += metrics::cosine(&x, &y);
            r.float_unique += metrics::unique_count(&x) as f64;
            r.calibrated_unique += metrics::unique_count(&y) as f64;
        }
    }
    let n = samples.len().max(1) as f64;
    for r in rows.iter_mut() {
        r.metric /= n;
        r.cosine /= n;
        r.float_unique /= n;
        r.calibrated_unique /= n;
    }
    Ok(rows)
}

/// The calibrated model with calibration nodes `calib` set to `qtype`.
/// Symmetric per-tensor feature thresholds become at least the largest
/// |value| seen on the data (`observed`), the int16 rule of hb-calib (for
/// int16, KL equals max); other thresholds are kept.
pub fn promote(cal: &Calibrated, calib: &[usize], qtype: QType, observed: &[Observed]) -> Model {
    let mut m = cal.model.clone();
    for &c in calib {
        let cn = &cal.nodes[c];
        let node = &mut m.graph.nodes[cn.step];
        node.set_attr("qtype", Attr::String(qtype.to_string()));
        let per_tensor = !cn.fq.asymmetric && cn.fq.thresholds.len() == 1;
        if qtype == QType::Int16 && !cn.is_weight && per_tensor {
            if let Some(o) = observed.get(c) {
                let absmax = o.min.abs().max(o.max.abs());
                let t = cn.fq.thresholds[0];
                // Widen to the data, or replace a degenerate threshold (far
                // above every value: a re-calibration would not keep it).
                let degenerate = !t.is_finite() || (absmax > 0.0 && t > 100.0 * absmax);
                if absmax.is_finite() && (absmax > t || degenerate) {
                    node.set_attr("thresholds", Attr::Floats(vec![absmax]));
                }
            }
        }
    }
    m
}

/// `node_config` entries that make hb-calib give `calib` the qtype `q`:
/// `{node: {"qtype": q}}` for whole nodes, `{consumer: {"inputK": q}}` for
/// single calibration nodes, `{producer: {"OutputType": q}}` for outputs.
pub fn node_config(
    cal: &Calibrated,
    whole_nodes: &[String],
    calib: &[usize],
    q: QType,
) -> Map<String, Value> {
    let g = &cal.model.graph;
    let mut nc = Map::new();
    for n in whole_nodes {
        nc.insert(n.clone(), json!({"qtype": q.to_string()}));
    }
    for &c in calib {
        let cn = &cal.nodes[c];
        if cn.model_output {
            if let Some(p) = g.producer(&cn.input) {
                let e = nc
                    .entry(g.nodes[p].name.clone())
                    .or_insert_with(|| json!({}));
                if let Some(o) = e.as_object_mut() {
                    o.insert("OutputType".into(), json!(q.to_string()));
                }
            }
            continue;
        }
        for (n, k) in &cn.consumers {
            let name = g.nodes[*n].name.clone();
            if whole_nodes.contains(&name) {
                continue;
            }
            let e = nc.entry(name).or_insert_with(|| json!({}));
            if let Some(o) = e.as_object_mut() {
                o.insert(format!("input{k}"), json!(q.to_string()));
            }
        }
    }
    nc
}

/// One row: a threshold and the outputs with the units at or below it promoted.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `None` = the calibrated model as stored.
    pub threshold: Option<f64>,
    /// Units promoted.
    pub promoted: usize,
    /// Calibration nodes promoted.
    pub calibration_nodes: usize,
    /// Per output.
    pub outputs: Vec<OutputScore>,
    /// The quant_config that asks hb-calib for the same promotion.
    pub quant_config: Value,
}

/// The whole analysis.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Metric.
    pub metric: String,
    /// qtype given to promoted units.
    pub qtype: String,
    /// Rows: the stored model, then one per threshold.
    pub steps: Vec<Step>,
    /// The sensitivity it is based on.
    pub sensitivity: Sensitivity,
}

/// Runs the analysis.
pub fn analyse(
    cal: &Calibrated,
    samples: &[Sample],
    granularity: Granularity,
    thresholds: &[f64],
    qtype: QType,
    metric: &str,
    progress: bool,
) -> ToolResult<(Analysis, Option<Model>)> {
    let units = sensitivity::units(cal, granularity, &[])?;
    let opts = SensOptions {
        metrics: vec![metric.to_string()],
        targets: sensitivity::resolve_targets(cal, &[])?,
        naive: false,
        progress,
    };
    let sens = sensitivity::run(cal, units, granularity, samples, &opts)?;
    let mut steps = vec![Step {
        threshold: None,
        promoted: 0,
        calibration_nodes: 0,
        outputs: evaluate(cal, &cal.model, samples, metric)?,
        quant_config: json!({}),
    }];
    let mut last = None;
    for &t in thresholds {
        let picked: Vec<&sensitivity::SensRow> = sens
            .rows
            .iter()
            .filter(|r| at_or_worse(metric, r.metrics[metric], t))
            .collect();
        let mut calib: Vec<usize> = picked.iter().flat_map(|r| r.unit.calib.clone()).collect();
        calib.sort_unstable();
        calib.dedup();
        let m = promote(cal, &calib, qtype, &sens.observed);
        let whole: Vec<String> = if granularity == Granularity::Node {
            picked.iter().map(|r| r.unit.name.clone()).collect()
        } else {
            Vec::new()
        };
        let single: &[usize] = if granularity == Granularity::Node {
            &[]
        } else {
            &calib
        };
        let nc = node_config(cal, &whole, single, qtype);
        steps.push(Step {
            threshold: Some(t),
            promoted: picked.len(),
            calibration_nodes: calib.len(),
            outputs: evaluate(cal, &m, samples, metric)?,
            quant_config: json!({ "node_config": nc }),
        });
        last = Some(m);
    }
    Ok((
        Analysis {
            metric: metric.to_string(),
            qtype: qtype.to_string(),
            steps,
            sensitivity: sens,
        },
        last,
    ))
}

/// The table of steps as text.
pub fn render(a: &Analysis) -> String {
    let outs: Vec<String> = a.steps[0]
        .outputs
        .iter()
        .map(|o| o.output.clone())
        .collect();
    let mut header: Vec<String> = vec![
        format!("{} <= (set to {})", a.metric, a.qtype),
        "units".into(),
        "calib nodes".into(),
    ];
    for o in &outs {
        header.push(format!("{o} {}", a.metric));
        header.push(format!("{o} unique"));
    }
    let body: Vec<Vec<String>> = a
        .steps
        .iter()
        .map(|s| {
            let mut v = vec![
                s.threshold
                    .map_or("None (as calibrated)".into(), |t| t.to_string()),
                s.promoted.to_string(),
                s.calibration_nodes.to_string(),
            ];
            for o in &s.outputs {
                v.push(fmt_metric(o.metric));
                v.push(format!("{:.0}/{:.0}", o.calibrated_unique, o.float_unique));
            }
            v
        })
        .collect();
    let h: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    let mut s = table(&h, &body);
    s.push_str(&format!(
        "sensitivity of {} {}(s) on {} sample(s) in {:.2} s\n",
        a.sensitivity.rows.len(),
        a.sensitivity.granularity.name(),
        a.sensitivity.samples,
        a.sensitivity.seconds
    ));
    if let Some(last) = a.steps.last().filter(|s| s.threshold.is_some()) {
        s.push_str("quant_config for the last threshold (hb-calib accepts it as is):\n");
        s.push_str(&serde_json::to_string_pretty(&last.quant_config).unwrap_or_default());
        s.push('\n');
    }
    s
}

/// The `sensitivity-analysis` subcommand.
pub fn run_cli(a: AnalysisArgs) -> ToolResult<()> {
    super::common::check_metrics(std::slice::from_ref(&a.metric))?;
    let qtype = QType::parse(&a.qtype).ok_or_else(|| {
        ToolError::input(format!(
            "--qtype '{}' is not one of {}",
            a.qtype,
            QType::NAMES.join(", ")
        ))
    })?;
    let (cal, samples) = a.io.load()?;
    let (an, model) = analyse(
        &cal,
        &samples,
        a.node_type,
        &a.thresholds,
        qtype,
        &a.metric,
        super::progress(a.json),
    )?;
    let text = render(&an);
    if let Some(dir) = &a.save_dir {
        write_text(&dir.join("sensitivity_analysis.txt"), &text)?;
        write_text(&dir.join("sensitivity_analysis.json"), &to_json(&an)?)?;
        for s in an.steps.iter().skip(1) {
            if let Some(t) = s.threshold {
                write_text(
                    &dir.join(format!("quant_config_{t}.json")),
                    &to_json(&s.quant_config)?,
                )?;
            }
        }
    }
    if let (Some(path), Some(m)) = (&a.output_model, &model) {
        hb_ir::save_model(m, path).map_err(ToolError::input)?;
    }
    if a.json {
        println!("{}", to_json(&an)?);
    } else {
        print!("{text}");
    }
    Ok(())
}
