//! Checkpoints resume exactly: 2K steps == K steps + save/load + K steps
//! (same loss sequence, same weights), at tiny size with dropout on.

use burn::module::{AutodiffModule, Module};
use fewstep_trainer::CpuTrain;
use fewstep_trainer::algorithms::train::Trainer;
use fewstep_trainer::checkpoint::Checkpoint;
use fewstep_trainer::config::{ModelConfig, TrainConfig};
use fewstep_trainer::data::Dataset;
use fewstep_trainer::export::onnx::tensor_values;

/// 12 labelled 1×8×8 images: blobs at class-dependent positions.
pub fn toy_dataset() -> Dataset {
    let (h, w) = (8, 8);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..12u32 {
        let class = i % 3;
        let (cy, cx) = (2.0 + 2.0 * class as f32, 2.0 + (i % 4) as f32);
        for y in 0..h {
            for x in 0..w {
                let r2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                images.push(2.0 * (-r2 / 3.0).exp() - 1.0);
            }
        }
        labels.push(class);
    }
    Dataset {
        channels: 1,
        height: h,
        width: w,
        images,
        labels,
        class_names: vec!["a".into(), "b".into(), "c".into()],
        source: "toy".into(),
    }
}

fn configs() -> (ModelConfig, TrainConfig) {
    let mut m = ModelConfig::preset("tiny", 1, 8, 8).unwrap();
    m.num_classes = 3;
    m.dropout = 0.2;
    let t = TrainConfig {
        steps: 6,
        batch: 4,
        lr: 1e-3,
        warmup: 2,
        seed: 11,
        ..TrainConfig::default()
    };
    (m, t)
}

fn weights<M: Module<fewstep_trainer::Cpu>>(m: &M) -> Vec<f32> {
    struct V(Vec<f32>);
    impl burn::module::ModuleVisitor<fewstep_trainer::Cpu> for V {
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::tensor::Tensor<fewstep_trainer::Cpu, D>>,
        ) {
            self.0.extend(tensor_values(&p.val()).unwrap());
        }
    }
    let mut v = V(Vec::new());
    m.visit(&mut v);
    v.0
}

#[test]
fn resume_repeats_the_uninterrupted_run() {
    let data = toy_dataset();
    let (m, t) = configs();
    let k = 3;

    let mut full =
        Trainer::<CpuTrain>::new(m.clone(), t.clone(), &data, Default::default()).unwrap();
    let full_losses: Vec<f32> = (0..2 * k).map(|_| full.step(&data).unwrap().loss).collect();

    let mut first = Trainer::<CpuTrain>::new(m, t, &data, Default::default()).unwrap();
    let mut losses: Vec<f32> = (0..k).map(|_| first.step(&data).unwrap().loss).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt");
    first.checkpoint().unwrap().save(&path).unwrap();
    drop(first);
    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.meta.step, k as u64);
    let mut resumed = Trainer::<CpuTrain>::from_checkpoint(ckpt, Default::default()).unwrap();
    losses.extend((0..k).map(|_| resumed.step(&data).unwrap().loss));

    eprintln!("uninterrupted {full_losses:?}\nresumed       {losses:?}");
    assert!(full_losses.iter().all(|l| l.is_finite() && *l > 0.0));
    for (a, b) in full_losses.iter().zip(&losses) {
        assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} vs {b}");
    }
    assert_eq!(resumed.log, full.log);
    let (wa, wb) = (
        weights(&full.model.valid()),
        weights(&resumed.model.valid()),
    );
    assert_eq!(wa.len(), wb.len());
    assert!(wa.iter().zip(&wb).all(|(a, b)| (a - b).abs() <= 1e-6));
    let (ea, eb) = (weights(&full.ema), weights(&resumed.ema));
    assert!(ea.iter().zip(&eb).all(|(a, b)| (a - b).abs() <= 1e-6));
}

#[test]
fn different_seeds_give_different_runs() {
    // Guards the test above against a loss sequence that ignores the RNG.
    let data = toy_dataset();
    let (m, t) = configs();
    let mut a = Trainer::<CpuTrain>::new(m.clone(), t.clone(), &data, Default::default()).unwrap();
    let mut b =
        Trainer::<CpuTrain>::new(m, TrainConfig { seed: 12, ..t }, &data, Default::default())
            .unwrap();
    let la = a.step(&data).unwrap().loss;
    let lb = b.step(&data).unwrap().loss;
    assert_ne!(la, lb);
}

#[test]
fn corrupt_checkpoints_are_errors_not_panics() {
    let data = toy_dataset();
    let (m, t) = configs();
    let trainer = Trainer::<CpuTrain>::new(m, t, &data, Default::default()).unwrap();
    let bytes = trainer.checkpoint().unwrap().to_bytes().unwrap();
    assert!(Checkpoint::from_bytes(&bytes).is_ok());
    for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = Checkpoint::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped.truncate(last);
    assert!(Checkpoint::from_bytes(&flipped).is_err());
    let err = Checkpoint::load(std::path::Path::new("/nonexistent/ckpt")).unwrap_err();
    assert!(format!("{err:#}").contains("cannot read checkpoint"));
}
