//! Builds C programs against libfewstep (static and dynamic) and runs them:
//! `examples/c/generate.c`, `ffi/tests/c/errors.c` (every error path,
//! cancellation, memory budget, 4 threads on one model) and
//! `ffi/tests/c/concurrency.c` (concurrent callers mixing every request
//! setting on one model, bit-identical to a serial run; also under
//! helgrind), under valgrind when
//! it is installed. Also compiles the header as C99 and C++ with -Wall -Werror.
//!
//! Another processor (`scripts/arm64.sh`): `FEWSTEP_C_CC` (a cross compiler),
//! `FEWSTEP_C_LIB_DIR` (that target's libfewstep.a / .so) and
//! `FEWSTEP_C_RUNNER` (an emulator, e.g. `qemu-aarch64-static`) build and run
//! every C program for it; valgrind is then not used.
use std::path::{Path, PathBuf};
use std::process::Command;

use fewstep_runtime::pb;
use fewstep_runtime::pb::tensor_shape_proto::{Dimension, dimension};

const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where libfewstep.a and libfewstep.so are. Cargo builds this package's
/// library with every crate type before its integration tests (it has an
/// rlib), into `target/<profile>/deps`, beside this executable: use those.
/// Only if they are missing, build them (same profile and target directory).
/// A plain `cargo build -p fewstep-ffi` resolves other features than
/// `cargo test --workspace` and so compiles tract a second time (seen in
/// CI's test stage).
fn lib_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FEWSTEP_C_LIB_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("target/<profile>/deps");
    if deps.join("libfewstep.a").exists() && deps.join("libfewstep.so").exists() {
        return deps.to_path_buf();
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = dir.parent().expect("target dir");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "fewstep-ffi", "--lib"])
            .arg("--manifest-path")
            .arg(repo().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        run(&mut cmd);
    });
    assert!(
        dir.join("libfewstep.a").exists() && dir.join("libfewstep.so").exists(),
        "libfewstep.a/.so not found in {}",
        dir.display()
    );
    dir.to_path_buf()
}

/// The test's own temporary directory, removed when the test ends (the
/// statically linked debug programs are hundreds of MB each).
fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fewstep-ffi-test-")
        .tempdir()
        .expect("create temp dir")
}

fn value_info(name: &str, elem: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute,
        ..Default::default()
    }
}

fn scalar(name: &str, v: f32) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        data_type: FLOAT,
        float_data: vec![v],
        ..Default::default()
    }
}

/// A small x-prediction "network": `out = 0.5 z + 0.1 t (+ 0.2 label)`,
/// `[N,3,4,4]`, with a symbolic batch.
fn tiny_model(student_steps: u32, num_classes: u32) -> Vec<u8> {
    let img = [Some(3), Some(4), Some(4)];
    let zdims: Vec<Option<i64>> = std::iter::once(None).chain(img).collect();
    let mut inputs = vec![
        value_info("z", FLOAT, &zdims),
        value_info("t", FLOAT, &[None]),
    ];
    let mut nodes = vec![
        node("Reshape", &["t", "shape4"], "t4", vec![]),
        node("Mul", &["z", "half"], "zh", vec![]),
        node("Mul", &["t4", "tenth"], "tt", vec![]),
        node(
            "Add",
            &["zh", "tt"],
            if num_classes > 0 { "base" } else { "out" },
            vec![],
        ),
    ];
    if num_classes > 0 {
        inputs.push(value_info("label", INT64, &[None]));
        let to = pb::AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: i64::from(FLOAT),
            ..Default::default()
        };
        nodes.push(node("Cast", &["label"], "labf", vec![to]));
        nodes.push(node("Reshape", &["labf", "shape4"], "lab4", vec![]));
        nodes.push(node("Mul", &["lab4", "fifth"], "labw", vec![]));
        nodes.push(node("Add", &["base", "labw"], "out", vec![]));
    }
    let graph = pb::GraphProto {
        name: "tiny".into(),
        node: nodes,
        initializer: vec![
            pb::TensorProto {
                name: "shape4".into(),
                data_type: INT64,
                dims: vec![4],
                int64_data: vec![-1, 1, 1, 1],
                ..Default::default()
            },
            scalar("half", 0.5),
            scalar("tenth", 0.1),
            scalar("fifth", 0.2),
        ],
        input: inputs,
        output: vec![value_info("out", FLOAT, &zdims)],
        ..Default::default()
    };
    let meta = [
        ("fewstep.format", "1".to_string()),
        ("fewstep.prediction", "x".into()),
        ("fewstep.schedule", "cosine".into()),
        ("fewstep.student_steps", student_steps.to_string()),
        ("fewstep.image", "3,4,4".into()),
        ("fewstep.num_classes", num_classes.to_string()),
    ];
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 18,
        }],
        producer_name: "fewstep-ffi-tests".into(),
        graph: Some(graph),
        metadata_props: meta
            .iter()
            .map(|(k, v)| pb::StringStringEntryProto {
                key: k.to_string(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    };
    fewstep_runtime::encode(&model)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Compiles `src` twice: against the static and the dynamic library.
fn build(src: &Path, name: &str, dir: &Path) -> [PathBuf; 2] {
    let lib = lib_dir();
    let include = repo().join("include");
    let stat = dir.join(format!("{name}-static"));
    run(Command::new(c_compiler())
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-D_POSIX_C_SOURCE=200809L",
            "-pthread",
            "-I",
        ])
        .arg(&include)
        .arg(src)
        .arg(lib.join("libfewstep.a"))
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-o",
        ])
        .arg(&stat));
    let dynamic = dir.join(format!("{name}-dynamic"));
    run(Command::new(c_compiler())
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-D_POSIX_C_SOURCE=200809L",
            "-pthread",
            "-I",
        ])
        .arg(&include)
        .arg(src)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lfewstep", "-lm", "-o"])
        .arg(&dynamic));
    [stat, dynamic]
}

