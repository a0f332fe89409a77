//! The `fewstep-train` binary end to end at tiny size: train on an idx
//! dataset, resume, export; and clear errors (never a panic) on bad input.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use tract_onnx::prelude::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fewstep-train"))
}

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

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "command failed:\n{err}");
    err
}

fn fails_with(out: Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
}

fn train_args(data: &Path, run: &Path, steps: &str) -> Vec<String> {
    [
        "diffusion",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--preset",
        "tiny",
        "--class-cond",
        "--steps",
        steps,
        "--batch",
        "4",
        "--sample-every",
        "2",
        "--sample-steps",
        "2",
        "--sample-count",
        "4",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn train_resume_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    idx_dataset(&data, 10);
    let run = dir.path().join("run");
    ok(bin().args(train_args(&data, &run, "2")).output().unwrap());
    for f in [
        "checkpoint.fsck",
        "log.csv",
        "loss.png",
        "samples.png",
        "samples/step_0000002.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // A second run into the same directory without --resume is refused.
    fails_with(
        bin().args(train_args(&data, &run, "2")).output().unwrap(),
        "--resume",
    );
    let mut args = train_args(&data, &run, "4");
    args.push("--resume".into());
    ok(bin().args(args).output().unwrap());
    let csv = std::fs::read_to_string(run.join("log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    let onnx = dir.path().join("m.onnx");
    ok(bin()
        .args([
            "export",
            "--ckpt",
            run.to_str().unwrap(),
            "--out",
            onnx.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let bytes = std::fs::read(&onnx).unwrap();
    let meta = fewstep_trainer::export::onnx::read_metadata(&bytes).unwrap();
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("fewstep.num_classes"), Some("2"));
    assert_eq!(get("fewstep.image"), Some("1,8,8"));
    assert_eq!(get("fewstep.train.steps"), Some("4"));
    assert!(get("fewstep.train.dataset").unwrap().starts_with("idx:"));
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the export")
        .into_optimized()
        .expect("tract optimises the export");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fails_with(
        bin()
            .args(train_args(Path::new("/nonexistent/data"), &run, "1"))
            .output()
            .unwrap(),
        "does not exist",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_with(
        bin().args(train_args(&empty, &run, "1")).output().unwrap(),
        "no PNG images",
    );
    fails_with(
        bin()
            .args([
                "export",
                "--ckpt",
                "/nonexistent/run",
                "--out",
                "/tmp/x.onnx",
            ])
            .output()
            .unwrap(),
        "cannot read checkpoint",
    );
    // 9x9 images cannot be halved by the tiny preset's one downsampling.
    let odd = dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    let mut bytes = vec![0, 0, 8, 3];
    for d in [2u32, 9, 9] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend(std::iter::repeat_n(0u8, 2 * 81));
    std::fs::write(odd.join("train-images-idx3-ubyte"), bytes).unwrap();
    let mut args = train_args(&odd, &run, "1");
    args.retain(|a| a != "--class-cond");
    fails_with(bin().args(args).output().unwrap(), "cannot be halved");
}
