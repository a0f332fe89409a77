//! Multistep consistency training/distillation (Algorithm 1) at tiny size:
//! the loss target against `fewstep-core`'s scalar functions, the exact
//! identities of eq. 9, exact resume, CLI errors, export metadata, and an
//! end-to-end CD run on a low-dimensional toy set that must beat its teacher.

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use fewstep_core::Conditioning;
use fewstep_core::SamplingPlan;
use fewstep_core::format::{self, parse_xvar_table};
use fewstep_core::plan::SamplerKind;
use fewstep_core::rng::GaussianStream;
use fewstep_core::sampler::{ddim_coeffs, inverse_ddim_coeffs};
use fewstep_core::training::{
    ConsistencyTargetCoeffs, ConsistencyTimes, LossWeight, loss_weight, pseudo_huber,
    teacher_step_coeffs, teacher_xvar,
};
use fewstep_trainer::algorithms::consistency::{
    ConsistencyBatch, ConsistencyTrainer, Teacher, consistency_loss,
};
use fewstep_trainer::algorithms::train::Trainer;
use fewstep_trainer::checkpoint::Checkpoint;
use fewstep_trainer::config::{ConsistencyConfig, ConsistencyMode, ModelConfig, TrainConfig};
use fewstep_trainer::data::Dataset;
use fewstep_trainer::export::onnx::{read_metadata, tensor_values};
use fewstep_trainer::network::model::UNet;
use fewstep_trainer::sample::{evaluate, sample};
use fewstep_trainer::{Cpu, CpuTrain};
use std::path::Path;
use std::process::Command;

/// 16 labelled 1×8×8 images: blobs at class-dependent positions.
fn blobs() -> Dataset {
    let (h, w) = (8, 8);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..16u32 {
        let class = i % 2;
        let (cy, cx) = (2.0 + 3.0 * class as f32, 2.0 + (i % 4) as f32);
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
        class_names: vec!["a".into(), "b".into()],
        source: "blobs".into(),
    }
}

fn tiny_cfg(classes: usize) -> ModelConfig {
    let mut m = ModelConfig::preset("tiny", 1, 8, 8).unwrap();
    m.num_classes = classes;
    m
}

fn random_model(cfg: &ModelConfig, seed: u64) -> UNet<CpuTrain> {
    let device = Default::default();
    let _g = fewstep_trainer::algorithms::train::BACKEND_RNG.lock();
    CpuTrain::seed(&device, seed);
    UNet::new(cfg, &device)
}

fn ccfg(mode: ConsistencyMode, t: u32) -> ConsistencyConfig {
    ConsistencyConfig {
        mode,
        student_steps: t,
        xvar_frac: 0.75,
        teacher_sampler: SamplerKind::Addim,
        teacher_steps_start: 8.0,
        teacher_steps_end: 32.0,
        anneal_iters: 10,
        huber_c: 1e-4,
        loss_weight: LossWeight::SnrPlusOne,
        teacher_guidance: 1.0,
        init: String::new(),
        init_step: 0,
    }
}

fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    GaussianStream::new(seed, 0).fill(&mut v);
    v
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1.0)
}

/// (step, n_rel) pairs for T = 4, N = 8, with their times.
fn times_grid() -> Vec<ConsistencyTimes> {
    [(0, 1), (0, 5), (1, 8), (2, 3), (3, 1), (3, 7)]
        .iter()
        .map(|&(s, n)| ConsistencyTimes::new(s, n, 4, 8).unwrap())
        .collect()
}

