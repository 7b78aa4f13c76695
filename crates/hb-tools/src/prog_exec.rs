//! `hb-model-exec` for `.bc` / `.hbm` programs: model-info, infer, perf.

use crate::cli::{ToolError, ToolResult};
use crate::exec::PerfReport;
use crate::inputs::read_inputs;
use crate::names::file_safe;
use crate::prog::Loaded;
use hb_bpu::engine::Workspace;
use hb_bpu::program::{pb, Program};
use hb_tensor::{io, Tensor};
use std::path::Path;

/// The layout of a tensor as model_info prints it.
fn layout(shape: &[u64]) -> &'static str {
    if shape.len() == 4 {
        "NCHW"
    } else {
        "NONE"
    }
}

/// One tensor's description: name, shape, dtype, layout, quant type,
/// scales, axis.
pub fn describe_tensor(p: &Program, id: u32) -> serde_json::Value {
    let t = &p.tensors[id as usize];
    let dt = hb_tensor::DType::from_onnx_code(t.dtype)
        .map(|d| d.to_string())
        .unwrap_or_else(|| t.dtype.to_string());
    let (kind, scales, axis) = match &t.quant {
        Some(q) if q.kind == pb::QuantType::QuantScale as i32 => {
            let s: Vec<f64> = if q.hp_scales.is_empty() {
                q.scales.iter().map(|&v| f64::from(v)).collect()
            } else {
                q.hp_scales.clone()
            };
            ("SCALE", s, q.axis)
        }
        _ => ("NONE", Vec::new(), 0),
    };
    serde_json::json!({
        "name": t.name, "shape": t.shape, "dtype": dt, "layout": layout(&t.shape),
        "quant_type": kind, "scales": scales, "quantize_axis": axis,
    })
}

/// `model-info`.
pub fn model_info(path: &Path) -> ToolResult<()> {
    let p = crate::prog::load_program(path)?;
    let kind = if p.kind() == pb::ProgramKind::Hbm {
        "hbm"
    } else {
        "bc"
    };
    println!(
        "model: {} ({kind}, format version {})",
        path.display(),
        p.version
    );
    for (what, ids) in [("input", &p.inputs), ("output", &p.outputs)] {
        for (k, &id) in ids.iter().enumerate() {
            let d = describe_tensor(&p, id);
            let scales: Vec<String> = d["scales"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| format!("{}", v.as_f64().unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "{what}[{k}]: name: {}  shape: {}  dtype: {}  layout: {}  quant type: {}{}",
                d["name"].as_str().unwrap_or(""),
                d["shape"],
                d["dtype"].as_str().unwrap_or(""),
                d["layout"].as_str().unwrap_or(""),
                d["quant_type"].as_str().unwrap_or(""),
                if scales.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  scales: [{}]  quantize axis: {}",
                        shorten(&scales),
                        d["quantize_axis"]
                    )
                }
            );
        }
    }
    Ok(())
}

fn shorten(v: &[String]) -> String {
    if v.len() <= 8 {
        v.join(", ")
    } else {
        format!("{}, … ({} values)", v[..8].join(", "), v.len())
    }
}

/// `infer`: runs every sample, writes outputs (and with `dump`, every
/// tensor) as `.npy`.
pub fn infer(
    path: &Path,
    spec: &str,
    out: &Path,
    dump: bool,
    json: bool,
    pool: &rayon::ThreadPool,
) -> ToolResult<()> {
    let l = Loaded::open(path, false)?;
    let samples = read_inputs(&l.input_graph(), spec)?;
    let names = l.output_names();
    let mut ws = Workspace::new();
    let mut results: Vec<(Vec<Tensor>, crate::prog::Named)> = Vec::new();
    pool.install(|| -> ToolResult<()> {
        for s in &samples {
            let ins = l.inputs_of(s)?;
            results.push(if dump {
                l.run_all(&ins, &mut ws)?
            } else {
                (l.run(&ins, &mut ws)?, Vec::new())
            });
        }
        Ok(())
    })?;
    std::fs::create_dir_all(out)
        .map_err(|e| ToolError::input(format!("{}: {e}", out.display())))?;
    let mut files = 0;
    for (k, (outs, all)) in results.iter().enumerate() {
        let suffix = if results.len() > 1 {
            format!("_{k}")
        } else {
            String::new()
        };
        for (n, t) in names.iter().zip(outs) {
            io::write_npy(&out.join(format!("{}{suffix}.npy", file_safe(n))), t)?;
            files += 1;
        }
        if dump {
            let dir = out.join("intermediate");
            std::fs::create_dir_all(&dir)
                .map_err(|e| ToolError::input(format!("{}: {e}", dir.display())))?;
            for (n, t) in all {
                io::write_npy(&dir.join(format!("{}{suffix}.npy", file_safe(n))), t)?;
                files += 1;
            }
        }
    }
    if json {
        let outputs: Vec<serde_json::Value> = names.iter().zip(&results[0].0).map(|(n, t)| serde_json::json!({"name": n, "dtype": t.dtype().to_string(), "shape": t.shape()})).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"samples": results.len(), "outputs": outputs, "files_written": files, "output_dir": out})).map_err(ToolError::input)?);
    } else {
        for (n, t) in names.iter().zip(&results[0].0) {
            println!("output {n}: {}", t.describe());
        }
        println!(
            "{} sample(s), {files} file(s) written to {}",
            results.len(),
            out.display()
        );
    }
    Ok(())
}

