//! Every bad input gives the right typed error (never a panic).

mod common;

use common::*;
use fewstep::{GenerateError, LoadError, Model, SamplerChoice};
use prost::Message;

fn spec() -> GaussSpec {
    GaussSpec::new(1, 4, 4, "v", Sched::Cosine)
}

fn load_err(p: &fewstep::pb::ModelProto) -> LoadError {
    Model::from_bytes(&p.encode_to_vec()).unwrap_err()
}

#[test]
fn missing_file() {
    let e = Model::load("/nonexistent/dir/model.onnx").unwrap_err();
    assert!(matches!(e, LoadError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/dir/model.onnx"));
}

#[test]
fn truncated_and_garbage_bytes() {
    let bytes = spec().bytes();
    for cut in [bytes.len() / 2, bytes.len() - 3, 7] {
        let e = Model::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(matches!(e, LoadError::Decode(_)), "cut {cut}: {e}");
    }
    let e = Model::from_bytes(&[]).unwrap_err();
    assert!(matches!(e, LoadError::Decode(_)), "{e}");
    let e = Model::from_bytes(b"definitely not protobuf \xff\xff\xff").unwrap_err();
    assert!(
        matches!(e, LoadError::Decode(_) | LoadError::NoGraph),
        "{e}"
    );
}

#[test]
fn every_missing_required_key_is_named() {
    for key in [
        "fewstep.format",
        "fewstep.prediction",
        "fewstep.schedule",
        "fewstep.student_steps",
        "fewstep.image",
    ] {
        let mut p = spec().build();
        set_meta(&mut p, key, None);
        match load_err(&p) {
            LoadError::MissingKey { key: k } => assert_eq!(k, key),
            e => panic!("{key}: {e}"),
        }
    }
}

#[test]
fn bad_values_are_named() {
    let cases = [
        ("fewstep.format", "one"),
        ("fewstep.prediction", "score"),
        ("fewstep.schedule", "linear"),
        ("fewstep.schedule", "shifted_cosine:-1"),
        ("fewstep.student_steps", "-2"),
        ("fewstep.image", "1,4"),
        ("fewstep.image", "1,0,4"),
        ("fewstep.num_classes", "many"),
        ("fewstep.data_range", "1,-1"),
        ("fewstep.addim_xvar", "0.1"),
        ("fewstep.addim_xvar", "0.1,-0.2"),
    ];
    for (key, value) in cases {
        let mut p = spec().build();
        set_meta(&mut p, key, Some(value));
        match load_err(&p) {
            LoadError::BadValue {
                key: k, value: v, ..
            } => {
                assert_eq!((k, v.as_str()), (key, value));
            }
            e => panic!("{key}={value}: {e}"),
        }
    }
    let mut p = spec().build();
    set_meta(&mut p, "fewstep.format", Some("2"));
    assert!(matches!(
        load_err(&p),
        LoadError::UnsupportedFormat { found: 2, .. }
    ));
    let mut p = spec().build();
    p.metadata_props.push(fewstep::pb::StringStringEntryProto {
        key: "fewstep.prediction".into(),
        value: "x".into(),
    });
    assert!(matches!(load_err(&p), LoadError::DuplicateKey { .. }));
}

#[test]
fn image_metadata_must_match_the_graph() {
    let mut p = spec().build();
    set_meta(&mut p, "fewstep.image", Some("3,4,4"));
    match load_err(&p) {
        LoadError::BadTensor { name, reason } => {
            assert_eq!(name, "z");
            assert!(reason.contains("fewstep.image"), "{reason}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn wrong_input_names_types_and_shapes() {
    // Renamed z.
    let mut p = spec().build();
    let g = p.graph.as_mut().unwrap();
    g.input[0].name = "x".into();
    for n in &mut g.node {
        for i in &mut n.input {
            if i == "z" {
                *i = "x".into();
            }
        }
    }
    assert!(matches!(
        load_err(&p),
        LoadError::UnexpectedInput { name } if name == "x"
    ));
    // t missing (replaced by a constant).
    let mut p = spec().build();
    let g = p.graph.as_mut().unwrap();
    g.input.retain(|i| i.name != "t");
    g.initializer.push(fewstep::pb::TensorProto {
        name: "t".into(),
        dims: vec![1],
        data_type: FLOAT,
        float_data: vec![0.5],
        ..Default::default()
    });
    assert!(matches!(
        load_err(&p),
        LoadError::MissingInput { name: "t" }
    ));
    // z of the wrong type.
    let mut p = spec().build();
    p.graph.as_mut().unwrap().input[0] = value_info("z", INT64, &[None, Some(1), Some(4), Some(4)]);
    assert!(matches!(load_err(&p), LoadError::BadTensor { name, .. } if name == "z"));
    // z of the wrong rank.
    let mut p = spec().build();
    p.graph.as_mut().unwrap().input[0] = value_info("z", FLOAT, &[None, Some(16)]);
    assert!(matches!(load_err(&p), LoadError::BadTensor { name, .. } if name == "z"));
    // Fixed batch.
    let mut p = spec().build();
    p.graph.as_mut().unwrap().input[1] = value_info("t", FLOAT, &[Some(1)]);
    match load_err(&p) {
        LoadError::BadTensor { name, reason } => {
            assert_eq!(name, "t");
            assert!(reason.contains("symbolic"), "{reason}");
        }
        e => panic!("{e}"),
    }
    // Two outputs.
    let mut p = spec().build();
    let g = p.graph.as_mut().unwrap();
    g.output.push(value_info(
        "alpha",
        FLOAT,
        &[None, Some(1), Some(1), Some(1)],
    ));
    assert!(matches!(load_err(&p), LoadError::OutputCount { count: 2 }));
    // Output of the wrong declared shape.
    let mut p = spec().build();
    p.graph.as_mut().unwrap().output[0] =
        value_info("out", FLOAT, &[None, Some(1), Some(4), Some(5)]);
    assert!(matches!(load_err(&p), LoadError::BadTensor { name, .. } if name == "out"));
    // Output with an undeclared shape that the network computes wrongly: the
    // graph's `alpha` ([N,1,1,1]) as the output.
    let mut p = spec().build();
    let g = p.graph.as_mut().unwrap();
    g.output[0] = fewstep::pb::ValueInfoProto {
        name: "alpha".into(),
        ..Default::default()
    };
    assert!(
        matches!(load_err(&p), LoadError::BadTensor { .. }),
        "computed shape"
    );
    // Label input without num_classes, and num_classes without a label input.
    let p = spec().conditional(2).build();
    let mut q = p.clone();
    set_meta(&mut q, "fewstep.num_classes", None);
    assert!(matches!(
        load_err(&q),
        LoadError::BadValue {
            key: "fewstep.num_classes",
            ..
        }
    ));
    let mut q = spec().build();
    set_meta(&mut q, "fewstep.num_classes", Some("4"));
    assert!(matches!(
        load_err(&q),
        LoadError::MissingInput { name: "label" }
    ));
    // No graph.
    let mut q = spec().build();
    q.graph = None;
    assert!(matches!(load_err(&q), LoadError::NoGraph));
}

#[test]
fn generation_errors() {
    let model = Model::from_bytes(&spec().bytes()).unwrap();
    let e = model.generate().steps(0).run().unwrap_err();
    assert!(matches!(
        e,
        GenerateError::Plan(fewstep::fewstep_core::PlanError::ZeroSteps)
    ));
    let e = model.generate().batch(0).run().unwrap_err();
    assert!(matches!(e, GenerateError::ZeroBatch));
    let e = model.generate().threads(0).run().unwrap_err();
    assert!(matches!(e, GenerateError::ZeroThreads));
    let e = model.generate().noise(vec![0.0; 17]).run().unwrap_err();
    assert!(
        matches!(e, GenerateError::NoiseShape { actual: 17, .. }),
        "{e}"
    );
    let e = model
        .generate()
        .noise(vec![0.0; 32])
        .batch(3)
        .run()
        .unwrap_err();
    assert!(
        matches!(e, GenerateError::NoiseShape { expected: 48, .. }),
        "{e}"
    );
    let mut nan = vec![0.0; 16];
    nan[3] = f32::NAN;
    let e = model.generate().noise(nan).run().unwrap_err();
    assert!(matches!(e, GenerateError::NoiseNotFinite));
    let e = model.generate().label(0).run().unwrap_err();
    assert!(matches!(e, GenerateError::Unconditional { what: "labels" }));
    let e = model.generate().guidance(2.0).run().unwrap_err();
    assert!(matches!(
        e,
        GenerateError::Unconditional { what: "guidance" }
    ));
    let e = fewstep::GenerateRequest::new().run().unwrap_err();
    assert!(matches!(e, GenerateError::NoModel), "{e:?}");
    assert!(e.to_string().contains("model.run"));

    let mut cm = spec();
    cm.student_steps = 4;
    let model = Model::from_bytes(&cm.bytes()).unwrap();
    let e = model.generate().steps(8).run().unwrap_err();
    assert!(e.to_string().contains("trained for 4 steps"), "{e}");
    assert!(
        model
            .generate()
            .steps(4)
            .sampler(SamplerChoice::Ddim)
            .run()
            .is_ok()
    );

    let model = Model::from_bytes(&spec().conditional(3).bytes()).unwrap();
    for bad in [-1i64, 4, 100] {
        let e = model.generate().label(bad).run().unwrap_err();
        assert!(
            matches!(e, GenerateError::LabelOutOfRange { label, num_classes: 3 } if label == bad),
            "{e}"
        );
    }
    let e = model
        .generate()
        .batch(3)
        .labels(vec![0, 1])
        .run()
        .unwrap_err();
    assert!(matches!(
        e,
        GenerateError::LabelCount {
            actual: 2,
            batch: 3
        }
    ));
    let e = model.generate().guidance(f32::NAN).run().unwrap_err();
    assert!(matches!(e, GenerateError::BadGuidance(_)));
    // num_classes is not a class (issue 19): the null label it stands for is
    // what a request without labels gets.
    for bad in [3, i64::MAX, i64::MIN] {
        let e = model.generate().label(bad).steps(2).run().unwrap_err();
        assert!(
            matches!(e, GenerateError::LabelOutOfRange { label, num_classes: 3 } if label == bad),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("give no label for unconditional samples")
        );
    }
    let e = model
        .generate()
        .batch(2)
        .labels(vec![0, 3])
        .steps(2)
        .run()
        .unwrap_err();
    assert!(matches!(e, GenerateError::LabelOutOfRange { label: 3, .. }));
    assert!(model.generate().label(2).steps(2).run().is_ok());
    assert!(model.generate().steps(2).run().is_ok());
}

#[test]
fn non_finite_network_output_is_an_error() {
    // An x-prediction "network" that divides by (t - 1): infinite at t = 1.
    let mut g = Graph::default();
    g.input("z", FLOAT, &[None, Some(1), Some(2), Some(2)]);
    g.input("t", FLOAT, &[None]);
    g.output("out", FLOAT, &[None, Some(1), Some(2), Some(2)]);
    g.scalar("one", 1.0);
    g.init_i64("shape4", &[4], &[-1, 1, 1, 1]);
    g.node("Sub", &["t", "one"], "tm1");
    g.node("Reshape", &["tm1", "shape4"], "tm1r");
    g.node("Div", &["z", "tm1r"], "out");
    let p = g.finish(&[
        ("fewstep.format", "1".into()),
        ("fewstep.prediction", "x".into()),
        ("fewstep.schedule", "cosine".into()),
        ("fewstep.student_steps", "0".into()),
        ("fewstep.image", "1,2,2".into()),
    ]);
    let model = Model::from_proto(&p, None).unwrap();
    let e = model.generate().steps(3).run().unwrap_err();
    assert!(matches!(e, GenerateError::NonFinite { step: 1, .. }), "{e}");
}

/// A model inside a bigger file (an APK asset) loads from its region, to the
/// same images as from its bytes; a region past the end is `Region`, and
/// one that cuts the model short is `Decode`.
#[test]
fn model_from_a_file_region() {
    use std::io::Write;
    let bytes = GaussSpec::new(3, 8, 8, "v", Sched::Cosine).bytes();
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(b"prefix").unwrap();
    file.write_all(&bytes).unwrap();
    file.write_all(b"suffix").unwrap();
    let len = bytes.len() as u64;
    let want = Model::from_bytes(&bytes)
        .unwrap()
        .generate()
        .batch(2)
        .seed(3)
        .threads(1)
        .run()
        .unwrap();
    let m = Model::from_file_region(&file, 6, Some(len)).expect("region loads");
    let got = m.generate().batch(2).seed(3).threads(1).run().unwrap();
    assert_eq!(want.data(), got.data());
    match Model::from_file_region(&file, 6, Some(len + 7)) {
        Err(LoadError::Region {
            offset: 6,
            len: Some(_),
            source,
        }) => {
            assert!(source.to_string().contains("bytes"), "{source}")
        }
        other => panic!("past the end: {other:?}"),
    }
    assert!(matches!(
        Model::from_file_region(&file, 6, Some(len - 1)),
        Err(LoadError::Decode(_))
    ));
    assert!(matches!(
        Model::from_file_region(&file, 6, None),
        Err(LoadError::Decode(_))
    ));
}
