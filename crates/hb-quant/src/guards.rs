//! Precision guards: node inputs that int8 cannot carry, promoted to int16
//! when the config leaves them at the int8 default.
//!
//! Two patterns exporters emit and int8 destroys:
//! - **integer-valued tensors**: an integer model input (a timestep, a
//!   position, a count) cast to float and reshaped; its values are whole
//!   numbers that may span hundreds (a diffusion timestep in 0..999 has an
//!   int8 step of ~7.9, so the time embedding sees the wrong time);
//! - **periodic arguments**: the input of `Sin` / `Cos` (sinusoidal time or
//!   position embeddings). Its range is usually many periods wide, and an
//!   error of a fraction of 2π in the argument is an error of the whole
//!   output range.
//!
//! The plan promotes such inputs to int16 only where nothing in the config
//! at node, subgraph or op level chose their qtype, the model-wide qtype is
//! int8 (`all_node_type` absent or int8) and the `march` allows int16; each promotion is reported in the log with the
//! config line that undoes it.

use hb_ir::Graph;
use std::collections::HashSet;

/// Why an input was promoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The tensor carries the whole-number values of an integer model input.
    IntegerValued,
    /// The tensor is the argument of a periodic function (`Sin`, `Cos`).
    PeriodicArgument,
}

impl Guard {
    /// The finding key in the log.
    pub fn key(self) -> &'static str {
        match self {
            Guard::IntegerValued => "integer-valued",
            Guard::PeriodicArgument => "periodic-argument",
        }
    }

    /// Why int8 is not enough, for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Guard::IntegerValued => {
                "carries the whole-number values of an integer model input (cast to float); int8 cannot hold them once they pass ±127"
            }
            Guard::PeriodicArgument => {
                "is the argument of a periodic function; an int8 step is a large fraction of its period"
            }
        }
    }
}

/// One promoted node input.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardedInput {
    /// Node index.
    pub node: usize,
    /// Input position.
    pub input: usize,
    /// The tensor read there.
    pub tensor: String,
    /// Why.
    pub guard: Guard,
}

/// Ops whose output values are a selection or rearrangement of input 0's
/// values (so whole numbers stay whole numbers).
const VALUE_PRESERVING: &[&str] = &[
    "Cast",
    "Identity",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Flatten",
    "Transpose",
    "Expand",
    "Tile",
    "Gather",
    "GatherElements",
    "Slice",
    "Neg",
    "Abs",
];

