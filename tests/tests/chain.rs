//! The whole chain at tiny size: train a few steps on a small real subset of
//! Fashion-MNIST -> export ONNX -> load with the runtime -> generate from a
//! fixed seed, and compare with sampling the Burn model itself through the
//! same core functions. Needs Debian's `dataset-fashion-mnist`
//! (`scripts/setup.sh` installs it).
use std::path::Path;

use fewstep::{Model, SamplerChoice};
use fewstep_core::{Conditioning, SamplerKind, SamplingPlan};
use fewstep_trainer::checkpoint::{Checkpoint, checkpoint_path};
use fewstep_trainer::config::TrainConfig;
use fewstep_trainer::data::PngOptions;
use fewstep_trainer::run::{self, DiffusionOptions, ModelOverrides};
use fewstep_trainer::{CpuTrain, sample};

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn train_and_export(dir: &Path, class_cond: bool) -> (std::path::PathBuf, Checkpoint) {
    assert!(
        Path::new(FASHION_MNIST).is_dir(),
        "{FASHION_MNIST} is missing: run scripts/setup.sh (Debian package dataset-fashion-mnist)"
    );
    let run_dir = dir.join(if class_cond { "cond" } else { "uncond" });
    let opts = DiffusionOptions {
        data: FASHION_MNIST.into(),
        out: run_dir.clone(),
        preset: "tiny".into(),
        class_cond,
        resume: false,
        steps: Some(3),
        limit: Some(48),
        png: PngOptions::default(),
        model_overrides: ModelOverrides::default(),
        train: TrainConfig {
            steps: 3,
            batch: 4,
            warmup: 1,
            sample_every: 1000,
            sample_steps: 2,
            sample_count: 2,
            ..TrainConfig::default()
        },
        quiet: true,
    };
    run::diffusion::<CpuTrain>(&opts, Default::default()).expect("training runs");
    let ckpt_file = checkpoint_path(&run_dir);
    let onnx = dir.join(if class_cond {
        "cond.onnx"
    } else {
        "uncond.onnx"
    });
    let size = run::export_checkpoint(&ckpt_file, &onnx, false).expect("export");
    assert!(size > 1000);
    (
        onnx,
        Checkpoint::load(&ckpt_file).expect("checkpoint loads"),
    )
}

fn chain(class_cond: bool) {
    let dir =
        std::env::temp_dir().join(format!("fewstep-chain-{}-{class_cond}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (onnx, ckpt) = train_and_export(&dir, class_cond);
    assert_eq!(ckpt.meta.step, 3, "trained 3 steps");

    let model = Model::load(&onnx).expect("the runtime loads the exported model");
    assert_eq!(model.metadata().image.len(), Some(28 * 28));
    assert_eq!(model.is_conditional(), class_cond);
    let burn_model = run::load_ema_cpu(&ckpt).expect("EMA weights");
    let cfg = &ckpt.meta.model;
    // Labels asked of both samplers: three classes; and no label, which
    // core's conditioning turns into the null label (= num_classes).
    let cases: Vec<Option<Vec<i64>>> = if class_cond {
        vec![Some(vec![7, 2, 5]), None]
    } else {
        vec![None]
    };
    let (batch, seed, steps) = (3usize, 42u64, 4u32);

    for asked in &cases {
        for (choice, kind) in [
            (SamplerChoice::Ddim, SamplerKind::Ddim),
            (SamplerChoice::Addim, SamplerKind::Addim),
        ] {
            let mut request = model
                .generate()
                .batch(batch)
                .seed(seed)
                .steps(steps)
                .sampler(choice);
            if let Some(l) = asked {
                request = request.labels(l.clone());
            }
            let from_runtime = request.run().expect("runtime generates");
            let plan = SamplingPlan::new(steps, kind).expect("plan");
            let from_burn = sample::sample(
                &burn_model,
                cfg,
                batch,
                plan,
                seed,
                asked
                    .as_deref()
                    .map_or(Conditioning::None, Conditioning::PerImage),
                &Default::default(),
            )
            .expect("burn samples");
            let diff = max_abs_diff(from_runtime.data(), &from_burn);
            eprintln!(
                "class_cond={class_cond} labels={asked:?} {kind:?}: max |runtime - burn| = {diff:e}"
            );
            assert!(
                diff <= 1e-4,
                "{kind:?}, labels {asked:?}: runtime and Burn sampling differ by {diff}"
            );
            assert!(from_runtime.data().iter().all(|v| v.is_finite()));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_export_run_unconditional() {
    chain(false);
}

#[test]
fn train_export_run_class_conditional() {
    chain(true);
}
