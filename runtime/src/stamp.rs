//! `fewstep stamp`: turn an ONNX graph exported by any framework into a
//! fewstep model by writing the `fewstep.*` metadata (and optionally
//! renaming graph inputs), then checking the result loads.

use fewstep_core::format::{self, DataRange, ImageShape};
use fewstep_core::{Prediction, Schedule, StudentSteps};
use prost::Message;
use tract_onnx::pb;

use crate::error::LoadError;
use crate::model::Model;

/// The metadata `stamp` writes.
#[derive(Debug, Clone, PartialEq)]
pub struct StampOptions {
    /// `fewstep.prediction`.
    pub prediction: Prediction,
    /// `fewstep.schedule`.
    pub schedule: Schedule,
    /// `fewstep.student_steps`.
    pub student_steps: StudentSteps,
    /// `fewstep.image`.
    pub image: ImageShape,
    /// `fewstep.num_classes` (written when `Some`).
    pub num_classes: Option<u32>,
    /// `fewstep.data_range` (written when `Some`).
    pub data_range: Option<DataRange>,
    /// Graph inputs to rename, `(old, new)`, e.g. `("x", "z")`.
    pub renames: Vec<(String, String)>,
}

/// Renames a value everywhere it appears in a graph (inputs, outputs, node
/// inputs/outputs, value infos, initializers).
fn rename_value(graph: &mut pb::GraphProto, old: &str, new: &str) {
    let fix = |s: &mut String| {
        if s == old {
            *s = new.to_string();
        }
    };
    for v in graph
        .input
        .iter_mut()
        .chain(graph.output.iter_mut())
        .chain(graph.value_info.iter_mut())
    {
        fix(&mut v.name);
    }
    for i in &mut graph.initializer {
        fix(&mut i.name);
    }
    for n in &mut graph.node {
        n.input.iter_mut().for_each(fix);
        n.output.iter_mut().for_each(fix);
    }
}

/// Stamps a decoded model in place and checks that the result loads as a
/// fewstep model (`model_dir` resolves external weights).
pub fn stamp(
    proto: &mut pb::ModelProto,
    opts: &StampOptions,
    model_dir: Option<&str>,
) -> Result<Model, LoadError> {
    let graph = proto.graph.as_mut().ok_or(LoadError::NoGraph)?;
    for (old, new) in &opts.renames {
        if !graph.input.iter().any(|i| &i.name == old) {
            return Err(LoadError::BadTensor {
                name: old.clone(),
                reason: "no graph input has this name (cannot rename it)".into(),
            });
        }
        if graph.input.iter().any(|i| &i.name == new) {
            return Err(LoadError::BadTensor {
                name: new.clone(),
                reason: "a graph input already has this name".into(),
            });
        }
        rename_value(graph, old, new);
    }
    let mut keys = vec![
        (format::KEY_FORMAT, format::FORMAT_VERSION.to_string()),
        (format::KEY_PREDICTION, opts.prediction.to_string()),
        (format::KEY_SCHEDULE, opts.schedule.to_string()),
        (format::KEY_STUDENT_STEPS, opts.student_steps.to_string()),
        (format::KEY_IMAGE, opts.image.to_string()),
    ];
    if let Some(k) = opts.num_classes {
        keys.push((format::KEY_NUM_CLASSES, k.to_string()));
    }
    if let Some(r) = opts.data_range {
        keys.push((format::KEY_DATA_RANGE, r.to_string()));
    }
    proto
        .metadata_props
        .retain(|e| !keys.iter().any(|(k, _)| *k == e.key));
    for (key, value) in keys {
        proto.metadata_props.push(pb::StringStringEntryProto {
            key: key.to_string(),
            value,
        });
    }
    Model::from_proto(proto, model_dir)
}

/// Encodes a model to protobuf bytes.
pub fn encode(proto: &pb::ModelProto) -> Vec<u8> {
    proto.encode_to_vec()
}