#[test]
fn loss_target_equals_core_scalars_element_by_element() {
    let device = Default::default();
    for (classes, guidance) in [(0, 1.0), (2, 1.5)] {
        let cfg = tiny_cfg(classes);
        let student = random_model(&cfg, 3);
        let teacher_net = random_model(&cfg, 4).valid();
        let teacher = Teacher {
            model: &teacher_net,
            cfg: &cfg,
            guidance,
            sampler: SamplerKind::Addim,
            xvar_frac: 0.75,
            device: &device,
        };
        let schedule = cfg.schedule().unwrap();
        let pred = cfg.prediction().unwrap();
        let d = cfg.image_len();
        let times = times_grid();
        let n = times.len();
        let x: Vec<f32> = noise(1, n * d).iter().map(|v| v.tanh()).collect();
        let eps = noise(2, n * d);
        let labels: Vec<i64> = if classes > 0 {
            (0..n as i64).map(|i| i % 3).collect() // includes the null label 2
        } else {
            Vec::new()
        };
        let batch = ConsistencyBatch::build(
            &cfg,
            Some(&teacher),
            x.clone(),
            &eps,
            times.clone(),
            labels.clone(),
        )
        .unwrap();
        let loss = consistency_loss(
            &student,
            &cfg,
            1e-4,
            LossWeight::SnrPlusOne,
            &batch,
            77,
            &device,
        )
        .unwrap();
        let per_example = tensor_values(&loss.per_example).unwrap();
        // The same quantities from core's scalar functions and separate
        // network evaluations.
        let lab = (!labels.is_empty()).then_some(labels.as_slice());
        let tt: Vec<f32> = times.iter().map(|t| t.t as f32).collect();
        let ts: Vec<f32> = times.iter().map(|t| t.s as f32).collect();
        let zt: Vec<f32> = (0..n * d)
            .map(|j| {
                let at = schedule.alpha_sigma(times[j / d].t);
                (at.alpha * f64::from(x[j]) + at.sigma * f64::from(eps[j])) as f32
            })
            .collect();
        let out_c = evaluate(&teacher_net, &cfg, &zt, &tt, lab, &device).unwrap();
        let out_u = if classes > 0 {
            let null = vec![classes as i64; n];
            evaluate(&teacher_net, &cfg, &zt, &tt, Some(&null), &device).unwrap()
        } else {
            out_c.clone()
        };
        let student_cpu = student.valid();
        let out_ref = evaluate(&student_cpu, &cfg, &batch.z_s, &ts, lab, &device).unwrap();
        let out_t = evaluate(&student_cpu, &cfg, &zt, &tt, lab, &device).unwrap();
        for i in 0..n {
            let tm = times[i];
            let (at, as_) = (schedule.alpha_sigma(tm.t), schedule.alpha_sigma(tm.s));
            let r = i * d..(i + 1) * d;
            let xc = pred.x_hat_coeffs(at);
            let x_cond: Vec<f64> = r
                .clone()
                .map(|j| xc.apply(f64::from(zt[j]), f64::from(out_c[j])))
                .collect();
            let x_guided: Vec<f64> = r
                .clone()
                .map(|j| {
                    let g = fewstep_core::guidance::guide(out_c[j], out_u[j], guidance as f32);
                    xc.apply(f64::from(zt[j]), f64::from(g))
                })
                .collect();
            let diff_sq: f64 = r
                .clone()
                .map(|j| (x_cond[j - i * d] - f64::from(x[j])).powi(2))
                .sum();
            let xvar = teacher_xvar(0.75, diff_sq, d);
            assert!(close(batch.xvar[i], xvar, 1e-4), "xvar {i}");
            let eps_sq: f64 = r
                .clone()
                .map(|j| ((f64::from(zt[j]) - at.alpha * x_guided[j - i * d]) / at.sigma).powi(2))
                .sum();
            let tc = teacher_step_coeffs(at, as_, xvar, d, eps_sq);
            let c = ConsistencyTargetCoeffs::new(&schedule, tm);
            let xs = pred.x_hat_coeffs(as_);
            let mut norm_sq = 0.0;
            for j in r.clone() {
                assert!(close(f64::from(batch.z_t[j]), f64::from(zt[j]), 1e-6));
                let z_s = tc.x * x_guided[j - i * d] + tc.z * f64::from(zt[j]);
                assert!(
                    close(f64::from(batch.z_s[j]), z_s, 1e-4),
                    "z_s at example {i} element {j}: {} vs {z_s}",
                    batch.z_s[j]
                );
                let x_ref = xs.apply(f64::from(batch.z_s[j]), f64::from(out_ref[j]));
                assert!(
                    close(f64::from(loss.x_ref[j]), x_ref, 1e-4),
                    "x_ref {i} {j}"
                );
                let target = c.apply(
                    f64::from(loss.x_ref[j]),
                    f64::from(batch.z_s[j]),
                    f64::from(batch.z_t[j]),
                );
                assert!(
                    close(f64::from(loss.target[j]), target, 1e-5),
                    "target at example {i} element {j}: {} vs {target}",
                    loss.target[j]
                );
                let x_hat = xc.apply(f64::from(zt[j]), f64::from(out_t[j]));
                norm_sq += (x_hat - f64::from(loss.target[j])).powi(2);
            }
            let expect = loss_weight(&schedule, tm.t) * pseudo_huber(norm_sq, 1e-4);
            assert!(
                close(f64::from(per_example[i]), expect, 1e-3),
                "loss of example {i}: {} vs {expect}",
                per_example[i]
            );
        }
        // sqrt-snr1 weighs the same distances by sqrt(SNR + 1) instead.
        let sqrt = consistency_loss(
            &student,
            &cfg,
            1e-4,
            LossWeight::SqrtSnrPlusOne,
            &batch,
            77,
            &device,
        )
        .unwrap();
        let sqrt_per_example = tensor_values(&sqrt.per_example).unwrap();
        for (i, tm) in times.iter().enumerate() {
            let ratio = f64::from(per_example[i]) / f64::from(sqrt_per_example[i]);
            let want = loss_weight(&schedule, tm.t).sqrt();
            assert!(close(ratio, want, 1e-4), "example {i}: {ratio} vs {want}");
        }
    }
}

