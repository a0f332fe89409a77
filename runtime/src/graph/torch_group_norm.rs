//! PyTorch's ONNX export of `nn.GroupNorm`, recognised and turned back into
//! one `GroupNormalization` node before tract parses the graph.
//!
//! Below opset 21 (TorchScript exporter, opset ≤ 17; dynamo exporter at its
//! default opset 18) PyTorch writes a group norm as five nodes:
//!
//! ```text
//! Reshape(x, [0, G, -1]) → InstanceNormalization(scale = 1, bias = 0, ε)
//!   → Reshape(·, Shape(x)) → Mul(·, γ [C,1,1]) → Add(·, β [C,1,1])
//! ```
//!
//! tract runs them as a reduction, a normalisation and a broadcast
//! multiply-add (22 % of a forward of the PyTorch test U-Net, `op_profile`),
//! and fewstep's fused group norm, with its SiLU folded in, never applies.
//! The chain is replaced by `GroupNormalization(x, γ, β)` with per-channel
//! γ, β (opset-21 semantics, flagged by [`PER_CHANNEL_ATTR`] because the
//! model's opset says otherwise). Only the copy tract parses changes; the
//! caller's model (what `fewstep stamp` writes) keeps PyTorch's nodes.

use std::collections::HashMap;

use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto, attribute_proto, tensor_proto};

/// An attribute only fewstep's own parser reads: 1 = scale and bias are
/// per channel whatever the model's opset.
pub(crate) const PER_CHANNEL_ATTR: &str = "fewstep_per_channel";

/// The model with every PyTorch group-norm chain fused, or `None` when it
/// has none (the caller then parses its own model, uncopied). Public
/// (hidden) for the tests of the whole graph (`tests/torch_export.rs`).
pub fn fuse(model: &pb::ModelProto) -> Option<pb::ModelProto> {
    let graph = model.graph.as_ref()?;
    let chains = find_chains(graph);
    if chains.is_empty() {
        return None;
    }
    let mut model = model.clone();
    let graph = model.graph.as_mut()?;
    let mut replace: HashMap<usize, NodeProto> = HashMap::new();
    let mut remove = Vec::new();
    for c in chains {
        for (suffix, values) in [("scale", &c.gamma), ("bias", &c.beta)] {
            graph.initializer.push(TensorProto {
                name: format!("{}.fewstep_{suffix}", c.output),
                dims: vec![values.len() as i64],
                data_type: tensor_proto::DataType::Float as i32,
                float_data: values.clone(),
                ..Default::default()
            });
        }
        let node = NodeProto {
            name: format!("{}.fewstep_group_norm", c.output),
            op_type: "GroupNormalization".into(),
            input: vec![
                c.x.clone(),
                format!("{}.fewstep_scale", c.output),
                format!("{}.fewstep_bias", c.output),
            ],
            output: vec![c.output.clone()],
            attribute: vec![
                attr_float("epsilon", c.epsilon),
                attr_int("num_groups", c.groups as i64),
                attr_int(PER_CHANNEL_ATTR, 1),
            ],
            ..Default::default()
        };
        // At the Add's place: its inputs (x, initializers) are all defined
        // by then, so the node list stays in topological order.
        replace.insert(c.nodes[4], node);
        remove.extend_from_slice(&c.nodes[..4]);
    }
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !remove.contains(i))
        .map(|(i, n)| replace.remove(&i).unwrap_or(n))
        .collect();
    Some(model)
}

