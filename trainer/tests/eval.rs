//! `fewstep-train classifier` and `fewstep-train eval` end to end at tiny
//! size: a classifier on a synthetic idx dataset (bars: horizontal = class 0,
//! vertical = class 1, with a t10k test split) and on a PNG folder, a tiny
//! exported diffusion model, eval's JSON line, its independence of --batch,
//! and one-line errors on bad input.

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fewstep-train"))
}

fn write_idx(path: &Path, dims: &[u32], payload: &[u8]) {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    let mut enc = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
    enc.write_all(&bytes).unwrap();
    enc.finish().unwrap();
}

/// 8x8 images: class 0 a horizontal bar, class 1 a vertical bar, at a
/// position that cycles with the index (offset so train and test differ).
fn bars(n: u32, offset: u32) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let class = (i % 2) as u8;
        let pos = ((i / 2 + offset) % 8) as usize;
        for y in 0..8 {
            for x in 0..8 {
                let on = if class == 0 { y == pos } else { x == pos };
                // A little texture so images are not all identical per position.
                let noise = ((i as usize * 31 + y * 7 + x * 13) % 40) as u8;
                pixels.push(if on { 215 + noise } else { noise });
            }
        }
        labels.push(class);
    }
    (pixels, labels)
}

fn idx_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let (p, l) = bars(200, 0);
    write_idx(&dir.join("train-images-idx3-ubyte.gz"), &[200, 8, 8], &p);
    write_idx(&dir.join("train-labels-idx1-ubyte.gz"), &[200], &l);
    let (p, l) = bars(40, 3);
    write_idx(&dir.join("t10k-images-idx3-ubyte.gz"), &[40, 8, 8], &p);
    write_idx(&dir.join("t10k-labels-idx1-ubyte.gz"), &[40], &l);
}

