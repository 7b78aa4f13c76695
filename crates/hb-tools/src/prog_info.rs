//! `hb-info` for `.bc` / `.hbm`: inputs/outputs in deployed order with
//! quant params, per-op placement and qtype, subgraphs, memory, conversion
//! parameters.

use crate::cli::ToolResult;
use crate::prog::load_program;
use crate::prog_exec::describe_tensor;
use hb_bpu::program::{memplan, pb};
use std::path::Path;

/// The description `hb-info --json` prints for a program.
pub fn summarize(path: &Path) -> ToolResult<serde_json::Value> {
    let p = load_program(path)?;
    let kind = if p.kind() == pb::ProgramKind::Hbm {
        "hbm"
    } else {
        "bc"
    };
    let conv = p.conversion.clone().unwrap_or_default();
    let inputs: Vec<_> = p.inputs.iter().map(|&i| describe_tensor(&p, i)).collect();
    let outputs: Vec<_> = p.outputs.iter().map(|&i| describe_tensor(&p, i)).collect();
    let deployed: Vec<String> = p
        .inputs
        .iter()
        .map(|&i| p.tensors[i as usize].name.clone())
        .collect();
    let order_differs = !conv.onnx_input_order.is_empty()
        && conv
            .onnx_input_order
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            != deployed
                .iter()
                .map(|n| n.split(':').next().unwrap_or(n))
                .collect::<Vec<_>>();
    let ops: Vec<_> = p
        .ops
        .iter()
        .map(|o| {
            serde_json::json!({
                "name": o.name, "op_type": o.op_type,
                "placement": if o.placement == pb::Placement::Cpu as i32 { "CPU" } else { "BPU" },
                "qtype": o.qtype, "fused": o.fused_from,
            })
        })
        .collect();
    let plan = p
        .hbm
        .as_ref()
        .and_then(|h| h.memory.clone())
        .unwrap_or_else(|| memplan::plan(&p));
    let bpu = p
        .ops
        .iter()
        .filter(|o| o.placement == pb::Placement::Bpu as i32)
        .count();
    let subgraphs = match &p.hbm {
        Some(h) => h.subgraphs.len(),
        None => {
            let mut n = 0;
            let mut last = -1;
            for o in &p.ops {
                if o.placement != last {
                    n += 1;
                    last = o.placement;
                }
            }
            n
        }
    };
    Ok(serde_json::json!({
        "model": path.display().to_string(),
        "kind": kind,
        "format_version": p.version,
        "tool": format!("{} {}", conv.tool, conv.tool_version),
        "source_model": conv.source_model,
        "march": conv.march,
        "conversion_parameters": conv.params.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect::<Vec<_>>(),
        "onnx_input_order": conv.onnx_input_order,
        "input_order_differs_from_onnx": order_differs,
        "inputs": inputs,
        "outputs": outputs,
        "ops": ops,
        "ops_bpu": bpu,
        "ops_cpu": p.ops.len() - bpu,
        "subgraphs": subgraphs,
        "optimize_level": p.hbm.as_ref().map(|h| h.optimize_level.clone()),
        "removed_nodes": p.hbm.as_ref().map(|h| h.removed_nodes.clone()).unwrap_or_default(),
        "packed_ops": p.hbm.as_ref().map_or(0, |h| h.packed.len()),
        "memory": {
            "activation_bytes": plan.total_bytes,
            "activation_bytes_without_reuse": plan.unplanned_bytes,
            "constant_bytes": memplan::constant_bytes(&p),
        },
    }))
}

/// Text rendering of [`summarize`].
pub fn render(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut t =
        format!(
        "model: {} ({} program, format version {})\nproduced by: {}\nsource model: {}\nmarch: {}\n",
        s("model"), s("kind"), v["format_version"], s("tool"), s("source_model"), s("march")
    );
    if let Some(o) = v["optimize_level"].as_str() {
        t += &format!("optimize level: {o}\n");
    }
    let io = |t: &mut String, what: &str| {
        *t += &format!("{what}s (deployed order):\n");
        for d in v[what.to_string() + "s"].as_array().into_iter().flatten() {
            let sc: Vec<String> = d["scales"]
                .as_array()
                .into_iter()
                .flatten()
                .take(4)
                .map(|x| format!("{}", x.as_f64().unwrap_or(0.0)))
                .collect();
            let n = d["scales"].as_array().map_or(0, |a| a.len());
            *t += &format!(
                "  {:<28} {:<8} {:<18} {:<6} {}{}\n",
                d["name"].as_str().unwrap_or(""),
                d["dtype"].as_str().unwrap_or(""),
                d["shape"].to_string(),
                d["quant_type"].as_str().unwrap_or(""),
                if n > 0 {
                    format!(
                        "scales [{}{}]",
                        sc.join(", "),
                        if n > 4 {
                            format!(", … {n} values")
                        } else {
                            String::new()
                        }
                    )
                } else {
                    String::new()
                },
                if n > 1 {
                    format!(" axis {}", d["quantize_axis"])
                } else {
                    String::new()
                },
            );
        }
    };
    io(&mut t, "input");
    if v["input_order_differs_from_onnx"].as_bool() == Some(true) {
        t += &format!(
            "  note: the ONNX model orders its inputs {}\n",
            v["onnx_input_order"]
        );
    }
    io(&mut t, "output");
    t += &format!(
        "ops: {} ({} BPU, {} CPU) in {} subgraph(s)\n",
        v["ops"].as_array().map_or(0, |a| a.len()),
        v["ops_bpu"],
        v["ops_cpu"],
        v["subgraphs"]
    );
    for o in v["ops"].as_array().into_iter().flatten() {
        let fused: Vec<&str> = o["fused"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        t += &format!(
            "  {:<4} {:<8} {:<20} {}{}\n",
            o["placement"].as_str().unwrap_or(""),
            o["qtype"].as_str().unwrap_or(""),
            o["op_type"].as_str().unwrap_or(""),
            o["name"].as_str().unwrap_or(""),
            if fused.is_empty() {
                String::new()
            } else {
                format!("  (+ {})", fused.join(", "))
            }
        );
    }
    let m = &v["memory"];
    t += &format!(
        "memory: activations {} B with buffer reuse ({} B without), constants {} B\n",
        m["activation_bytes"], m["activation_bytes_without_reuse"], m["constant_bytes"]
    );
    if let Some(r) = v["removed_nodes"].as_array().filter(|a| !a.is_empty()) {
        t += &format!(
            "removed boundary nodes: {}\n",
            r.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    t += "conversion parameters:\n";
    for kv in v["conversion_parameters"].as_array().into_iter().flatten() {
        t += &format!(
            "  {}: {}\n",
            kv[0].as_str().unwrap_or(""),
            kv[1].as_str().unwrap_or("")
        );
    }
    t
}

/// Prints the description (text or JSON).
pub fn print(path: &Path, json: bool) -> ToolResult<()> {
    let v = summarize(path)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(crate::cli::ToolError::input)?
        );
    } else {
        print!("{}", render(&v));
    }
    Ok(())
}