/// The tensors of `g` that hold only whole numbers taken from an integer
/// model input: integer inputs themselves, then the outputs of
/// value-preserving ops (casts, reshapes, gathers, slices, ...) and of
/// `Concat` / `Add` / `Sub` / `Mul` whose data inputs all are such tensors
/// or integer-valued initializers.
pub fn integer_valued_tensors(g: &Graph) -> HashSet<String> {
    let mut set: HashSet<String> = g
        .inputs
        .iter()
        .filter(|v| v.dtype().is_some_and(|d| !d.is_float()))
        .map(|v| v.name.clone())
        .collect();
    if set.is_empty() {
        return set;
    }
    let whole_initializer = |name: &str| {
        g.initializer(name).is_some_and(|t| {
            !t.dtype().is_float()
                || t.to_f32_cow()
                    .is_ok_and(|v| v.iter().all(|x| x.fract() == 0.0))
        })
    };
    for n in &g.nodes {
        let op = n.op_type.as_str();
        let integer = if VALUE_PRESERVING.contains(&op) {
            n.inputs.first().is_some_and(|x| set.contains(x))
        } else if matches!(op, "Concat" | "Add" | "Sub" | "Mul") {
            n.inputs.iter().any(|x| set.contains(x))
                && n.inputs
                    .iter()
                    .all(|x| set.contains(x) || whole_initializer(x))
        } else {
            false
        };
        if integer {
            set.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    set
}

/// Whether input `k` of an `op_type` node is the argument of a periodic
/// function.
pub fn is_periodic_argument(op_type: &str, k: usize) -> bool {
    k == 0 && matches!(op_type, "Sin" | "Cos")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InputQ, NodeConfig, QuantConfig};
    use crate::plan::build_plan;
    use crate::qtype::QType;
    use hb_ir::{Node, ValueInfo};
    use hb_tensor::{DType, Tensor};
    use std::sync::Arc;

    /// timestep (int64) → Cast → Unsqueeze → Div(freqs) → Sin, plus a
    /// float input x → Relu.
    fn time_embedding() -> Graph {
        let mut g = Graph {
            inputs: vec![
                ValueInfo::tensor("t", DType::I64, &[1]),
                ValueInfo::tensor("x", DType::F32, &[1, 4]),
            ],
            ..Graph::default()
        };
        g.initializers.insert(
            "axes".into(),
            Arc::new(Tensor::from_vec(&[1], vec![1i64]).expect("axes")),
        );
        g.initializers
            .insert("freqs".into(), Arc::new(Tensor::scalar(3.0f32)));
        g.initializers
            .insert("two".into(), Arc::new(Tensor::scalar(2.0f32)));
        g.initializers
            .insert("half".into(), Arc::new(Tensor::scalar(0.5f32)));
        let mut cast = Node::new("cast", "Cast", &["t"], &["tf"]);
        cast.set_attr("to", hb_ir::Attr::Int(1));
        g.nodes = vec![
            cast,
            Node::new("unsq", "Unsqueeze", &["tf", "axes"], &["tu"]),
            Node::new("twice", "Mul", &["tu", "two"], &["t2"]),
            Node::new("halved", "Mul", &["tu", "half"], &["th"]),
            Node::new("div", "Div", &["t2", "freqs"], &["arg"]),
            Node::new("sin", "Sin", &["arg"], &["emb"]),
            Node::new("relu", "Relu", &["x"], &["y"]),
            Node::new("add", "Add", &["th", "emb"], &["z"]),
        ];
        g
    }

    #[test]
    fn integer_values_follow_casts_reshapes_and_whole_constants() {
        let set = integer_valued_tensors(&time_embedding());
        for t in ["t", "tf", "tu", "t2"] {
            assert!(set.contains(t), "{t}");
        }
        // x 0.5 and a division leave the whole numbers.
        for t in ["th", "arg", "emb", "x", "y", "z"] {
            assert!(!set.contains(t), "{t}");
        }
    }

    fn guarded(qc: &QuantConfig) -> Vec<(String, usize, Guard)> {
        let g = time_embedding();
        let plan = build_plan(&g, qc).expect("plan");
        plan.guards
            .iter()
            .map(|gi| (g.nodes[gi.node].name.clone(), gi.input, gi.guard))
            .collect()
    }

    #[test]
    fn default_int8_inputs_int8_cannot_carry_become_int16() {
        let got = guarded(&QuantConfig::default());
        assert!(
            got.contains(&("div".into(), 0, Guard::IntegerValued)),
            "{got:?}"
        );
        assert!(
            got.contains(&("sin".into(), 0, Guard::PeriodicArgument)),
            "{got:?}"
        );
        assert!(
            got.contains(&("halved".into(), 0, Guard::IntegerValued)),
            "{got:?}"
        );
        // The Add reads th (not whole) and emb: nothing to guard.
        assert!(
            !got.iter().any(|(n, _, _)| n == "add" || n == "relu"),
            "{got:?}"
        );
        let plan = build_plan(&time_embedding(), &QuantConfig::default()).unwrap();
        let sin = plan.points.iter().find(|p| p.tensor == "arg").unwrap();
        assert_eq!(sin.qtype, QType::Int16);
        let relu = plan.points.iter().find(|p| p.tensor == "x").unwrap();
        assert_eq!(relu.qtype, QType::Int8);
    }

    #[test]
    fn explicit_config_and_int8_only_marches_turn_the_guards_off() {
        let mut qc = QuantConfig::default();
        qc.node.insert(
            "sin".into(),
            NodeConfig {
                inputs: [(0, InputQ::Type(QType::Int8))].into_iter().collect(),
                ..NodeConfig::default()
            },
        );
        qc.op.insert(
            "Div".into(),
            NodeConfig {
                qtype: Some(QType::Int8),
                ..NodeConfig::default()
            },
        );
        let got = guarded(&qc);
        assert!(
            !got.iter().any(|(n, _, _)| n == "sin" || n == "div"),
            "{got:?}"
        );
        assert!(got.iter().any(|(n, _, _)| n == "halved"), "{got:?}");
        let x3 = QuantConfig {
            int16_forbidden: true,
            ..QuantConfig::default()
        };
        assert!(guarded(&x3).is_empty());
        let mut all16 = QuantConfig::default();
        all16.model.all_node_type = Some(QType::Int16);
        assert!(guarded(&all16).is_empty());
    }
}
