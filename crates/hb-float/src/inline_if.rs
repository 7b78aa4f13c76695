//! Inlining of `If` nodes whose condition is a constant.
//!
//! Exporters emit `If` for Python branches on shapes (`if x.shape[0] == 1`,
//! scripted modules, paddle's `cond`); with fixed input shapes the
//! condition folds to a constant (see [`crate::fold`]) and the node is just
//! its taken branch. The branch's nodes move into the main graph in the
//! `If`'s place, with every value and initializer defined inside the branch
//! renamed under the node's name (outer-scope references keep their names);
//! the branch outputs take the `If`'s output names (an `Identity` where a
//! branch returns an outer value). Branches whose nodes carry subgraphs of
//! their own are left alone.

use hb_ir::{Attr, Graph, Model, Node};
use hb_tensor::Tensor;
use std::collections::{HashMap, HashSet};

/// Inlines every `If` with a constant single-element condition; returns
/// how many were inlined.
pub fn inline_constant_ifs(model: &mut Model) -> usize {
    let g = &mut model.graph;
    let mut inlined = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let n = &g.nodes[k];
        if n.op_type != "If" || !n.domain.is_empty() {
            k += 1;
            continue;
        }
        let Some(cond) = n
            .inputs
            .first()
            .and_then(|c| g.initializers.get(c))
            .and_then(|t| truth(t))
        else {
            k += 1;
            continue;
        };
        let key = if cond { "then_branch" } else { "else_branch" };
        let Some(Attr::Graph(branch)) = n.attrs.get(key) else {
            k += 1;
            continue;
        };
        let branch = (**branch).clone();
        let node = g.nodes[k].clone();
        match expand(g, &node, &branch) {
            Some(nodes) => {
                let added = nodes.len();
                g.nodes.splice(k..=k, nodes);
                k += added;
                inlined += 1;
            }
            None => k += 1,
        }
    }
    if inlined > 0 {
        g.prune_unused_initializers();
    }
    inlined
}

/// The truth value of a one-element tensor (`None` otherwise).
fn truth(t: &Tensor) -> Option<bool> {
    if t.len() != 1 {
        return None;
    }
    match t {
        Tensor::Bool(a) => a.iter().next().copied(),
        other => other.to_f64_vec().ok()?.first().map(|v| *v != 0.0),
    }
}