/// The C compiler of the target the programs run on (`cc`: this machine).
fn c_compiler() -> std::ffi::OsString {
    std::env::var_os("FEWSTEP_C_CC").unwrap_or_else(|| "cc".into())
}

/// A command that runs the C program `exe` (through `FEWSTEP_C_RUNNER`, an
/// emulator, when set).
fn program(exe: &Path) -> Command {
    match std::env::var_os("FEWSTEP_C_RUNNER") {
        Some(runner) => {
            let mut cmd = Command::new(runner);
            cmd.arg(exe);
            cmd
        }
        None => Command::new(exe),
    }
}

fn have_valgrind() -> bool {
    if std::env::var_os("FEWSTEP_C_RUNNER").is_some() {
        return false;
    }
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs a program, under valgrind (memcheck: no invalid access, no
/// definite/indirect leaks) when it is installed.
fn run_checked(exe: &Path, args: &[&Path], valgrind: bool) -> String {
    if valgrind {
        run(Command::new("valgrind")
            .args([
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,indirect",
                "--show-leak-kinds=definite,indirect",
                "-q",
            ])
            .arg(exe)
            .args(args))
    } else {
        run(program(exe).args(args))
    }
}

#[test]
fn header_compiles_as_c99_and_cpp() {
    let tmp = work_dir();
    let dir = tmp.path();
    let tu = dir.join("header_only.c");
    std::fs::write(
        &tu,
        "#include \"fewstep.h\"\nint main(void) { return FEWSTEP_OK; }\n",
    )
    .expect("write");
    let include = repo().join("include");
    run(Command::new("cc")
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
            "-I",
        ])
        .arg(&include)
        .arg(&tu));
    run(Command::new("c++")
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
            "-x",
            "c++",
            "-I",
        ])
        .arg(&include)
        .arg(&tu));
}

