//! `hb-info CALIBRATED -c inputs`: how far the calibrated model's outputs
//! (its switches as they are: ON nodes fake-quantize, OFF nodes stay float,
//! as `hb-debugger edit` left them) are from float (every switch OFF), and
//! a summary of its calibration nodes.

use crate::cli::ToolResult;
use crate::inputs::Sample;
use hb_float::Session;
use hb_ir::Model;
use hb_quant::calibrated::{calibration_infos, set_switch, CalibrationInfo};
use hb_quant::report::{render_outputs, table, OutputRow};
use hb_tensor::metrics;
use serde::Serialize;
use std::collections::BTreeMap;

/// Per-output similarity plus the unique-value counts that reveal collapse.
#[derive(Debug, Clone, Serialize)]
pub struct OutputComparison {
    /// Cosine, L1, L2, Chebyshev (means over samples).
    #[serde(flatten)]
    pub row: OutputRow,
    /// Unique values of the float output (mean over samples).
    pub float_unique: f64,
    /// Unique values of the calibrated output (mean over samples).
    pub calibrated_unique: f64,
}

/// The calibration summary of a calibrated model.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSummary {
    /// Calibration nodes per `tensor_type qtype`.
    pub qtypes: BTreeMap<String, usize>,
    /// Methods used by feature nodes, with counts.
    pub methods: BTreeMap<String, usize>,
    /// Nodes with switch OFF.
    pub switched_off: usize,
    /// Every calibration node.
    pub nodes: Vec<CalibrationInfo>,
}

/// Summarises the calibration nodes of `model`.
pub fn summarize_calibration(model: &Model) -> CalibrationSummary {
    let nodes = calibration_infos(model);
    let mut qtypes = BTreeMap::new();
    let mut methods = BTreeMap::new();
    for n in &nodes {
        let q = n.qtype.map_or("?".to_string(), |q| q.to_string());
        *qtypes.entry(format!("{} {q}", n.tensor_type)).or_insert(0) += 1;
        if n.tensor_type == "feature" && !n.method.is_empty() {
            *methods.entry(n.method.clone()).or_insert(0) += 1;
        }
    }
    CalibrationSummary {
        qtypes,
        methods,
        switched_off: nodes.iter().filter(|n| !n.on).count(),
        nodes,
    }
}

/// Runs `model` as it is (each node's switch) and with every switch OFF
/// (float) on every sample and compares outputs.
pub fn compare(model: &Model, samples: &[Sample]) -> ToolResult<Vec<OutputComparison>> {
    let mut off = model.clone();
    set_switch(&mut off, false);
    let (s_on, s_off) = (Session::new(model)?, Session::new(&off)?);
    let mut rows: Vec<OutputComparison> = Vec::new();
    for s in samples {
        let (a, b) = (s_off.run(s)?, s_on.run(s)?);
        for (k, ((name, x), (_, y))) in a.iter().zip(&b).enumerate() {
            let (Ok(x), Ok(y)) = (x.to_f32(), y.to_f32()) else {
                continue;
            };
            let x: Vec<f32> = x.iter().copied().collect();
            let y: Vec<f32> = y.iter().copied().collect();
            if rows.len() <= k {
                rows.push(OutputComparison {
                    row: OutputRow::new(name),
                    float_unique: 0.0,
                    calibrated_unique: 0.0,
                });
            }
            let r = &mut rows[k];
            r.row.cosine += metrics::cosine(&x, &y);
            r.row.l1 += metrics::l1_distance(&x, &y);
            r.row.l2 += metrics::l2_distance(&x, &y);
            r.row.chebyshev += metrics::chebyshev(&x, &y);
            r.float_unique += metrics::unique_count(&x) as f64;
            r.calibrated_unique += metrics::unique_count(&y) as f64;
        }
    }
    let n = samples.len().max(1) as f64;
    for r in rows.iter_mut() {
        r.row.cosine /= n;
        r.row.l1 /= n;
        r.row.l2 /= n;
        r.row.chebyshev /= n;
        r.row.metric = r.row.cosine;
        r.float_unique /= n;
        r.calibrated_unique /= n;
    }
    Ok(rows)
}

/// Text for `hb-info -c`.
pub fn render(
    cmp: &[OutputComparison],
    cal: &CalibrationSummary,
    verbose: bool,
    samples: usize,
) -> String {
    let mut s = format!("\nCalibrated vs float on {samples} sample(s):\n");
    let rows: Vec<OutputRow> = cmp.iter().map(|c| c.row.clone()).collect();
    s.push_str(&render_outputs(&rows));
    let uniq: Vec<Vec<String>> = cmp
        .iter()
        .map(|c| {
            vec![
                c.row.output.clone(),
                format!("{:.1}", c.float_unique),
                format!("{:.1}", c.calibrated_unique),
            ]
        })
        .collect();
    s.push('\n');
    s.push_str(&table(
        &["Output", "Unique (float)", "Unique (calibrated)"],
        &uniq,
    ));
    s.push_str(&render_calibration(cal, verbose));
    s
}

/// Text of the calibration summary.
pub fn render_calibration(cal: &CalibrationSummary, verbose: bool) -> String {
    let mut s = format!(
        "\nCalibration nodes: {}{}\n",
        cal.qtypes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        if cal.switched_off > 0 {
            format!(" ({} switched OFF)", cal.switched_off)
        } else {
            String::new()
        }
    );
    if !cal.methods.is_empty() {
        s.push_str(&format!(
            "Methods: {}\n",
            cal.methods
                .iter()
                .map(|(k, v)| format!("{k} ({v})"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if verbose {
        let rows: Vec<Vec<String>> = cal
            .nodes
            .iter()
            .map(|n| {
                let th = if n.thresholds.len() == 1 {
                    format!("{:.6}", n.thresholds[0])
                } else if n.asymmetric && n.thresholds.len() == 2 {
                    format!("[{:.6}, {:.6}]", n.thresholds[0], n.thresholds[1])
                } else {
                    format!(
                        "{} values, max {:.6}",
                        n.thresholds.len(),
                        n.thresholds.iter().fold(0f32, |m, v| m.max(v.abs()))
                    )
                };
                vec![
                    n.name.clone(),
                    n.tensor_type.clone(),
                    n.qtype.map_or("?".into(), |q| q.to_string()),
                    if n.on { "ON".into() } else { "OFF".into() },
                    th,
                    n.method.clone(),
                ]
            })
            .collect();
        s.push('\n');
        s.push_str(&table(
            &[
                "Calibration node",
                "Type",
                "QType",
                "Switch",
                "Threshold",
                "Method",
            ],
            &rows,
        ));
    }
    s
}
