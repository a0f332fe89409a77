//! `KernelTuning` (issue 16 §1): the Winograd kernel choice changes the
//! speed, never the images; a kernel cache file is written, reused, and
//! ignored when damaged, foreign or unwritable. One test, because the
//! setting is process-wide.

use fewstep::{KernelTuning, Model, kernel_tuning, set_kernel_tuning};
use std::path::Path;

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/fmnist-tiny-cd4.onnx"
);
const HEADER: &str = "fewstep kernel choices 1";

fn images() -> Vec<f32> {
    let model = Model::load(TINY).expect("load the tiny model");
    assert!(
        model.winograd_convolutions().expect("plan").1 > 0,
        "no Winograd convolution to tune"
    );
    let images = model
        .generate()
        .seed(3)
        .batch(2)
        .threads(1)
        .run()
        .expect("generate");
    images.data().to_vec()
}

fn shape_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("the cache file exists");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(HEADER), "{text}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("machine ")),
        "{text}"
    );
    lines.map(str::to_string).collect()
}

#[test]
fn kernel_choice_changes_speed_not_images_and_the_cache_is_never_trusted_blindly() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_eq!(kernel_tuning(), KernelTuning::Estimate, "the default");
    let estimated = images();

    set_kernel_tuning(KernelTuning::Measure);
    assert_eq!(images(), estimated, "measured kernels, same images");

    // A cache in a directory that does not exist yet: created and filled.
    let cache = dir.path().join("sub").join("kernels.txt");
    set_kernel_tuning(KernelTuning::Cached(cache.clone()));
    assert_eq!(images(), estimated);
    let lines = shape_lines(&cache);
    assert!(!lines.is_empty(), "one line per product shape");
    for line in &lines {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 5, "m k n packing kernel: {line}");
    }
    // Reused: a second process (here, a reset state) reads it and times
    // nothing, so the file is not rewritten.
    let written = std::fs::metadata(&cache).unwrap().modified().unwrap();
    set_kernel_tuning(KernelTuning::Cached(cache.clone()));
    assert_eq!(images(), estimated);
    assert_eq!(
        std::fs::metadata(&cache).unwrap().modified().unwrap(),
        written
    );
    assert_eq!(shape_lines(&cache), lines);

    // A kernel this machine does not have: that entry is timed again and
    // replaced.
    let text = std::fs::read_to_string(&cache).unwrap();
    let first = &lines[0];
    let kernel = first.rsplit(' ').next().unwrap();
    std::fs::write(
        &cache,
        text.replacen(first.as_str(), &first.replace(kernel, "no_such_kernel"), 1),
    )
    .unwrap();
    set_kernel_tuning(KernelTuning::Cached(cache.clone()));
    assert_eq!(images(), estimated);
    let again = shape_lines(&cache);
    assert!(
        again.iter().all(|l| !l.contains("no_such_kernel")),
        "{again:?}"
    );
    assert_eq!(again.len(), lines.len());

    // Damaged, foreign, or not a cache at all: ignored and replaced.
    for bad in [
        "garbage\n".to_string(),
        text.replace("machine ", "machine another "),
        text.replace(HEADER, "fewstep kernel choices 999"),
        format!("{}1 2\n", text),
        String::new(),
    ] {
        std::fs::write(&cache, &bad).unwrap();
        set_kernel_tuning(KernelTuning::Cached(cache.clone()));
        assert_eq!(images(), estimated);
        assert_eq!(
            shape_lines(&cache).len(),
            lines.len(),
            "rewritten after {bad:?}"
        );
    }

    // A directory where the file should be, or a path under a regular file:
    // nothing can be written, the load still works.
    for unwritable in [
        dir.path().to_path_buf(),
        dir.path().join("sub/kernels.txt/x"),
    ] {
        set_kernel_tuning(KernelTuning::Cached(unwritable));
        assert_eq!(images(), estimated);
    }

    set_kernel_tuning(KernelTuning::Estimate);
    assert_eq!(kernel_tuning(), KernelTuning::Estimate);
}
