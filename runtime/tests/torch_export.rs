//! A small diffusion U-Net exported from PyTorch with `torch.onnx.export`,
//! once by the TorchScript exporter (opset 17) and once by the dynamo
//! exporter (opset 18): the fixtures in `tests/data/torch/` come from
//! `bench/torch_export/export_unet.py` (see its README), so this test needs no
//! PyTorch. Each export is stamped in memory as a fewstep model (it must load)
//! and the graph the runtime runs (fewstep's tract front end and
//! [`fewstep::rewrite_graph`], Winograd and direct convolutions) is run once
//! on the saved `z`/`t`; the result must match PyTorch's `out.npy`.

use std::path::{Path, PathBuf};

use fewstep::fewstep_core::format::ImageShape;
use fewstep::fewstep_core::{Prediction, Schedule, StudentSteps};
use fewstep::{ConvAlgorithm, StampOptions};
use tract_onnx::prelude::*;

/// Maximum absolute difference allowed, relative to max |out|.
const TOLERANCE: f32 = 1e-4;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch")
}

fn npy(name: &str) -> (Vec<f32>, Vec<usize>) {
    fewstep::read_npy(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The export stamped in memory (v / cosine / diffusion, 3×16×16): it must
/// load as a fewstep model. Returns the stamped bytes.
fn stamped(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read model");
    let mut proto = fewstep::decode(&bytes).expect("decode");
    stamp(&mut proto).unwrap_or_else(|e| panic!("{}: stamp/load: {e}", path.display()));
    fewstep::encode(&proto)
}

fn stamp(proto: &mut fewstep::pb::ModelProto) -> Result<fewstep::Model, fewstep::LoadError> {
    let opts = StampOptions {
        prediction: Prediction::V,
        schedule: Schedule::Cosine,
        student_steps: StudentSteps(0),
        image: ImageShape {
            channels: 3,
            height: 16,
            width: 16,
        },
        num_classes: None,
        data_range: None,
        renames: vec![],
    };
    fewstep::stamp(proto, &opts, None)
}

/// One forward of the graph as the runtime builds it (`Network::build` and
/// `plan` in `src/model.rs`): input facts with a symbolic batch `N`,
/// decluttered, then `N` bound to the batch of `z`. (Concrete input facts
/// straight away would clash with the dynamo export's `value_info`, which
/// declares the intermediate shapes with `N`.)
fn forward(bytes: &[u8], conv: ConvAlgorithm, z: &[f32], zshape: &[usize], t: &[f32]) -> Vec<f32> {
    let n = zshape[0];
    // As `Model` loads it: PyTorch's group-norm chains fused first.
    let proto = fewstep::decode(bytes).expect("decode");
    let fused = fewstep::fuse_pytorch_group_norms(&proto).expect("PyTorch group norms found");
    let mut model = fewstep::onnx()
        .model_for_proto_model(&fused)
        .expect("parse");
    let sym = model.sym("N");
    let batch = TDim::Sym(sym.clone());
    let zfact: Vec<TDim> = std::iter::once(batch.clone())
        .chain(zshape[1..].iter().map(|&d| TDim::from(d)))
        .collect();
    model
        .set_input_fact(0, f32::fact(zfact).into())
        .expect("z fact");
    model
        .set_input_fact(1, f32::fact([batch]).into())
        .expect("t fact");
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .expect("fewstep graph");
    let subs = std::collections::HashMap::from([(sym, TDim::from(n))]);
    let mut typed = typed.set_symbols(&subs).expect("bind N");
    let (fused, convs) = fewstep::rewrite_graph(&mut typed, conv).expect("fewstep's rewrites");
    eprintln!("  {conv:?}: {fused} group-norm SiLUs fused, {convs} convolutions rewritten");
    assert!(fused > 0, "the fused group norms take their SiLUs");
    let plan = typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .expect("plan");
    let z = tract_ndarray::ArrayD::from_shape_vec(zshape, z.to_vec()).expect("z");
    let t = tract_ndarray::ArrayD::from_shape_vec(vec![n], t.to_vec()).expect("t");
    let out = plan
        .run(tvec!(Tensor::from(z).into(), Tensor::from(t).into()))
        .expect("run");
    let view = out[0].try_as_plain_ram().expect("plain output");
    view.as_slice::<f32>().expect("f32 output").to_vec()
}

fn check(file: &str) {
    let (z, zshape) = npy("z.npy");
    let (t, tshape) = npy("t.npy");
    let (want, oshape) = npy("out.npy");
    assert_eq!(zshape, [2, 3, 16, 16]);
    assert_eq!(tshape, [2]);
    assert_eq!(oshape, zshape);
    let bytes = stamped(&data_dir().join(file));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for conv in [ConvAlgorithm::Winograd, ConvAlgorithm::Direct] {
        let got = forward(&bytes, conv, &z, &zshape, &t);
        assert_eq!(got.len(), want.len());
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        eprintln!(
            "{file} {conv:?}: max |diff| = {diff:.3e} (relative {:.3e}, max |out| = {scale:.4})",
            diff / scale
        );
        assert!(
            diff <= TOLERANCE * scale,
            "{file} {conv:?}: max |diff| {diff} > {TOLERANCE} * {scale}"
        );
    }
}

#[test]
fn torchscript_export_matches_pytorch() {
    check("unet_torchscript.onnx");
}

#[test]
fn dynamo_export_matches_pytorch() {
    check("unet_dynamo.onnx");
}

/// Renames the symbolic dimension `from` to `to` wherever the graph declares
/// a shape (inputs, outputs, `value_info`).
fn rename_dim_param(proto: &mut fewstep::pb::ModelProto, from: &str, to: &str) -> usize {
    use fewstep::pb::tensor_shape_proto::dimension::Value as DimValue;
    use fewstep::pb::type_proto::Value as TypeValue;
    let graph = proto.graph.as_mut().expect("graph");
    let mut renamed = 0;
    for vi in graph
        .input
        .iter_mut()
        .chain(graph.output.iter_mut())
        .chain(graph.value_info.iter_mut())
    {
        let Some(TypeValue::TensorType(tt)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        for dim in tt.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
            if let Some(DimValue::DimParam(p)) = dim.value.as_mut()
                && p == from
            {
                *p = to.to_string();
                renamed += 1;
            }
        }
    }
    renamed
}

/// The dynamo exporter names the batch dimension after the `Dim` it was
/// given, or `s<k>` (e.g. `s13`) with `torch.export.Dim.AUTO`, and declares
/// every intermediate shape with that name in `value_info`. The fixture was
/// exported with `Dim("N")`; here its `N` is renamed to what `Dim.AUTO`
/// gives, which is how most dynamo exports arrive.
#[test]
/// Found with these fixtures: the runtime named the batch `N` whatever the
/// graph called it, and tract could not unify the two.
fn dynamo_export_with_another_batch_name_loads() {
    let bytes = std::fs::read(data_dir().join("unet_dynamo.onnx")).expect("read model");
    let mut proto = fewstep::decode(&bytes).expect("decode");
    let renamed = rename_dim_param(&mut proto, "N", "s13");
    assert!(renamed > 3, "only {renamed} shapes named N");
    if let Err(e) = stamp(&mut proto) {
        panic!("stamp/load: {e}");
    }
}
