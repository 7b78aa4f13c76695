//! Identity and inference-mode Dropout removal.

use crate::graph::Graph;

/// Removes `Identity` nodes and `Dropout` nodes whose mask output is unused,
/// rewiring readers to the node's input. A node whose output is a graph
/// output is removed by renaming its input's producer output instead, when
/// that input is a plain intermediate value; otherwise it is kept.
pub fn remove_identities(g: &mut Graph) -> usize {
    let mut removed = 0;
    let mut k = 0;
    while k < g.nodes.len() {
        let n = &g.nodes[k];
        let dropout_ok = n.op_type == "Dropout"
            && n.outputs
                .iter()
                .skip(1)
                .all(|o| o.is_empty() || g.consumers(o).is_empty() && !g.is_output(o))
            && !(n.attrs.contains_key("training_mode") || n.input(2).is_some());
        let removable = n.domain.is_empty() && (n.op_type == "Identity" || dropout_ok);
        let (Some(input), Some(output)) =
            (n.input(0).map(str::to_string), n.outputs.first().cloned())
        else {
            k += 1;
            continue;
        };
        if !removable {
            k += 1;
            continue;
        }
        if g.is_output(&output) {
            let producer = g.producer(&input);
            let plain =
                producer.is_some() && !g.is_output(&input) && g.consumers(&input).len() == 1;
            if !plain {
                k += 1;
                continue;
            }
            let p = producer.expect("checked");
            for o in &mut g.nodes[p].outputs {
                if *o == input {
                    *o = output.clone();
                }
            }
            g.nodes.remove(k);
        } else {
            g.nodes.remove(k);
            g.replace_uses(&output, &input);
        }
        removed += 1;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Node, ValueInfo};
    use hb_tensor::DType;

    #[test]
    fn removes_inner_and_output_identities() {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1]));
        g.nodes.push(Node::new("a", "Relu", &["x"], &["r"]));
        g.nodes.push(Node::new("i", "Identity", &["r"], &["r2"]));
        g.nodes.push(Node::new("b", "Relu", &["r2"], &["s"]));
        g.nodes.push(Node::new("o", "Identity", &["s"], &["y"]));
        assert_eq!(remove_identities(&mut g), 2);
        assert_eq!(g.nodes.len(), 2);
        assert_eq!(g.nodes[1].inputs, vec!["r"]);
        assert_eq!(g.nodes[1].outputs, vec!["y"]);
    }

    #[test]
    fn keeps_identity_from_input_to_output() {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[1]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[1]));
        g.nodes.push(Node::new("i", "Identity", &["x"], &["y"]));
        assert_eq!(remove_identities(&mut g), 0);
    }
}
