//! fewstep's fused `GroupNormalization` (and the SiLU folded into it)
//! against tract's own expansion, on small graphs: per-group (opset 18) and
//! per-channel (opset 21) scale and bias, with and without SiLU, f16, and
//! several threads.

mod common;

use common::*;
use fewstep::{ConvAlgorithm, pb};
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor, tvec};

const SHAPE: [usize; 4] = [2, 8, 5, 6];

/// `x [2, 8, 5, 6]` → GroupNormalization (4 groups, ε = 1e-3) → SiLU if
/// `silu` → `y`, in f16 between two casts if `f16`.
fn graph(opset: i64, silu: bool, f16: bool) -> pb::ModelProto {
    let mut g = Graph::default();
    let dims: Vec<Option<i64>> = SHAPE.iter().map(|&d| Some(d as i64)).collect();
    g.input("x", FLOAT, &dims);
    g.output("y", FLOAT, &dims);
    let params = if opset >= 21 { 8 } else { 4 };
    let scale: Vec<f32> = test_noise(params, 1)
        .iter()
        .map(|v| 1.0 + 0.3 * v)
        .collect();
    let bias: Vec<f32> = test_noise(params, 2).iter().map(|v| 0.5 * v).collect();
    let mut x = "x".to_string();
    if f16 {
        g.init_f16("scale", &[params as i64], &scale);
        g.init_f16("bias", &[params as i64], &bias);
        g.node_attrs("Cast", &["x"], "x16", vec![attr_int("to", 10)]);
        x = "x16".into();
    } else {
        g.init_f32("scale", &[params as i64], &scale);
        g.init_f32("bias", &[params as i64], &bias);
    }
    let epsilon = pb::AttributeProto {
        name: "epsilon".into(),
        r#type: 1,
        f: 1e-3,
        ..Default::default()
    };
    g.node_attrs(
        "GroupNormalization",
        &[&x, "scale", "bias"],
        "gn",
        vec![attr_int("num_groups", 4), epsilon],
    );
    let mut y = "gn".to_string();
    if silu {
        g.node("Sigmoid", &["gn"], "sig");
        g.node("Mul", &["gn", "sig"], "act");
        y = "act".into();
    }
    if f16 {
        g.node_attrs("Cast", &[&y], "y32", vec![attr_int("to", 1)]);
        y = "y32".into();
    }
    g.node("Identity", &[&y], "y");
    let mut p = g.finish(&[]);
    p.opset_import[0].version = opset;
    p
}

/// Runs the graph parsed by fewstep (fused) or by tract (expanded).
fn run(p: &pb::ModelProto, fused: bool, threads: usize) -> Vec<f32> {
    let onnx = if fused {
        fewstep::onnx()
    } else {
        tract_onnx::onnx()
    };
    let mut typed = onnx
        .model_for_proto_model(p)
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap();
    if fused {
        fewstep::rewrite_graph(&mut typed, ConvAlgorithm::Direct).unwrap();
    }
    let plan = typed.into_optimized().unwrap().into_runnable().unwrap();
    let x = Tensor::from_shape(&SHAPE, &test_noise(SHAPE.iter().product(), 3)).unwrap();
    let executor = if threads > 1 {
        Executor::multithread(threads)
    } else {
        Executor::SingleThread
    };
    let y = multithread_tract_scope(executor, || plan.run(tvec!(x.into_tvalue())))
        .unwrap()
        .remove(0);
    y.try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn fused_group_norm_matches_tract() {
    for opset in [18, 21] {
        for silu in [false, true] {
            let p = graph(opset, silu, false);
            let ours = run(&p, true, 1);
            let tract = run(&p, false, 1);
            let scale = tract.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.5, "a non-trivial output");
            let err = max_diff(&ours, &tract);
            assert!(err < 2e-6 * scale, "opset {opset}, silu {silu}: {err}");
            // Groups on several threads: the same bits.
            assert_eq!(run(&p, true, 3), ours, "opset {opset}, silu {silu}");
        }
    }
}

/// The graph parsed by fewstep, typed and decluttered.
fn decluttered(p: &pb::ModelProto) -> tract_onnx::prelude::TypedModel {
    fewstep::onnx()
        .model_for_proto_model(p)
        .unwrap()
        .into_typed()
        .unwrap()
        .into_decluttered()
        .unwrap()
}

#[test]
fn silu_is_fused_only_where_there_is_one() {
    let fused = |p: &pb::ModelProto| {
        let mut typed = decluttered(p);
        fewstep::rewrite_graph(&mut typed, ConvAlgorithm::Direct).unwrap()
    };
    assert_eq!(fused(&graph(21, true, false)), (1, 0));
    // Without a SiLU there is nothing to fuse.
    assert_eq!(fused(&graph(21, false, false)), (0, 0));
}

#[test]
fn f16_group_norm_is_computed_in_f32() {
    let p = graph(21, true, true);
    let err = max_diff(&run(&p, true, 1), &run(&p, false, 1));
    // Both round the f32 result to f16 once (~1e-3 relative).
    assert!(err < 5e-3, "{err}");
}