#[test]
fn example_program_generates_a_ppm() {
    let tmp = work_dir();
    let dir = tmp.path();
    let model = dir.join("cm.onnx");
    std::fs::write(&model, tiny_model(2, 0)).expect("write model");
    let valgrind = have_valgrind();
    if !valgrind {
        eprintln!("note: valgrind not installed; running without it");
    }
    for exe in build(&repo().join("examples/c/generate.c"), "generate", dir) {
        let ppm = dir.join("out.ppm");
        let log = run_checked(
            &exe,
            &[&model, &ppm, Path::new("3"), Path::new("5")],
            valgrind,
        );
        assert!(
            log.contains("RGBA8 buffer: 720 bytes, row stride 64"),
            "3 images of 4x4 as RGBA8 with 64-byte rows:\n{log}"
        );
        assert!(
            log.contains("step 1/2") && log.contains("step 2/2"),
            "progress printed:\n{log}"
        );
        assert!(
            log.contains("preview 1/2: 144 bytes") && log.contains("preview 2/2: 144 bytes"),
            "RGB8 previews of 3 images of 4x4:\n{log}"
        );
        assert!(
            log.contains("cancelled from the UI thread: cancelled after step 1"),
            "cancel from another thread:\n{log}"
        );
        let bytes = std::fs::read(&ppm).expect("ppm written");
        let header = b"P6\n12 4\n255\n";
        assert!(bytes.starts_with(header), "PPM header");
        assert_eq!(bytes.len(), header.len() + 12 * 4 * 3);
        // A missing model is reported with a status and message, exit 1.
        let out = program(&exe)
            .arg(dir.join("missing.onnx"))
            .arg(&ppm)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("FEWSTEP_ERROR_IO"));
    }
}

/// Builds the C test `ffi/tests/c/{name}.c` (static and dynamic), writes
/// the tiny models `(student_steps, num_classes)` it takes, and runs it with
/// those model paths followed by the work directory (under valgrind when
/// available); every check must pass.
fn run_c_test(name: &str, models: &[(u32, u32)], with_dir: bool) {
    let tmp = work_dir();
    let dir = tmp.path();
    let paths: Vec<PathBuf> = models
        .iter()
        .enumerate()
        .map(|(i, &(steps, classes))| {
            let p = dir.join(format!("{name}-{i}.onnx"));
            std::fs::write(&p, tiny_model(steps, classes)).expect("write model");
            p
        })
        .collect();
    let mut args: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    if with_dir {
        args.push(dir);
    }
    let valgrind = have_valgrind();
    let src = repo().join(format!("ffi/tests/c/{name}.c"));
    for exe in build(&src, name, dir) {
        let log = run_checked(&exe, &args, valgrind);
        assert!(log.contains("0 failures"), "{log}");
        assert!(!log.contains("FAIL"), "{log}");
    }
}

#[test]
fn error_paths_cancellation_and_threads() {
    // An unconditional consistency model (T = 2), a conditional diffusion
    // model (3 classes).
    run_c_test("errors", &[(2, 0), (0, 3)], false);
}

#[test]
fn loading_from_a_path_bytes_or_a_file_descriptor() {
    run_c_test("loading", &[(2, 0)], true);
}

#[test]
fn kernel_cache_is_written_reused_and_replaced_when_damaged() {
    // The generated tiny models have no convolution Winograd would take:
    // the 45 k-parameter Fashion-MNIST model has.
    let tmp = work_dir();
    let model = repo().join("runtime/tests/data/fmnist-tiny-cd4.onnx");
    let src = repo().join("ffi/tests/c/kernel_cache.c");
    for exe in build(&src, "kernel_cache", tmp.path()) {
        // A fresh work directory (and cache) per build of the program.
        let work = exe.with_extension("work");
        std::fs::create_dir_all(&work).expect("work dir");
        // Not under valgrind: timing a dozen kernels there takes minutes,
        // and the other C tests check this library's memory.
        let log = run_checked(&exe, &[model.as_path(), work.as_path()], false);
        assert!(log.contains("0 failures"), "{log}");
        assert!(!log.contains("FAIL"), "{log}");
    }
}

#[test]
fn readme_platform_snippets_compile_as_c() {
    let readme = std::fs::read_to_string(repo().join("ffi/README.md")).expect("read README");
    let marker = "<!-- compiled by ffi/tests/c_api.rs -->\n```c\n";
    let tmp = work_dir();
    let mut compiled = 0;
    for (i, part) in readme.split(marker).skip(1).enumerate() {
        let code = part.split("\n```").next().expect("a closing fence");
        let tu = tmp.path().join(format!("snippet{i}.c"));
        std::fs::write(&tu, code).expect("write snippet");
        run(Command::new(c_compiler())
            .args([
                "-std=c99",
                "-D_POSIX_C_SOURCE=200809L",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-pedantic",
                "-fsyntax-only",
                "-I",
            ])
            .arg(repo().join("include"))
            .arg("-I")
            .arg(repo().join("ffi/tests/c/platform"))
            .arg(&tu));
        compiled += 1;
    }
    assert!(compiled >= 1, "no marked C snippet found in ffi/README.md");
}

