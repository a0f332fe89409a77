//! Inputs the fuzzers (`fuzz/`) found that crashed the runtime, each now a
//! typed error. See docs/RELIABILITY.md.

mod common;

use common::*;
use fewstep::{LoadError, Model};
use prost::Message;

/// A graph output whose name no node computes made tract 0.23 panic
/// ("no entry found for key" in `ParsingContext::parse_graph`), found by
/// `load_model` mutations within seconds.
#[test]
fn dangling_graph_output_is_a_typed_error() {
    let mut p = GaussSpec::new(1, 4, 4, "v", Sched::Cosine).build();
    let graph = p.graph.as_mut().unwrap();
    let out = graph.output[0].name.clone();
    graph.output[0].name = format!("{out}_renamed");
    let e = Model::from_bytes(&p.encode_to_vec()).unwrap_err();
    match &e {
        LoadError::BadTensor { name, reason } => {
            assert_eq!(name, &format!("{out}_renamed"));
            assert!(reason.contains("not computed by any node"), "{e}");
        }
        _ => panic!("wrong error: {e}"),
    }
    // An empty output name too.
    let mut p = GaussSpec::new(1, 4, 4, "v", Sched::Cosine).build();
    p.graph.as_mut().unwrap().output[0].name = String::new();
    assert!(Model::from_bytes(&p.encode_to_vec()).is_err());
}
