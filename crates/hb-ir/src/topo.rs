//! Topological ordering of a graph's nodes.

use crate::graph::Graph;
use crate::{IrError, Result};
use std::collections::{HashMap, VecDeque};

/// Reorders `g.nodes` topologically, keeping the original order among nodes
/// that are ready at the same time. Values no node produces (graph inputs,
/// initializers, outer-scope values) count as available. A cycle is an error.
pub fn sort(g: &mut Graph) -> Result<()> {
    let n = g.nodes.len();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (k, node) in g.nodes.iter().enumerate() {
        for o in node.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), k);
        }
    }
    let mut indegree = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (k, node) in g.nodes.iter().enumerate() {
        for i in node.inputs.iter().filter(|i| !i.is_empty()) {
            if let Some(&p) = producer.get(i.as_str()) {
                if p != k {
                    indegree[k] += 1;
                    users[p].push(k);
                }
            }
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&k| indegree[k] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(k)) = ready.pop() {
        order.push(k);
        for &u in &users[k] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.push(std::cmp::Reverse(u));
            }
        }
    }
    if order.len() != n {
        let stuck: VecDeque<&str> = (0..n)
            .filter(|&k| indegree[k] > 0)
            .map(|k| g.nodes[k].name.as_str())
            .take(3)
            .collect();
        return Err(IrError::Graph(format!(
            "the graph has a cycle (through nodes {stuck:?})"
        )));
    }
    if order.iter().enumerate().all(|(a, &b)| a == b) {
        return Ok(());
    }
    let mut old: Vec<Option<crate::graph::Node>> =
        std::mem::take(&mut g.nodes).into_iter().map(Some).collect();
    g.nodes = order
        .into_iter()
        .map(|k| old[k].take().expect("each node once"))
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Node;

    #[test]
    fn sorts_and_detects_cycles() {
        let mut g = Graph::default();
        g.nodes.push(Node::new("b", "Relu", &["x1"], &["y"]));
        g.nodes.push(Node::new("a", "Relu", &["x"], &["x1"]));
        sort(&mut g).unwrap();
        assert_eq!(g.nodes[0].name, "a");
        g.nodes.push(Node::new("c", "Relu", &["z"], &["w"]));
        g.nodes.push(Node::new("d", "Relu", &["w"], &["z"]));
        assert!(sort(&mut g).unwrap_err().to_string().contains("cycle"));
    }
}