#[test]
fn ct_with_n_rel_1_targets_the_data_and_z_ref_is_z_s() {
    let device = Default::default();
    let cfg = tiny_cfg(0);
    let schedule = cfg.schedule().unwrap();
    let d = cfg.image_len();
    // s == t_step: DDIM_{s->t_step} is the identity, so z_ref = z_s.
    for tm in (0..4).map(|s| ConsistencyTimes::new(s, 1, 4, 8).unwrap()) {
        assert_eq!(tm.s, tm.t_step);
        let at = schedule.alpha_sigma(tm.s);
        let id = ddim_coeffs(at, at);
        assert_eq!((id.x, id.z), (0.0, 1.0));
        let c = ConsistencyTargetCoeffs::new(&schedule, tm);
        let inv = inverse_ddim_coeffs(schedule.alpha_sigma(tm.t), at);
        assert_eq!(c.x_ref, 0.0);
        assert_eq!((c.z_s, c.z_t), (inv.z_s, inv.z_t));
    }
    // CT (x_teacher = x) with n_rel = 1: the target is x whatever the network
    // (eq. 9: the loss is the diffusion loss).
    let times: Vec<_> = (0..4)
        .map(|s| ConsistencyTimes::new(s, 1, 4, 8).unwrap())
        .collect();
    let n = times.len();
    let x: Vec<f32> = noise(5, n * d).iter().map(|v| v.tanh()).collect();
    let eps = noise(6, n * d);
    let batch = ConsistencyBatch::build::<Cpu>(&cfg, None, x.clone(), &eps, times, vec![]).unwrap();
    let mut targets = Vec::new();
    for seed in [1, 2] {
        let model = random_model(&cfg, seed);
        let loss = consistency_loss(
            &model,
            &cfg,
            1e-4,
            LossWeight::SnrPlusOne,
            &batch,
            5,
            &device,
        )
        .unwrap();
        let max = loss
            .target
            .iter()
            .zip(&x)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-4, "CT n_rel = 1 target differs from x by {max}");
        targets.push(loss.target);
    }
    assert_eq!(
        targets[0], targets[1],
        "target depends on x_ref at s = t_step"
    );
}

