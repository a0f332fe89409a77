//! The `fewstep` binary: generate, info, stamp, and one-line errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use prost::Message;
use tempfile::TempDir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fewstep"))
}

/// A path in the test's own temporary directory (removed when the test ends).
fn tmp(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// A failed run: non-zero exit, exactly one line on stderr naming `needle`,
/// no panic.
fn assert_fails(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(out.status.code().is_some(), "killed by a signal: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

fn write_model(dir: &TempDir, name: &str, spec: &GaussSpec) -> PathBuf {
    let path = tmp(dir, name);
    std::fs::write(&path, spec.bytes()).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_png_and_npy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = GaussSpec::new(3, 4, 4, "v", Sched::Cosine);
    let model = write_model(&dir, "m.onnx", &spec);
    let png = tmp(&dir, "out.png");
    let out = run(&[
        "generate",
        "--model",
        s(&model),
        "--steps",
        "3",
        "--seed",
        "5",
        "--batch",
        "4",
        "--out",
        s(&png),
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");

    let npy = tmp(&dir, "out.npy");
    let out = run(&[
        "generate",
        "--model",
        s(&model),
        "--steps",
        "3",
        "--seed",
        "5",
        "--batch",
        "2",
        "--out",
        s(&npy),
        "--sampler",
        "ddim",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (values, shape) = fewstep::read_npy(&npy).unwrap();
    assert_eq!(shape, vec![2, 3, 4, 4]);
    // Same as the library.
    let m = fewstep::Model::load(&model).unwrap();
    let want = m
        .generate()
        .seed(5)
        .batch(2)
        .steps(3)
        .sampler(fewstep::SamplerChoice::Ddim)
        .run()
        .unwrap();
    assert_eq!(values, want.data());

    // --noise round trip: the npy of z_1 gives the same result as the seed.
    let mut z = vec![0f32; 2 * spec.d()];
    fewstep::fewstep_core::rng::batch_noise(5, 0, spec.d(), &mut z);
    let noise = tmp(&dir, "noise.npy");
    std::fs::write(&noise, fewstep::npy_bytes(&z, &[2, 3, 4, 4])).unwrap();
    let npy2 = tmp(&dir, "out2.npy");
    let out = run(&[
        "generate",
        "--model",
        s(&model),
        "--steps",
        "3",
        "--noise",
        s(&noise),
        "--out",
        s(&npy2),
        "--sampler",
        "ddim",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fewstep::read_npy(&npy2).unwrap().0, values);
}

#[test]
fn generate_errors_are_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = GaussSpec::new(1, 4, 4, "v", Sched::Cosine);
    let model = write_model(&dir, "e.onnx", &spec);
    let out_png = tmp(&dir, "e.png");
    let (m, o) = (s(&model), s(&out_png));
    assert_fails(
        &run(&["generate", "--model", "/no/such.onnx", "--out", o]),
        "/no/such.onnx",
    );
    assert_fails(
        &run(&["generate", "--model", m, "--steps", "0", "--out", o]),
        "steps",
    );
    assert_fails(
        &run(&["generate", "--model", m, "--out", "x.jpg"]),
        ".png or .npy",
    );
    assert_fails(
        &run(&["generate", "--model", m, "--label", "1", "--out", o]),
        "unconditional",
    );
    assert_fails(
        &run(&["generate", "--model", m, "--sampler", "euler", "--out", o]),
        "euler",
    );
    assert_fails(
        &run(&["generate", "--model", m, "--batch", "0", "--out", o]),
        "batch",
    );
    assert_fails(
        &run(&["generate", "--model", m, "--threads", "0", "--out", o]),
        "thread",
    );
    assert_fails(&run(&["generate", "--model", m]), "--out");

    // Truncated model file.
    let bytes = spec.bytes();
    let trunc = tmp(&dir, "trunc.onnx");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(
        &run(&["generate", "--model", s(&trunc), "--out", o]),
        "not a valid ONNX",
    );

    // Missing key.
    let mut p = spec.build();
    set_meta(&mut p, "fewstep.schedule", None);
    let nokey = tmp(&dir, "nokey.onnx");
    std::fs::write(&nokey, p.encode_to_vec()).unwrap();
    assert_fails(
        &run(&["generate", "--model", s(&nokey), "--out", o]),
        "fewstep.schedule",
    );

    // Consistency model asked for other steps.
    let mut cm = spec.clone();
    cm.student_steps = 2;
    let cmp = write_model(&dir, "cm.onnx", &cm);
    assert_fails(
        &run(&["generate", "--model", s(&cmp), "--steps", "4", "--out", o]),
        "trained for 2 steps",
    );

    // Label out of range.
    let cond = write_model(&dir, "cond.onnx", &spec.clone().conditional(3));
    assert_fails(
        &run(&["generate", "--model", s(&cond), "--label", "7", "--out", o]),
        "label 7",
    );
    // num_classes is not a class label (the same rule as the Rust and C APIs).
    assert_fails(
        &run(&[
            "generate",
            "--model",
            s(&cond),
            "--label",
            "0,3",
            "--batch",
            "2",
            "--out",
            o,
        ]),
        "label 3 is out of range: this model has 3 classes",
    );
    assert!(
        run(&[
            "generate",
            "--model",
            s(&cond),
            "--label",
            "2",
            "--guidance",
            "2",
            "-q",
            "--out",
            o
        ])
        .status
        .success()
    );

    // A label list is taken cyclically: image i of `--label 0,2` equals
    // image i of a run with that one label (same seed, same noise).
    let npy = |labels: &str, name: &str| {
        let p = tmp(&dir, name);
        let out = run(&[
            "generate",
            "--model",
            s(&cond),
            "--label",
            labels,
            "--batch",
            "2",
            "--seed",
            "3",
            "-q",
            "--out",
            s(&p),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fewstep::read_npy(&p).unwrap().0
    };
    let (mixed, only0, only2) = (
        npy("0,2", "l02.npy"),
        npy("0", "l0.npy"),
        npy("2", "l2.npy"),
    );
    let half = mixed.len() / 2;
    assert_ne!(
        only0[half..],
        only2[half..],
        "the label must change the output"
    );
    assert_eq!(mixed[..half], only0[..half]);
    assert_eq!(mixed[half..], only2[half..]);
    assert_fails(
        &run(&[
            "generate",
            "--model",
            s(&cond),
            "--label",
            "0,5",
            "--batch",
            "2",
            "--out",
            o,
        ]),
        "label 5",
    );

    // Noise of the wrong shape, and a file that is not .npy.
    let noise = tmp(&dir, "bad_noise.npy");
    std::fs::write(&noise, fewstep::npy_bytes(&[0.0; 20], &[1, 1, 4, 5])).unwrap();
    assert_fails(
        &run(&["generate", "--model", m, "--noise", s(&noise), "--out", o]),
        "shape",
    );
    assert_fails(
        &run(&["generate", "--model", m, "--noise", m, "--out", o]),
        ".npy",
    );
    assert_fails(
        &run(&[
            "generate",
            "--model",
            m,
            "--noise",
            s(&noise),
            "--seed",
            "1",
            "--out",
            o,
        ]),
        "--seed",
    );
}

#[test]
fn info_prints_metadata_shapes_parameters_and_cost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = GaussSpec::new(3, 4, 4, "eps", Sched::Shifted(0.5));
    let model = write_model(&dir, "info.onnx", &spec);
    let out = run(&["info", s(&model)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "fewstep.prediction = eps",
        "fewstep.schedule = shifted_cosine:0.5",
        "z float32[N,3,4,4]",
        "t float32[N]",
        "out float32[N,3,4,4]",
        // mu + s2 (48 each) + scalars (ca, ce0, two_, one_, shift)
        "parameters: 101",
        "multiply-adds",
        "diffusion model",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert_fails(
        &run(&["info", "/no/such/model.onnx"]),
        "/no/such/model.onnx",
    );
}

#[test]
fn stamp_turns_a_foreign_export_into_a_fewstep_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    // An export with its input named `x` and no fewstep metadata.
    let spec = GaussSpec::new(1, 4, 4, "v", Sched::Cosine);
    let mut p = spec.build();
    p.metadata_props.clear();
    let g = p.graph.as_mut().unwrap();
    g.input[0].name = "x".into();
    for n in &mut g.node {
        for i in &mut n.input {
            if i == "z" {
                *i = "x".into();
            }
        }
    }
    let raw = tmp(&dir, "raw.onnx");
    std::fs::write(&raw, p.encode_to_vec()).unwrap();
    let stamped = tmp(&dir, "stamped.onnx");
    let (r, o) = (s(&raw), s(&stamped));
    // Unstamped: a missing-key error.
    assert_fails(&run(&["info", r]), "fewstep.format");
    // Without the rename the check fails and nothing is written.
    assert_fails(
        &run(&[
            "stamp",
            r,
            o,
            "--prediction",
            "v",
            "--schedule",
            "cosine",
            "--student-steps",
            "0",
            "--image",
            "1,4,4",
        ]),
        "`x`",
    );
    assert!(!stamped.exists());
    // Bad values.
    assert_fails(
        &run(&[
            "stamp",
            r,
            o,
            "--prediction",
            "score",
            "--schedule",
            "cosine",
            "--student-steps",
            "0",
            "--image",
            "1,4,4",
        ]),
        "--prediction",
    );
    assert_fails(
        &run(&[
            "stamp",
            r,
            o,
            "--prediction",
            "v",
            "--schedule",
            "cosine",
            "--student-steps",
            "0",
            "--image",
            "3,4,4",
            "--rename",
            "x=z",
        ]),
        "fewstep.image",
    );
    let ok = run(&[
        "stamp",
        r,
        o,
        "--prediction",
        "v",
        "--schedule",
        "cosine",
        "--student-steps",
        "0",
        "--image",
        "1,4,4",
        "--rename",
        "x=z",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let m = fewstep::Model::load(&stamped).unwrap();
    assert_eq!(m.metadata().image.to_string(), "1,4,4");
    let a = m.generate().seed(3).steps(3).run().unwrap();
    let b = fewstep::Model::from_bytes(&spec.bytes())
        .unwrap()
        .generate()
        .seed(3)
        .steps(3)
        .run()
        .unwrap();
    assert_eq!(a.data(), b.data());
}

/// `generate` with each value of `flag` (plus `extra`) gives the same bits,
/// and `bad` is refused with a message containing `expected`.
fn flag_values_agree_and_bad_one_fails(
    flag: &str,
    values: &[&str],
    extra: &[&str],
    bad: &str,
    expected: &str,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = GaussSpec::new(3, 4, 4, "v", Sched::Cosine);
    let model = write_model(&dir, "m.onnx", &spec);
    let mut outs = vec![];
    for value in values {
        let npy = tmp(&dir, &format!("{value}.npy"));
        let mut args = vec!["generate", "--model", s(&model), "--steps", "2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[flag, value, "--quiet", "--out", s(&npy)]);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outs.push(fewstep::read_npy(&npy).unwrap());
    }
    assert!(
        outs.windows(2).all(|w| w[0] == w[1]),
        "{flag}: outputs differ"
    );
    let o = tmp(&dir, "x.npy");
    assert_fails(
        &run(&["generate", "--model", s(&model), flag, bad, "--out", s(&o)]),
        expected,
    );
}

#[test]
fn conv_flag_picks_the_algorithm_and_rejects_others() {
    // This model has no 3×3 convolution: both give the same bits.
    flag_values_agree_and_bad_one_fails(
        "--conv",
        &["winograd", "direct"],
        &["--seed", "3"],
        "fft",
        "winograd or direct",
    );
}

#[test]
fn wait_flag_spin_and_sleep_give_the_same_images() {
    flag_values_agree_and_bad_one_fails(
        "--wait",
        &["spin", "sleep"],
        &["--batch", "3", "--threads", "2"],
        "busy",
        "spin or sleep",
    );
}

fn write_gray_png(path: &Path, w: u32, h: u32, pixels: &[u8]) {
    image::GrayImage::from_raw(w, h, pixels.to_vec())
        .unwrap()
        .save(path)
        .unwrap();
}

#[test]
fn generate_edits_from_png_and_npy_init_and_mask() {
    let dir = TempDir::new().unwrap();
    let mut spec = GaussSpec::new(1, 4, 4, "v", Sched::Cosine);
    spec.student_steps = 4;
    let model = write_model(&dir, "m.onnx", &spec);
    let pixels: Vec<u8> = (0..16).map(|i| (i * 16) as u8).collect();
    let init = tmp(&dir, "init.png");
    write_gray_png(&init, 4, 4, &pixels);
    // Keep the top half (black), generate the bottom half (white).
    let mask = tmp(&dir, "mask.png");
    write_gray_png(&mask, 4, 4, &[[0u8; 8], [255u8; 8]].concat());
    let out = tmp(&dir, "out.npy");
    let o = run(&[
        "generate",
        "--model",
        s(&model),
        "--init",
        s(&init),
        "--mask",
        s(&mask),
        "--strength",
        "0.5",
        "--batch",
        "2",
        "--quiet",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (values, shape) = fewstep::read_npy(&out).unwrap();
    assert_eq!(shape, vec![2, 1, 4, 4]);
    let range = fewstep::fewstep_core::format::DataRange::default();
    for (i, &v) in values.iter().enumerate() {
        let p = i % 16;
        if p < 8 {
            assert_eq!(v, range.from_u8(pixels[p]), "kept value {i}");
        }
    }

    // The same edit from .npy files: init [C,H,W], mask [H,W].
    let init_npy = tmp(&dir, "init.npy");
    let x: Vec<f32> = pixels.iter().map(|&p| range.from_u8(p)).collect();
    std::fs::write(&init_npy, fewstep::npy_bytes(&x, &[1, 4, 4])).unwrap();
    let mask_npy = tmp(&dir, "mask.npy");
    let m: Vec<f32> = (0..16).map(|i| if i < 8 { 0.0 } else { 1.0 }).collect();
    std::fs::write(&mask_npy, fewstep::npy_bytes(&m, &[4, 4])).unwrap();
    let out2 = tmp(&dir, "out2.npy");
    let o = run(&[
        "generate",
        "--model",
        s(&model),
        "--init",
        s(&init_npy),
        "--mask",
        s(&mask_npy),
        "--strength",
        "0.5",
        "--batch",
        "2",
        "--quiet",
        "--out",
        s(&out2),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fewstep::read_npy(&out2).unwrap().0, values);

    // Wrong inputs: one line each, naming the problem.
    let generate = |extra: &[&str]| {
        run(&[&["generate", "--model", s(&model), "--out", s(&out)], extra].concat())
    };
    let big = tmp(&dir, "big.png");
    write_gray_png(&big, 5, 4, &[0; 20]);
    assert_fails(
        &generate(&["--init", s(&big)]),
        "5×4 pixels, the model makes 4×4",
    );
    let bad_shape = tmp(&dir, "bad.npy");
    std::fs::write(&bad_shape, fewstep::npy_bytes(&x, &[16])).unwrap();
    assert_fails(&generate(&["--init", s(&bad_shape)]), "shape [16]");
    let bad_mask = tmp(&dir, "badmask.npy");
    std::fs::write(&bad_mask, fewstep::npy_bytes(&[2.0; 16], &[4, 4])).unwrap();
    assert_fails(
        &generate(&["--init", s(&init), "--mask", s(&bad_mask)]),
        "outside [0, 1]",
    );
    let not_png = tmp(&dir, "x.png");
    std::fs::write(&not_png, b"hello").unwrap();
    assert_fails(&generate(&["--init", s(&not_png)]), "not a PNG");
    assert_fails(&generate(&["--mask", s(&mask)]), "--init");
    assert_fails(
        &generate(&["--init", s(&init), "--strength", "1.5"]),
        "strength must be in (0, 1]",
    );
}