/// The nodes replacing `node` by `branch` (its initializers are added to
/// `g`), or `None` when the branch cannot be inlined.
fn expand(g: &mut Graph, node: &Node, branch: &Graph) -> Option<Vec<Node>> {
    if branch.outputs.len() != node.outputs.len()
        || branch.nodes.iter().any(|b| {
            b.attrs
                .values()
                .any(|a| matches!(a, Attr::Graph(_) | Attr::Graphs(_)))
        })
    {
        return None;
    }
    // As `Graph::fresh_name`, with a set: the branch's names are taken one
    // after another before its nodes join the graph.
    let mut taken: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().cloned().chain([n.name.clone()]))
        .chain(g.initializers.keys().cloned())
        .chain(g.inputs.iter().map(|v| v.name.clone()))
        .collect();
    let mut fresh = |name: &str| -> String {
        let base = format!("{}/{name}", node.name);
        let mut candidate = base.clone();
        let mut i = 1;
        while taken.contains(&candidate) {
            candidate = format!("{base}_{i}");
            i += 1;
        }
        taken.insert(candidate.clone());
        candidate
    };
    // Branch outputs produced inside the branch take the If's output names.
    let produced: HashSet<&str> = branch
        .nodes
        .iter()
        .flat_map(|b| b.outputs.iter().map(String::as_str))
        .collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    for (bo, io) in branch.outputs.iter().zip(&node.outputs) {
        if produced.contains(bo.name.as_str()) && !rename.contains_key(&bo.name) {
            rename.insert(bo.name.clone(), io.clone());
        }
    }
    for b in &branch.nodes {
        for o in b.outputs.iter().filter(|o| !o.is_empty()) {
            if !rename.contains_key(o) {
                rename.insert(o.clone(), fresh(o));
            }
        }
    }
    for (name, t) in &branch.initializers {
        let new = fresh(name);
        g.initializers.insert(new.clone(), t.clone());
        rename.insert(name.clone(), new);
    }
    let map = |v: &String| rename.get(v).cloned().unwrap_or_else(|| v.clone());
    let mut out: Vec<Node> = branch
        .nodes
        .iter()
        .map(|b| Node {
            name: fresh(&b.name),
            inputs: b
                .inputs
                .iter()
                .map(|i| if i.is_empty() { i.clone() } else { map(i) })
                .collect(),
            outputs: b
                .outputs
                .iter()
                .map(|o| if o.is_empty() { o.clone() } else { map(o) })
                .collect(),
            ..b.clone()
        })
        .collect();
    // Outputs that are outer values, initializers or repeated: an Identity.
    for (bo, io) in branch.outputs.iter().zip(&node.outputs) {
        if io.is_empty() || rename.get(&bo.name) == Some(io) {
            continue;
        }
        let src = map(&bo.name);
        out.push(Node::new(&fresh("Identity"), "Identity", &[&src], &[io]));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::fold_static_shapes;
    use crate::{Registry, Session};
    use hb_ir::ValueInfo;
    use hb_tensor::DType;
    use std::sync::Arc;

    /// y = If(Shape(x)[0] == `rows`, then: x · 3 (a branch initializer),
    /// else: x itself (an outer value)): the shape branch a scripted
    /// module exports.
    fn model(rows: i64) -> Model {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[2, 3]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[2, 3]));
        g.initializers
            .insert("zero".into(), Arc::new(Tensor::scalar(0i64)));
        g.initializers
            .insert("rows".into(), Arc::new(Tensor::scalar(rows)));
        g.nodes.push(Node::new("shape", "Shape", &["x"], &["s"]));
        g.nodes
            .push(Node::new("n", "Gather", &["s", "zero"], &["n0"]));
        g.nodes
            .push(Node::new("eq", "Equal", &["n0", "rows"], &["cond"]));
        let mut then_g = Graph::default();
        then_g
            .initializers
            .insert("c".into(), Arc::new(Tensor::scalar(3.0f32)));
        then_g
            .nodes
            .push(Node::new("mul", "Mul", &["x", "c"], &["t"]));
        then_g
            .outputs
            .push(ValueInfo::tensor("t", DType::F32, &[2, 3]));
        let mut else_g = Graph::default();
        else_g
            .outputs
            .push(ValueInfo::tensor("x", DType::F32, &[2, 3]));
        let mut iff = Node::new("if", "If", &["cond"], &["y"]);
        iff.set_attr("then_branch", Attr::Graph(Box::new(then_g)));
        iff.set_attr("else_branch", Attr::Graph(Box::new(else_g)));
        g.nodes.push(iff);
        crate::kernels::testutil::model_of(g, 17)
    }

    fn run(m: &Model) -> Vec<f32> {
        let x = Tensor::from_f32(&[2, 3], vec![1.0, -2.0, 3.0, 0.5, 0.0, -1.5]).unwrap();
        let inputs = HashMap::from([("x".to_string(), x)]);
        let y = Session::new(m).unwrap().run(&inputs).unwrap().remove(0).1;
        y.to_f32().unwrap().iter().copied().collect()
    }

    #[test]
    fn a_static_shape_branch_becomes_its_taken_branch() {
        let mut m = model(2);
        // The condition is not constant yet: nothing to inline.
        assert_eq!(inline_constant_ifs(&mut m), 0);
        fold_static_shapes(&mut m, &Registry::standard()).unwrap();
        assert_eq!(inline_constant_ifs(&mut m), 1);
        let ops: Vec<&str> = m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Mul"]);
        assert_eq!(m.graph.nodes[0].inputs, ["x", "if/c"]);
        assert_eq!(run(&m), [3.0, -6.0, 9.0, 1.5, 0.0, -4.5]);
        // The else branch returns the outer value: an Identity.
        let mut e = model(5);
        fold_static_shapes(&mut e, &Registry::standard()).unwrap();
        assert_eq!(inline_constant_ifs(&mut e), 1);
        let ops: Vec<&str> = e.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Identity"]);
        assert_eq!(run(&e), [1.0, -2.0, 3.0, 0.5, 0.0, -1.5]);
    }

    #[test]
    fn branches_with_subgraphs_stay() {
        let mut m = model(2);
        fold_static_shapes(&mut m, &Registry::standard()).unwrap();
        let inner = m.graph.nodes[0].clone();
        if let Some(Attr::Graph(b)) = m.graph.nodes[0].attrs.get_mut("then_branch") {
            b.nodes.push(inner);
        }
        assert_eq!(inline_constant_ifs(&mut m), 0);
        assert_eq!(m.graph.nodes[0].op_type, "If");
    }
}