fn teacher_checkpoint(dir: &Path, data: &Dataset, steps: u64) -> std::path::PathBuf {
    let cfg = tiny_cfg(2);
    let train = TrainConfig {
        steps,
        batch: 8,
        lr: 2e-3,
        warmup: 2,
        seed: 9,
        ..TrainConfig::default()
    };
    let mut t = Trainer::<CpuTrain>::new(cfg, train, data, Default::default()).unwrap();
    for _ in 0..steps {
        t.step(data).unwrap();
    }
    let path = dir.join("teacher.fsck");
    t.checkpoint().unwrap().save(&path).unwrap();
    path
}

#[test]
fn consistency_resume_repeats_the_uninterrupted_run() {
    let data = blobs();
    let dir = tempfile::tempdir().unwrap();
    let init = Checkpoint::load(&teacher_checkpoint(dir.path(), &data, 2)).unwrap();
    let train = TrainConfig {
        steps: 6,
        batch: 4,
        lr: 1e-3,
        warmup: 2,
        seed: 21,
        ema_decay: 0.9,
        ..TrainConfig::default()
    };
    let mut c = ccfg(ConsistencyMode::Cd, 2);
    c.init = dir.path().join("teacher.fsck").display().to_string();
    c.init_step = init.meta.step;
    let make = || {
        ConsistencyTrainer::<CpuTrain>::new(
            &init,
            c.clone(),
            train.clone(),
            &data,
            Some(0.2),
            Default::default(),
        )
        .unwrap()
    };
    let mut full = make();
    let full_losses: Vec<f32> = (0..6).map(|_| full.step(&data).unwrap().loss).collect();
    let mut first = make();
    let mut losses: Vec<f32> = (0..3).map(|_| first.step(&data).unwrap().loss).collect();
    let path = dir.path().join("student.fsck");
    first.trainer.checkpoint().unwrap().save(&path).unwrap();
    drop(first);
    let mut resumed = ConsistencyTrainer::<CpuTrain>::from_checkpoint(
        Checkpoint::load(&path).unwrap(),
        Default::default(),
    )
    .unwrap();
    losses.extend((0..3).map(|_| resumed.step(&data).unwrap().loss));
    eprintln!("uninterrupted {full_losses:?}\nresumed       {losses:?}");
    assert!(full_losses.iter().all(|l| l.is_finite() && *l > 0.0));
    for (a, b) in full_losses.iter().zip(&losses) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
    }
    let w = |m: &UNet<Cpu>| {
        let mut v = Vec::new();
        struct V<'a>(&'a mut Vec<f32>);
        impl burn::module::ModuleVisitor<Cpu> for V<'_> {
            fn visit_float<const D: usize>(
                &mut self,
                p: &burn::module::Param<burn::tensor::Tensor<Cpu, D>>,
            ) {
                self.0.extend(tensor_values(&p.val()).unwrap());
            }
        }
        m.visit(&mut V(&mut v));
        v
    };
    let (a, b) = (w(&full.trainer.ema), w(&resumed.trainer.ema));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fewstep-train"))
}

fn one_line_error(args: &[&str], needle: &str) {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {args:?}");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line:\n{err}");
}

#[test]
fn cli_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let base = ["consistency", "--out", out];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    one_line_error(
        &with(&["--mode", "cd", "--student-steps", "2"]),
        "--init is required",
    );
    one_line_error(
        &with(&[
            "--mode",
            "cd",
            "--student-steps",
            "0",
            "--init",
            "/nonexistent",
        ]),
        "--student-steps must be >= 1",
    );
    one_line_error(
        &with(&["--mode", "xy", "--student-steps", "2", "--init", "/x"]),
        "possible values: ct, cd",
    );
    one_line_error(
        &with(&[
            "--mode",
            "ct",
            "--student-steps",
            "2",
            "--init",
            "/nonexistent",
        ]),
        "cannot read checkpoint",
    );
    one_line_error(
        &[
            "progressive",
            "--out",
            out,
            "--init",
            "/x",
            "--target-steps",
            "3",
            "--start-steps",
            "16",
        ],
        "power of two",
    );
    one_line_error(
        &["xvar", "--ckpt", "/nonexistent"],
        "cannot read checkpoint",
    );
    one_line_error(
        &with(&[
            "--mode",
            "cd",
            "--student-steps",
            "2",
            "--init",
            "/x",
            "--loss-weight",
            "v",
        ]),
        "loss weight must be snr1 or sqrt-snr1",
    );
}