/// Synthetic inputs: zeros of each input's type (for perf without files).
fn synthetic(l: &Loaded) -> ToolResult<Vec<Tensor>> {
    l.program
        .inputs
        .iter()
        .map(|&i| {
            let t = &l.program.tensors[i as usize];
            let dt = hb_bpu::program::dtype_of(t).map_err(ToolError::input)?;
            Ok(Tensor::zeros(dt, &hb_bpu::program::shape_of(t)))
        })
        .collect()
}

/// `perf`: one warm-up run, then `frames` timed runs. With `profile`, the
/// engine also times every op and writes a CSV
/// (`index,node,op,path,total_ms,mean_ms,share`, slowest first) there and
/// the per-op-type summary is returned with the report.
pub fn perf(
    path: &Path,
    spec: Option<&str>,
    frames: usize,
    pool: &rayon::ThreadPool,
    profile: Option<&Path>,
) -> ToolResult<(PerfReport, Option<String>)> {
    let l = Loaded::open(path, false)?;
    let ins = match spec {
        Some(s) => {
            let samples = read_inputs(&l.input_graph(), s)?;
            l.inputs_of(
                samples
                    .first()
                    .ok_or_else(|| ToolError::input("no input sample"))?,
            )?
        }
        None => synthetic(&l)?,
    };
    let frames = frames.max(1);
    let mut ws = Workspace::new();
    let mut summary = None;
    if let Some(csv) = profile {
        pool.install(|| -> ToolResult<()> {
            l.run(&ins, &mut ws)?;
            ws.profile = Some(Vec::new());
            crate::exec::with_busy_helpers(|| -> ToolResult<()> {
                for _ in 0..frames {
                    l.run(&ins, &mut ws)?;
                }
                Ok(())
            })
        })?;
        summary = Some(write_profile(
            ws.profile.take().unwrap_or_default(),
            frames,
            csv,
        )?);
    }
    let report = pool.install(|| {
        crate::exec::time_frames(frames, || {
            l.run(&ins, &mut ws)?;
            Ok(())
        })
    })?;
    Ok((report, summary))
}

/// Writes the engine's per-op profile as CSV and returns a per-op-type
/// summary.
fn write_profile(
    ops: Vec<hb_bpu::engine::OpTime>,
    frames: usize,
    csv: &Path,
) -> ToolResult<String> {
    let total: f64 = ops.iter().map(|o| o.seconds).sum::<f64>().max(1e-12);
    let mut rows: Vec<(usize, &hb_bpu::engine::OpTime)> = ops.iter().enumerate().collect();
    rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    let mut text = String::from("index,node,op,path,total_ms,mean_ms,share\n");
    for (i, o) in &rows {
        text += &format!(
            "{i},{},{},{},{:.4},{:.4},{:.4}\n",
            o.name,
            o.op_type,
            o.path,
            o.seconds * 1e3,
            o.seconds * 1e3 / o.runs.max(1) as f64,
            o.seconds / total
        );
    }
    io::write_atomic(csv, |w| {
        w.write_all(text.as_bytes())
            .map_err(|e| ToolError::input(format!("{}: {e}", csv.display())))
    })?;
    let mut by: std::collections::BTreeMap<(String, &str), f64> = Default::default();
    for o in &ops {
        *by.entry((o.op_type.clone(), o.path)).or_insert(0.0) += o.seconds;
    }
    let mut by: Vec<_> = by.into_iter().collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut summary = format!(
        "time per op type (op profile written to {}):",
        csv.display()
    );
    for ((op, path), t) in by {
        summary += &format!(
            "\n  {op:<24} {path:<9} {:>9.4} ms/frame {:>5.1}%",
            t * 1e3 / frames.max(1) as f64,
            100.0 * t / total
        );
    }
    Ok(summary)
}
