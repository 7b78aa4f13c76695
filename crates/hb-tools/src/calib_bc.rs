//! The `.bc` artefact of `hb-calib`: the calibrated model lowered to the
//! integer program (`<prefix>_quantized_model.bc`), written atomically after
//! the other artefacts.

use crate::cli::{ToolError, ToolResult};
use hb_lower::lower::{lower_model, LowerOptions, Lowered};
use hb_quant::pipeline::CalibOutcome;
use hb_quant::HbConfig;
use std::collections::HashMap;
use std::path::Path;

/// Lowers the calibration's model to the integer program (nothing
/// written yet), with the value shapes the calibration already knows.
pub fn lower_quantized(cfg: &HbConfig, outcome: &CalibOutcome) -> ToolResult<Lowered> {
    let method = outcome.chosen.to_string();
    let qtypes = crate::calib::qtype_counts(outcome);
    let prefix = &cfg.model.output_model_file_prefix;
    let mut params = vec![
        ("march".to_string(), cfg.model.march.name().to_string()),
        ("calibration_method".to_string(), method),
        ("config".to_string(), cfg.path.display().to_string()),
    ];
    if let Some(o) = &cfg.compiler.optimize_level {
        params.push(("optimize_level".into(), o.clone()));
    }
    if !cfg.model.remove_node_type.is_empty() {
        params.push((
            "remove_node_type".into(),
            cfg.model.remove_node_type.join(";"),
        ));
    }
    for (q, n) in &qtypes {
        params.push((format!("calibration_nodes.{q}"), n.to_string()));
    }
    let opts = LowerOptions {
        source: format!("{prefix}_calibrated_model.onnx"),
        march: cfg.model.march.name().to_string(),
        params,
        onnx_input_order: Vec::new(),
        value_infos: outcome.value_infos.clone(),
    };
    lower_model(&outcome.calibrated, &opts).map_err(|e| {
        ToolError::input(format!(
            "{}: lowering to .bc: {e}",
            cfg.model.onnx_model.display()
        ))
    })
}

/// The lowering's CPU placements: node name → reason.
pub fn cpu_placements(lowered: &Lowered) -> HashMap<String, String> {
    lowered
        .notes
        .iter()
        .filter(|n| n.cpu)
        .map(|n| (n.node.clone(), n.reason.clone()))
        .collect()
}

/// Writes `<work>/<prefix>_quantized_model.bc` (the folder exists);
/// returns its path.
pub fn write_quantized(cfg: &HbConfig, lowered: &Lowered, work: &Path) -> ToolResult<String> {
    let prefix = &cfg.model.output_model_file_prefix;
    let path = work.join(format!("{prefix}_quantized_model.bc"));
    hb_bpu::program::save(&lowered.program, &path).map_err(ToolError::input)?;
    Ok(path.display().to_string())
}