#[test]
fn export_writes_student_steps_and_the_xvar_table() {
    let data = blobs();
    let dir = tempfile::tempdir().unwrap();
    let teacher_path = teacher_checkpoint(dir.path(), &data, 1);
    let init = Checkpoint::load(&teacher_path).unwrap();
    // The teacher: student_steps 0 and, once measured, the xvar table.
    let model = init
        .load_ema::<Cpu>(
            UNet::new(&init.meta.model, &Default::default()),
            &Default::default(),
        )
        .unwrap();
    let opts = fewstep_trainer::algorithms::xvar::XvarOptions {
        points: 9,
        examples: 8,
        xvar_frac: 0.75,
        batch: 4,
        seed: 0,
    };
    let table = fewstep_trainer::algorithms::xvar::measure(
        &model,
        &init.meta.model,
        &data,
        opts,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(table.len(), 9);
    assert!(table[0] < 1e-3 && table[0] < table[8], "{table:?}");
    assert!(table.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(table[8] > 0.0);
    let mut with_table = init.clone();
    with_table.meta.addim_xvar = Some(fewstep_trainer::checkpoint::XvarTable {
        values: table.clone(),
        xvar_frac: 0.75,
        examples: 8,
        step: 1,
    });
    with_table.save(&teacher_path).unwrap();
    let onnx = dir.path().join("teacher.onnx");
    fewstep_trainer::export::export_checkpoint(&teacher_path, &onnx, false).unwrap();
    let meta = read_metadata(&std::fs::read(&onnx).unwrap()).unwrap();
    let get = |k: &str| meta.iter().find(|(mk, _)| mk == k).map(|(_, v)| v.clone());
    assert_eq!(get(format::KEY_STUDENT_STEPS).as_deref(), Some("0"));
    let text = get(format::KEY_ADDIM_XVAR).expect("fewstep.addim_xvar written");
    assert_eq!(format::xvar_table_len(&text).unwrap(), 9);
    let parsed: Vec<f32> = parse_xvar_table(&text).map(|v| v.unwrap()).collect();
    assert_eq!(
        parsed, table,
        "the runtime reads back exactly the measured table"
    );

    // A 3-step consistency student exports student_steps = 3 and no table.
    let mut c = ccfg(ConsistencyMode::Ct, 3);
    c.init = teacher_path.display().to_string();
    let train = TrainConfig {
        steps: 1,
        batch: 2,
        ..TrainConfig::default()
    };
    let mut run = ConsistencyTrainer::<CpuTrain>::new(
        &Checkpoint::load(&teacher_path).unwrap(),
        c,
        train,
        &data,
        None,
        Default::default(),
    )
    .unwrap();
    run.step(&data).unwrap();
    let student = dir.path().join("student.fsck");
    run.trainer.checkpoint().unwrap().save(&student).unwrap();
    let onnx = dir.path().join("student.onnx");
    fewstep_trainer::export::export_checkpoint(&student, &onnx, false).unwrap();
    let meta = read_metadata(&std::fs::read(&onnx).unwrap()).unwrap();
    let get = |k: &str| meta.iter().find(|(mk, _)| mk == k).map(|(_, v)| v.clone());
    assert_eq!(get(format::KEY_STUDENT_STEPS).as_deref(), Some("3"));
    assert_eq!(get(format::KEY_ADDIM_XVAR), None);
    assert!(
        get("fewstep.train.mode")
            .unwrap()
            .starts_with("consistency ct T=3")
    );
}

/// A low-dimensional toy set: 1×4×4 images, each one of four sharp
/// prototypes plus a little noise (d = 16).
fn toy(n: usize) -> Dataset {
    let protos: [[f32; 16]; 4] = {
        let mut p = [[-0.8f32; 16]; 4];
        for (k, proto) in p.iter_mut().enumerate() {
            for (j, v) in proto.iter_mut().enumerate() {
                let (y, x) = (j / 4, j % 4);
                let on = match k {
                    0 => y < 2,
                    1 => x < 2,
                    2 => (x + y) % 2 == 0,
                    _ => y == x || y + x == 3,
                };
                if on {
                    *v = 0.8;
                }
            }
        }
        p
    };
    let jitter = noise(99, n * 16);
    let mut images = Vec::with_capacity(n * 16);
    for i in 0..n {
        for j in 0..16 {
            images.push(protos[i % 4][j] + 0.05 * jitter[i * 16 + j]);
        }
    }
    Dataset {
        channels: 1,
        height: 4,
        width: 4,
        images,
        labels: vec![0; n],
        class_names: Vec::new(),
        source: "toy".into(),
    }
}

/// Sliced Wasserstein-1 distance between two equal-size point sets of
/// dimension `d` (mean over random unit directions of the 1-D W1 distance).
fn sliced_wasserstein(a: &[f32], b: &[f32], d: usize, directions: usize) -> f64 {
    let n = a.len() / d;
    assert_eq!(b.len(), a.len());
    let dirs = noise(4242, directions * d);
    let mut total = 0.0;
    for k in 0..directions {
        let v = &dirs[k * d..(k + 1) * d];
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let proj = |p: &[f32]| -> Vec<f64> {
            let mut out: Vec<f64> = p
                .chunks_exact(d)
                .map(|x| x.iter().zip(v).map(|(a, b)| f64::from(a * b)).sum::<f64>() / norm)
                .collect();
            out.sort_by(f64::total_cmp);
            out
        };
        let (pa, pb) = (proj(a), proj(b));
        total += pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f64>() / n as f64;
    }
    total / directions as f64
}

#[test]
fn cd_student_beats_its_teacher_at_two_steps() {
    let t0 = std::time::Instant::now();
    let data = toy(256);
    let device = Default::default();
    let mut cfg = ModelConfig::preset("tiny", 1, 4, 4).unwrap();
    cfg.attention_levels = vec![];
    // The teacher: a tiny diffusion model trained briefly on the toy set.
    let teacher_train = TrainConfig {
        steps: 300,
        batch: 32,
        lr: 3e-3,
        warmup: 20,
        ema_decay: 0.95,
        seed: 1,
        ..TrainConfig::default()
    };
    let mut teacher = Trainer::<CpuTrain>::new(cfg.clone(), teacher_train, &data, device).unwrap();
    for _ in 0..300 {
        teacher.step(&data).unwrap();
    }
    let init = teacher.checkpoint().unwrap();
    eprintln!("teacher trained in {:.1} s", t0.elapsed().as_secs_f64());
    // The 2-step CD student.
    let mut c = ccfg(ConsistencyMode::Cd, 2);
    c.teacher_steps_start = 32.0;
    c.teacher_steps_end = 32.0;
    c.anneal_iters = 0;
    let student_train = TrainConfig {
        steps: 200,
        batch: 32,
        lr: 1e-3,
        warmup: 10,
        ema_decay: 0.9,
        seed: 2,
        ..TrainConfig::default()
    };
    let mut run =
        ConsistencyTrainer::<CpuTrain>::new(&init, c, student_train, &data, None, device).unwrap();
    let before = run.eval_loss(&data, 0, 8, 123).unwrap();
    for _ in 0..200 {
        run.step(&data).unwrap();
    }
    let after = run.eval_loss(&data, 0, 8, 123).unwrap();
    eprintln!(
        "CD loss on fixed batches: {before:.4} -> {after:.4} ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    // Sample quality at 2 steps: sliced Wasserstein to the data.
    let n = 256;
    let plan = SamplingPlan::new(2, SamplerKind::Ddim).unwrap();
    assert_eq!(plan, SamplingPlan::multistep_consistency(2).unwrap());
    let teacher_samples =
        sample(&teacher.ema, &cfg, n, plan, 7, Conditioning::None, &device).unwrap();
    let student_samples = sample(
        &run.trainer.ema,
        &cfg,
        n,
        plan,
        7,
        Conditioning::None,
        &device,
    )
    .unwrap();
    let data_points = &data.images[..n * 16];
    let sw_teacher = sliced_wasserstein(&teacher_samples, data_points, 16, 64);
    let sw_student = sliced_wasserstein(&student_samples, data_points, 16, 64);
    // For scale: the teacher with more aDDIM steps.
    let many = SamplingPlan::new(16, SamplerKind::Addim).unwrap();
    let teacher_many = sample(&teacher.ema, &cfg, n, many, 7, Conditioning::None, &device).unwrap();
    let sw_many = sliced_wasserstein(&teacher_many, data_points, 16, 64);
    eprintln!(
        "sliced W1 to the data: teacher 2-step DDIM {sw_teacher:.4}, CD student 2-step {sw_student:.4}, teacher 16-step aDDIM {sw_many:.4} (total {:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(after < before, "CD loss did not fall: {before} -> {after}");
    assert!(
        sw_student < sw_teacher,
        "the 2-step student ({sw_student}) is not closer to the data than the teacher's 2-step DDIM ({sw_teacher})"
    );
}

#[test]
fn progressive_distillation_halves_per_stage_and_resumes_exactly() {
    use fewstep_trainer::algorithms::progressive::{ProgressiveTrainer, stage_file};
    use fewstep_trainer::config::{ProgressiveConfig, TrainingMode};
    let data = blobs();
    let dir = tempfile::tempdir().unwrap();
    let teacher_path = teacher_checkpoint(dir.path(), &data, 1);
    let init = Checkpoint::load(&teacher_path).unwrap();
    let pcfg = ProgressiveConfig {
        start_steps: 8,
        target_steps: 2,
        stage_iters: 2,
        teacher_sampler: SamplerKind::Addim,
        xvar_frac: 0.75,
        teacher_guidance: 1.5,
        init: teacher_path.display().to_string(),
        init_step: init.meta.step,
    };
    assert_eq!(pcfg.stages(), 2);
    let train = TrainConfig {
        batch: 3,
        lr: 1e-3,
        warmup: 1,
        seed: 5,
        ema_decay: 0.5,
        ..TrainConfig::default()
    };
    let out_full = dir.path().join("full");
    let out_split = dir.path().join("split");
    std::fs::create_dir_all(&out_full).unwrap();
    std::fs::create_dir_all(&out_split).unwrap();
    let new = |out: &Path| {
        ProgressiveTrainer::<CpuTrain>::new(
            &init,
            pcfg.clone(),
            train.clone(),
            &data,
            out,
            Default::default(),
        )
        .unwrap()
    };
    let mut full = new(&out_full);
    assert_eq!(full.trainer.train.steps, 4);
    let mode = |t: &Trainer<CpuTrain>| t.mode.student_steps(t.step);
    let mut steps_seen = Vec::new();
    let mut full_losses = Vec::new();
    for _ in 0..4 {
        full_losses.push(full.step(&data).unwrap().loss);
        steps_seen.push(mode(&full.trainer));
    }
    assert_eq!(steps_seen, vec![4, 4, 2, 2], "student steps per stage");
    assert!(stage_file(&out_full, 0).exists());
    assert!(matches!(full.trainer.mode, TrainingMode::Progressive(_)));
    // Interrupted after the stage boundary, resumed from the checkpoint.
    let mut first = new(&out_split);
    let mut losses: Vec<f32> = (0..3).map(|_| first.step(&data).unwrap().loss).collect();
    let ckpt = first.trainer.checkpoint().unwrap();
    drop(first);
    let mut resumed =
        ProgressiveTrainer::<CpuTrain>::from_checkpoint(ckpt, &out_split, Default::default())
            .unwrap();
    losses.push(resumed.step(&data).unwrap().loss);
    eprintln!("uninterrupted {full_losses:?}\nresumed       {losses:?}");
    assert!(full_losses.iter().all(|l| l.is_finite() && *l > 0.0));
    for (a, b) in full_losses.iter().zip(&losses) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
    }
}