/// One recognised chain: node indices (Reshape, InstanceNormalization,
/// Reshape, Mul, Add), its input and output, and its parameters.
#[derive(Debug)]
struct Chain {
    nodes: [usize; 5],
    x: String,
    output: String,
    groups: usize,
    epsilon: f32,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

fn find_chains(graph: &pb::GraphProto) -> Vec<Chain> {
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in &n.input {
            consumers.entry(input.as_str()).or_default().push(i);
        }
        for output in &n.output {
            producer.insert(output.as_str(), i);
        }
    }
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    // The only consumer of `name`, when it is not also a graph output.
    let only_consumer = |name: &str, op: &str| -> Option<usize> {
        match consumers.get(name).map(Vec::as_slice) {
            Some([c]) if !outputs.contains(&name) && graph.node[*c].op_type == op => Some(*c),
            _ => None,
        }
    };
    let constants = Constants::new(graph);
    let mut chains = Vec::new();
    for (norm_ix, norm) in graph.node.iter().enumerate() {
        if norm.op_type != "InstanceNormalization"
            || norm.input.len() != 3
            || norm.output.len() != 1
        {
            continue;
        }
        let chain = (|| {
            let reshape_in = *producer.get(norm.input[0].as_str())?;
            let reshape = &graph.node[reshape_in];
            if reshape.op_type != "Reshape" || reshape.input.len() != 2 || allows_zero(reshape) {
                return None;
            }
            only_consumer(&norm.input[0], "InstanceNormalization")?;
            let x = reshape.input[0].clone();
            // [0, G, -1]: batch kept, G groups, the rest flattened.
            let groups = match constants.ints(&reshape.input[1])?.as_slice() {
                [0, g, -1] if *g > 0 => *g as usize,
                _ => return None,
            };
            let ones = constants.floats(&norm.input[1])?;
            let zeros = constants.floats(&norm.input[2])?;
            if ones.len() != groups || ones.iter().any(|&v| v != 1.0) || zeros.len() != groups {
                return None;
            }
            if zeros.iter().any(|&v| v != 0.0) {
                return None;
            }
            let reshape_out_ix = only_consumer(&norm.output[0], "Reshape")?;
            let reshape_out = &graph.node[reshape_out_ix];
            // Back to x's own shape.
            let shape_of = &graph.node[*producer.get(reshape_out.input.get(1)?.as_str())?];
            // The whole shape: no attribute but `start = 0` (dynamo writes it).
            let whole = shape_of
                .attribute
                .iter()
                .all(|a| a.name == "start" && a.i == 0);
            if shape_of.op_type != "Shape" || shape_of.input.first() != Some(&x) || !whole {
                return None;
            }
            let mul_ix = only_consumer(reshape_out.output.first()?, "Mul")?;
            let mul = &graph.node[mul_ix];
            let add_ix = only_consumer(mul.output.first()?, "Add")?;
            let add = &graph.node[add_ix];
            let gamma = constants.per_channel(other_input(mul, &reshape_out.output[0])?, groups)?;
            let beta = constants.per_channel(other_input(add, &mul.output[0])?, groups)?;
            if gamma.len() != beta.len() {
                return None;
            }
            Some(Chain {
                nodes: [reshape_in, norm_ix, reshape_out_ix, mul_ix, add_ix],
                x,
                output: add.output.first()?.clone(),
                groups,
                epsilon: float_attr(norm, "epsilon").unwrap_or(1e-5),
                gamma,
                beta,
            })
        })();
        chains.extend(chain);
    }
    chains
}

fn allows_zero(node: &NodeProto) -> bool {
    node.attribute
        .iter()
        .any(|a| a.name == "allowzero" && a.i != 0)
}

/// The input of a two-input node that is not `this`.
fn other_input<'a>(node: &'a NodeProto, this: &str) -> Option<&'a str> {
    match node.input.as_slice() {
        [a, b] if a == this => Some(b),
        [a, b] if b == this => Some(a),
        _ => None,
    }
}

fn float_attr(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

/// A tensor's values: its little-endian `raw_data` when it has any, else
/// its typed field.
fn raw_or<T: Clone, const N: usize>(raw: &[u8], from_le: fn([u8; N]) -> T, typed: &[T]) -> Vec<T> {
    if raw.is_empty() {
        return typed.to_vec();
    }
    raw.chunks_exact(N)
        .filter_map(|b| b.try_into().ok().map(from_le))
        .collect()
}

/// Constant tensors by name: initializers and `Constant` nodes' values.
struct Constants<'a> {
    tensors: HashMap<&'a str, &'a TensorProto>,
}