/// `identical` generations of `log`'s summary line matched the serial run,
/// and nothing else happened.
fn assert_all_identical(log: &str, identical: usize) {
    assert!(
        log.contains(&format!(
            ": {identical} identical to the serial run, 0 different, 0 threads with errors"
        )),
        "{log}"
    );
}

#[test]
fn concurrent_callers_mixing_every_setting_match_a_serial_run() {
    let tmp = work_dir();
    let dir = tmp.path();
    let cm = dir.join("cm-conc.onnx");
    let cond = dir.join("cond-conc.onnx");
    std::fs::write(&cm, tiny_model(2, 0)).expect("write model");
    std::fs::write(&cond, tiny_model(2, 3)).expect("write model");
    // The previously shipped model (45 k parameters): its matrix products
    // are large enough to be split across threads, and 300 calls stay cheap.
    let tiny_cd4 = repo().join("runtime/tests/data/fmnist-tiny-cd4.onnx");
    let [stat, dynamic] = build(
        &repo().join("ffi/tests/c/concurrency.c"),
        "concurrency",
        dir,
    );
    // The independent test's case (issue 19): 6 threads on that
    // model, thread counts 0, 1, 2, 3 by turns, batches 1-4, RGB8 and f32,
    // labels, guidance, progress callbacks and cancellations. With shared
    // pools 2-6 of these 300 calls panicked, in every run; the shared
    // library runs fewer (the same code, linked differently).
    // Under an emulator (scripts/arm64.sh) a 4-step image of that model
    // takes ~11 s: 6 threads x 16 generations of it ran over 14 minutes
    // there, 2 x 16 over 7 (measured, both stopped unfinished). Emulated, every setting is
    // still cycled through, on the tiny models below (25 generations; the
    // longest period is 15, pool_wait's), and this model only confirms that
    // calls split across threads agree: 2 threads x 4 generations on the
    // static library, x 2 on the shared one (the same code, linked
    // differently).
    let emulated = std::env::var_os("FEWSTEP_C_RUNNER").is_some();
    let (threads, counts, tiny) = if emulated {
        (2usize, [4usize, 2], (4usize, 25usize))
    } else {
        (6, [50, 20], (8, 100))
    };
    for (exe, generations) in [(&stat, counts[0]), (&dynamic, counts[1])] {
        let log = run(program(exe).arg(&tiny_cd4).args([
            threads.to_string(),
            generations.to_string(),
            "mix".into(),
        ]));
        assert!(log.contains("threads per call: mixed"), "{log}");
        assert_all_identical(&log, threads * generations);
        // Tiny models, unconditional and conditional, every setting mixed
        // (the program's default).
        for model in [&cm, &cond] {
            let log = run(program(exe)
                .arg(model)
                .args([tiny.0.to_string(), tiny.1.to_string()]));
            assert!(log.contains("threads per call: mixed"), "{log}");
            assert_all_identical(&log, tiny.0 * tiny.1);
        }
    }
    if !have_valgrind() {
        eprintln!("note: valgrind not installed; skipping the helgrind run");
        return;
    }
    // Data races: helgrind on 8 threads x 100 generations of the mixed
    // requests, one thread inside each call. No suppressions:
    // the run must be clean. (With several threads per call a call runs on
    // a rayon pool, whose lock-free crossbeam queues helgrind cannot see
    // through: it then reports hundreds of false races inside
    // rayon_core/crossbeam, so that mode is not checked here; see
    // docs/RELIABILITY.md.)
    let log = run(Command::new("valgrind")
        .args(["--tool=helgrind", "--error-exitcode=99", "-q"])
        .arg(&dynamic)
        .arg(&cond)
        .args(["8", "100", "1"]));
    assert_all_identical(&log, 800);
}

#[test]
fn editing_labels_noise_previews_and_cancel_tokens() {
    // A conditional 4-step consistency model, an unconditional diffusion model.
    run_c_test("editing", &[(4, 3), (0, 0)], false);
}

#[test]
fn pixels_with_stride_and_memory_estimate() {
    run_c_test("pixels", &[(2, 0)], false);
}