/// A PNG folder with two class sub-folders of 10 RGB 8x8 images each.
fn png_dataset(dir: &Path) {
    for (class, colour) in [("blue", [0u8, 0, 255]), ("red", [255, 0, 0])] {
        let sub = dir.join(class);
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..10u8 {
            let rgb: Vec<u8> = (0..64)
                .flat_map(|_| colour.map(|c| c / 2 + i * 8))
                .collect();
            let file = std::fs::File::create(sub.join(format!("{i:02}.png"))).unwrap();
            let mut enc = png::Encoder::new(file, 8, 8);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(&rgb).unwrap();
        }
    }
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "command failed:\n{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with exactly one stderr line, `error: ...` holding `needle`.
fn one_line_error(out: Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn finite(v: &Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {v}"));
    assert!(x.is_finite(), "{key} = {x}");
    x
}

#[test]
fn classifier_and_eval_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (data, clf, teacher, model) = (p("data"), p("clf"), p("run"), p("m.onnx"));
    idx_dataset(Path::new(&data));

    // Classifier: bars are trivially separable, so a working network and
    // split reach high test accuracy in 4 short epochs.
    let out = ok(run(&[
        "classifier",
        "--data",
        &data,
        "--out",
        &clf,
        "--epochs",
        "4",
        "--batch",
        "16",
        "--quiet",
    ]));
    let line = out
        .lines()
        .find(|l| l.starts_with("test accuracy: "))
        .unwrap_or_else(|| panic!("no accuracy line:\n{out}"));
    assert!(line.ends_with("% (40 images)"), "{line}");
    let pct: f64 = line["test accuracy: ".len()..line.find('%').unwrap()]
        .parse()
        .unwrap();
    assert!(pct >= 90.0, "{line}");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&clf).join("classifier.json")).unwrap())
            .unwrap();
    assert_eq!(meta["test_images"], 40);
    assert_eq!(meta["train_images"], 200);
    assert!((meta["test_accuracy"].as_f64().unwrap() * 100.0 - pct).abs() < 0.01);
    // A second run into the same folder is refused rather than overwriting.
    one_line_error(
        run(&["classifier", "--data", &data, "--out", &clf]),
        "already exists",
    );

    // A tiny class-conditional diffusion model, exported.
    ok(run(&[
        "diffusion",
        "--data",
        &data,
        "--out",
        &teacher,
        "--preset",
        "tiny",
        "--class-cond",
        "--steps",
        "2",
        "--batch",
        "4",
        "--sample-every",
        "2",
        "--sample-steps",
        "2",
        "--sample-count",
        "4",
        "--quiet",
    ]));
    ok(run(&["export", "--ckpt", &teacher, "--out", &model]));

    // Eval in chunks of 5, with the floor and a grid.
    let (results, grid) = (p("results.jsonl"), p("grid.png"));
    // `eval` with these flags, `set` replacing or adding flag values.
    let eval = |set: &[(&str, &str)], switches: &[&str]| {
        let mut flags: Vec<(&str, &str)> = vec![
            ("--model", &model),
            ("--classifier", &clf),
            ("--data", &data),
            ("--n", "12"),
            ("--steps", "2"),
            ("--threads", "1"),
            ("--batch", "5"),
            ("--results", &results),
        ];
        for &(k, v) in set {
            match flags.iter_mut().find(|f| f.0 == k) {
                Some(f) => f.1 = v,
                None => flags.push((k, v)),
            }
        }
        let mut args = vec!["eval", "--quiet"];
        for (k, v) in flags {
            args.extend([k, v]);
        }
        args.extend_from_slice(switches);
        run(&args)
    };
    let report = ok(eval(
        &[
            ("--name", "chunked"),
            ("--grid", &grid),
            ("--grid-count", "6"),
        ],
        &["--floor"],
    ));
    eprintln!("{line}\n{report}");
    for needle in ["KID x1e3", "FID", "floor", "label agreement", "ms/sample"] {
        assert!(report.contains(needle), "report lacks {needle}:\n{report}");
    }
    let png = std::fs::read(&grid).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // Same seed in one chunk: image k has the same noise and label, so every
    // number but the timings is the same.
    ok(eval(&[("--batch", "12"), ("--name", "whole")], &[]));

    let text = std::fs::read_to_string(&results).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    let (a, b) = (&rows[0], &rows[1]);
    assert_eq!(a["name"], "chunked");
    assert_eq!(a["n"], 12);
    assert_eq!(a["steps"], 2);
    assert_eq!(a["sampler"], "addim");
    assert_eq!(a["student_steps"], 0);
    assert_eq!(a["threads"], 1);
    assert_eq!(a["reference_n"], 40);
    assert_eq!(a["kid_subset_size"], 12);
    assert_eq!(a["kid_subsets"], 100);
    assert_eq!(a["grid"], grid.as_str());
    assert!(finite(a, "kid_std") >= 0.0);
    finite(a, "kid_mean");
    assert!(finite(a, "fid") >= -1e-9);
    assert!(finite(a, "ms_per_sample") > 0.0);
    assert_eq!(a["floor_n"], 12);
    finite(a, "floor_kid_mean");
    finite(a, "floor_kid_std");
    assert!(finite(a, "floor_fid") >= -1e-9);
    let hist: Vec<u64> = a["class_hist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist.iter().sum::<u64>(), 12);
    let agree = finite(a, "label_agreement");
    assert!((0.0..=1.0).contains(&agree));
    // Without --floor and --grid those fields are null.
    for key in [
        "floor_n",
        "floor_kid_mean",
        "floor_kid_std",
        "floor_fid",
        "grid",
    ] {
        assert!(b[key].is_null(), "{key}: {b}");
    }
    for key in ["kid_mean", "kid_std", "fid", "label_agreement"] {
        let (x, y) = (finite(a, key), finite(b, key));
        assert!(
            (x - y).abs() <= 1e-9 * x.abs().max(1e-12),
            "{key}: batch 5 gave {x}, batch 12 gave {y}"
        );
    }
    assert_eq!(a["class_hist"], b["class_hist"]);

    // Bad inputs: one line each, nothing appended.
    one_line_error(
        eval(&[("--model", "/nonexistent/m.onnx")], &[]),
        "cannot read model file",
    );
    one_line_error(eval(&[("--n", "0")], &[]), "--n must be >= 2");
    one_line_error(eval(&[("--steps", "0")], &[]), "--steps must be >= 1");
    one_line_error(eval(&[("--batch", "0")], &[]), "--batch must be >= 1");
    one_line_error(
        eval(&[("--classifier", "/nonexistent/clf")], &[]),
        "cannot read classifier",
    );
    one_line_error(
        eval(&[("--results", "/nonexistent/dir/r.jsonl")], &[]),
        "does not exist",
    );
    one_line_error(eval(&[("--sampler", "euler")], &[]), "euler");

    // A classifier of 3x8x8 PNGs (every 10th image tests) cannot score a
    // 1x8x8 model.
    let (pngs, rgb_clf) = (p("pngs"), p("rgb-clf"));
    png_dataset(Path::new(&pngs));
    let out = ok(run(&[
        "classifier",
        "--data",
        &pngs,
        "--out",
        &rgb_clf,
        "--image-size",
        "8",
        "--image-channels",
        "3",
        "--epochs",
        "1",
        "--quiet",
    ]));
    assert!(out.contains("% (2 images)"), "{out}");
    let meta: Value = serde_json::from_slice(
        &std::fs::read(Path::new(&rgb_clf).join("classifier.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["config"]["channels"], 3);
    assert!(meta["split"].as_str().unwrap().contains("every 10th"));
    one_line_error(
        eval(&[("--classifier", &rgb_clf)], &[]),
        "takes 3x8x8 images but the model",
    );
    assert_eq!(std::fs::read_to_string(&results).unwrap(), text);
}
