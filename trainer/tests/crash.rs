//! Crash-safe training: `fewstep-train diffusion` (tiny preset, tiny data, a
//! checkpoint after every step) is SIGKILLed several times, at seeded random
//! moments and right while a checkpoint is being written. After every kill
//! the checkpoint on disk (if one was written yet) loads; the next run
//! resumes from it, despite temporary files the killed writer left behind.
//! The final state (step, per-step loss log, weights, EMA, optimiser-driven
//! trajectory) equals an uninterrupted run's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burn::module::Module;
use fewstep_trainer::Cpu;
use fewstep_trainer::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use fewstep_trainer::export::onnx::tensor_values;
use fewstep_trainer::network::model::UNet;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

const STEPS: u64 = 48;

fn idx_dataset(dir: &Path, n: u32) {
    let write = |name: &str, dims: &[u32], payload: &[u8]| {
        let mut bytes = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(payload);
        let mut enc = GzEncoder::new(
            std::fs::File::create(dir.join(name)).unwrap(),
            Compression::fast(),
        );
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
    };
    let pixels: Vec<u8> = (0..n * 64)
        .map(|i| if (i % 64) / 8 == (i / 64) % 8 { 255 } else { 0 })
        .collect();
    write("train-images-idx3-ubyte.gz", &[n, 8, 8], &pixels);
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    write("train-labels-idx1-ubyte.gz", &[n], &labels);
}

/// Starts training (resuming when the run directory holds a checkpoint).
fn spawn(data: &Path, run: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fewstep-train"));
    cmd.args(["diffusion", "--data"])
        .arg(data)
        .arg("--out")
        .arg(run)
        .args(["--preset", "tiny", "--class-cond", "--batch", "4"])
        .args(["--steps", &STEPS.to_string(), "--seed", "5"])
        .args(["--sample-every", "1", "--sample-steps", "1"])
        .args(["--sample-count", "2", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if run.join(CHECKPOINT_FILE).exists() {
        cmd.arg("--resume");
    }
    cmd.spawn().expect("fewstep-train starts")
}

fn finish(child: Child) {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "training failed:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// SplitMix64: the seeded kill schedule.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn tmp_files(run: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(run)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Every float of the model, EMA as exported (weights), in order.
fn weights(ckpt: &Checkpoint) -> (Vec<f32>, Vec<f32>) {
    struct V(Vec<f32>);
    impl burn::module::ModuleVisitor<Cpu> for V {
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::tensor::Tensor<Cpu, D>>,
        ) {
            self.0.extend(tensor_values(&p.val()).unwrap());
        }
    }
    let device = Default::default();
    let fresh = || UNet::<Cpu>::new(&ckpt.meta.model, &device);
    let mut model = V(Vec::new());
    ckpt.load_model::<Cpu>(fresh(), &device)
        .unwrap()
        .visit(&mut model);
    let mut ema = V(Vec::new());
    ckpt.load_ema::<Cpu>(fresh(), &device)
        .unwrap()
        .visit(&mut ema);
    (model.0, ema.0)
}

#[test]
fn sigkill_during_training_and_checkpointing_then_resume_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    idx_dataset(&data, 16);

    // The uninterrupted reference, timed to place the random kills.
    let reference = dir.path().join("reference");
    let t0 = Instant::now();
    finish(spawn(&data, &reference));
    let full = t0.elapsed();
    let reference = Checkpoint::load(&reference).unwrap();
    assert_eq!(reference.meta.step, STEPS);
    assert_eq!(reference.meta.log.len(), STEPS as usize);
    eprintln!("uninterrupted run: {STEPS} steps in {full:?}");

    let run = dir.path().join("killed");
    let mut rng = Rng(0x5EED_0008);
    let mut kills = 0;
    let mut kills_mid_write = 0;
    let mut steps_seen = Vec::new();
    for round in 0..8 {
        let mut child = spawn(&data, &run);
        let killed_mid_write = if round % 2 == 0 {
            // At a seeded random moment in the first quarter of a full
            // run's time (start-up included), so that several rounds fit.
            std::thread::sleep(full.mul_f64(rng.below(1000) as f64 / 4000.0));
            false
        } else {
            // While a checkpoint is being written: as soon as its temporary
            // file appears (plus a seeded 0..2 ms), unless the run ends first.
            let before = tmp_files(&run);
            let deadline = Instant::now() + full * 2;
            let mut seen = false;
            while Instant::now() < deadline {
                if tmp_files(&run).iter().any(|p| !before.contains(p)) {
                    seen = true;
                    std::thread::sleep(Duration::from_micros(rng.below(2000)));
                    break;
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            seen
        };
        // SIGKILL (std's Child::kill on Unix); a run that already ended is
        // reported by try_wait.
        let ended = child.try_wait().unwrap();
        if ended.is_none() {
            child.kill().unwrap();
            kills += 1;
            kills_mid_write += usize::from(killed_mid_write);
        }
        child.wait().unwrap();

        // Whatever was on disk when the process died must load.
        let ckpt_file = run.join(CHECKPOINT_FILE);
        if ckpt_file.exists() {
            let ckpt = Checkpoint::load(&run).unwrap_or_else(|e| {
                panic!("round {round}: checkpoint corrupt after SIGKILL: {e:#}")
            });
            assert!(ckpt.meta.step >= 1 && ckpt.meta.step <= STEPS);
            assert_eq!(ckpt.meta.log.len() as u64, ckpt.meta.step);
            // Its log is a prefix of the uninterrupted run's.
            assert_eq!(
                ckpt.meta.log[..],
                reference.meta.log[..ckpt.meta.step as usize],
                "round {round}"
            );
            steps_seen.push(ckpt.meta.step);
        } else {
            steps_seen.push(0);
        }
    }
    eprintln!(
        "{kills} SIGKILLs ({kills_mid_write} while a checkpoint was being written); checkpoint step after each round: {steps_seen:?}; leftover temporary files: {}",
        tmp_files(&run).len()
    );
    assert!(kills >= 6, "only {kills} runs were killed");
    assert!(
        kills_mid_write >= 2,
        "only {kills_mid_write} kills mid-write"
    );

    // Resume to the end.
    finish(spawn(&data, &run));
    // The writers killed mid-write left temporary files; the next
    // successful checkpoint removed them.
    assert_eq!(tmp_files(&run), Vec::<PathBuf>::new(), "stale temporaries");
    let resumed = Checkpoint::load(&run).unwrap();
    assert_eq!(resumed.meta.step, STEPS);
    assert_eq!(resumed.meta.log, reference.meta.log);
    let (model_a, ema_a) = weights(&reference);
    let (model_b, ema_b) = weights(&resumed);
    assert_eq!(model_a.len(), model_b.len());
    assert!(!model_a.is_empty());
    assert_eq!(
        model_a, model_b,
        "model weights differ from the uninterrupted run"
    );
    assert_eq!(
        ema_a, ema_b,
        "EMA weights differ from the uninterrupted run"
    );
}