impl<'a> Constants<'a> {
    fn new(graph: &'a pb::GraphProto) -> Self {
        let mut tensors: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        for n in &graph.node {
            if n.op_type == "Constant"
                && let (Some(out), Some(a)) = (n.output.first(), n.attribute.first())
                && a.name == "value"
                && let Some(t) = a.t.as_ref()
            {
                tensors.insert(out.as_str(), t);
            }
        }
        Constants { tensors }
    }

    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        let t = self.tensors.get(name)?;
        (t.data_type == tensor_proto::DataType::Int64 as i32)
            .then(|| raw_or(&t.raw_data, i64::from_le_bytes, &t.int64_data))
    }

    fn floats(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.tensors.get(name)?;
        (t.data_type == tensor_proto::DataType::Float as i32)
            .then(|| raw_or(&t.raw_data, f32::from_le_bytes, &t.float_data))
    }

    /// A `[C, 1, 1]` (or `[1, C, 1, 1]`) constant as `C` values, `C` a
    /// multiple of `groups`.
    fn per_channel(&self, name: &str, groups: usize) -> Option<Vec<f32>> {
        let dims = &self.tensors.get(name)?.dims;
        let c = match dims.as_slice() {
            [c, 1, 1] | [1, c, 1, 1] if *c > 0 => *c as usize,
            _ => return None,
        };
        let values = self.floats(name)?;
        (values.len() == c && c.is_multiple_of(groups)).then_some(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> pb::ModelProto {
        let path = format!("{}/tests/data/torch/{name}", env!("CARGO_MANIFEST_DIR"));
        crate::decode(&std::fs::read(path).expect("read fixture")).expect("decode")
    }

    fn count(model: &pb::ModelProto, op: &str) -> usize {
        let graph = model.graph.as_ref().expect("graph");
        graph.node.iter().filter(|n| n.op_type == op).count()
    }

    /// Both PyTorch exporters' group norms are found; the caller's model is
    /// untouched. (That the fused graph computes PyTorch's output is
    /// `tests/torch_export.rs`.)
    #[test]
    fn every_pytorch_group_norm_is_fused() {
        for name in ["unet_torchscript.onnx", "unet_dynamo.onnx"] {
            let model = fixture(name);
            let norms = count(&model, "InstanceNormalization");
            assert!(norms >= 5, "{name}: {norms} instance norms");
            let fused = fuse(&model).expect("chains found");
            assert_eq!(count(&fused, "InstanceNormalization"), 0, "{name}");
            assert_eq!(count(&fused, "GroupNormalization"), norms, "{name}");
            let removed = count(&model, "Reshape") - count(&fused, "Reshape");
            assert_eq!(removed, 2 * norms, "{name}");
            assert_eq!(
                count(&model, "GroupNormalization"),
                0,
                "the caller's model keeps its nodes"
            );
        }
    }

    /// A chain that differs anywhere is left alone.
    #[test]
    fn near_misses_are_not_fused() {
        let model = fixture("unet_torchscript.onnx");
        let graph = model.graph.as_ref().expect("graph");
        let norm = graph
            .node
            .iter()
            .position(|n| n.op_type == "InstanceNormalization")
            .expect("an instance norm");
        let all = count(&fuse(&model).expect("fused"), "GroupNormalization");
        // The instance norm's scale made a non-constant (a graph input).
        let mut changed = model.clone();
        changed.graph.as_mut().unwrap().node[norm].input[1] = "z".into();
        let fused = fuse(&changed).map_or(0, |m| count(&m, "GroupNormalization"));
        assert_eq!(fused, all - 1);
        // Its output also read by another node.
        let mut changed = model.clone();
        let out = graph.node[norm].output[0].clone();
        let g = changed.graph.as_mut().unwrap();
        g.node.push(NodeProto {
            op_type: "Identity".into(),
            input: vec![out],
            output: vec!["extra".into()],
            ..Default::default()
        });
        let fused = fuse(&changed).map_or(0, |m| count(&m, "GroupNormalization"));
        assert_eq!(fused, all - 1);
    }
}
