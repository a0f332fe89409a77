//! Loading and validating a fewstep ONNX model (`docs/MODEL_FORMAT.md`), and the
//! cached, concrete-shape tract plans that run it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use fewstep_core::format::{self, DataRange, ImageShape};
use fewstep_core::{Prediction, Schedule, StudentSteps};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::LoadError;
use crate::model_file::RegionError;
use crate::winograd::ConvAlgorithm;

/// ONNX `TensorProto.DataType` codes used here.
pub(crate) const ONNX_FLOAT: i32 = 1;
pub(crate) const ONNX_INT64: i32 = 7;
pub(crate) const ONNX_FLOAT16: i32 = 10;

/// The sampler-relevant metadata of a model, parsed with `fewstep_core::format`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// `fewstep.prediction`.
    pub prediction: Prediction,
    /// `fewstep.schedule`.
    pub schedule: Schedule,
    /// `fewstep.student_steps` (0 = diffusion model).
    pub student_steps: StudentSteps,
    /// `fewstep.image`.
    pub image: ImageShape,
    /// `fewstep.num_classes` (0 = unconditional).
    pub num_classes: u32,
    /// `fewstep.data_range` (default `-1,1`).
    pub data_range: DataRange,
    /// `fewstep.addim_xvar`, when present.
    pub addim_xvar: Option<Vec<f32>>,
    /// Every `metadata_props` entry as written, in file order.
    pub all: Vec<(String, String)>,
}

impl Metadata {
    /// Parses and validates `metadata_props` (every required key, every value).
    pub fn from_props(props: &[pb::StringStringEntryProto]) -> Result<Self, LoadError> {
        let mut map: HashMap<&str, &str> = HashMap::new();
        for e in props {
            if map.insert(e.key.as_str(), e.value.as_str()).is_some()
                && e.key.starts_with("fewstep.")
            {
                return Err(LoadError::DuplicateKey { key: e.key.clone() });
            }
        }
        let get = |key: &'static str| map.get(key).copied().ok_or(LoadError::MissingKey { key });
        let bad = |key: &'static str, value: &str, reason: String| LoadError::BadValue {
            key,
            value: value.to_string(),
            reason,
        };

        let v = get(format::KEY_FORMAT)?;
        let version =
            format::parse_u32(v).map_err(|e| bad(format::KEY_FORMAT, v, e.to_string()))?;
        if version != format::FORMAT_VERSION {
            return Err(LoadError::UnsupportedFormat {
                found: version,
                supported: format::FORMAT_VERSION,
            });
        }
        let v = get(format::KEY_PREDICTION)?;
        let prediction = Prediction::parse(v.trim())
            .map_err(|e| bad(format::KEY_PREDICTION, v, e.to_string()))?;
        let v = get(format::KEY_SCHEDULE)?;
        let schedule =
            Schedule::parse(v.trim()).map_err(|e| bad(format::KEY_SCHEDULE, v, e.to_string()))?;
        let v = get(format::KEY_STUDENT_STEPS)?;
        let student_steps = StudentSteps(
            format::parse_u32(v).map_err(|e| bad(format::KEY_STUDENT_STEPS, v, e.to_string()))?,
        );
        let v = get(format::KEY_IMAGE)?;
        let image: ImageShape = v
            .parse()
            .map_err(|e: format::ValueError| bad(format::KEY_IMAGE, v, e.to_string()))?;
        if image.len().is_none_or(|n| n > (1 << 31)) {
            return Err(bad(format::KEY_IMAGE, v, "image too large".into()));
        }
        let num_classes = match map.get(format::KEY_NUM_CLASSES) {
            None => 0,
            Some(v) => {
                format::parse_u32(v).map_err(|e| bad(format::KEY_NUM_CLASSES, v, e.to_string()))?
            }
        };
        if num_classes == u32::MAX {
            return Err(bad(
                format::KEY_NUM_CLASSES,
                &num_classes.to_string(),
                "too many classes".into(),
            ));
        }
        let data_range = match map.get(format::KEY_DATA_RANGE) {
            None => DataRange::default(),
            Some(v) => v
                .parse()
                .map_err(|e: format::ValueError| bad(format::KEY_DATA_RANGE, v, e.to_string()))?,
        };
        let addim_xvar = match map.get(format::KEY_ADDIM_XVAR) {
            None => None,
            Some(v) => {
                let n = format::xvar_table_len(v)
                    .map_err(|e| bad(format::KEY_ADDIM_XVAR, v, e.to_string()))?;
                let mut table = Vec::with_capacity(n);
                for x in format::parse_xvar_table(v) {
                    table.push(x.map_err(|e| bad(format::KEY_ADDIM_XVAR, v, e.to_string()))?);
                }
                Some(table)
            }
        };
        Ok(Metadata {
            prediction,
            schedule,
            student_steps,
            image,
            num_classes,
            data_range,
            addim_xvar,
            all: props
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect(),
        })
    }

    /// `C*H*W`.
    pub fn image_len(&self) -> usize {
        // Checked at parse time.
        self.image.len().unwrap_or(0)
    }
}

/// A dimension of a graph tensor as declared in the ONNX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named symbolic size.
    Symbolic(String),
    /// Not declared.
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Symbolic(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// A graph input or output as declared in the ONNX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDecl {
    /// Its name.
    pub name: String,
    /// ONNX element type code (1 = float32, 7 = int64), 0 when undeclared.
    pub elem_type: i32,
    /// Its dimensions, `None` when the rank is undeclared.
    pub dims: Option<Vec<Dim>>,
}

impl TensorDecl {
    fn from_value_info(v: &pb::ValueInfoProto) -> Self {
        let mut elem_type = 0;
        let mut dims = None;
        if let Some(pb::type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            elem_type = t.elem_type;
            dims = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                            Dim::Fixed(*v)
                        }
                        Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                            Dim::Symbolic(p.clone())
                        }
                        None => Dim::Unknown,
                    })
                    .collect()
            });
        }
        TensorDecl {
            name: v.name.clone(),
            elem_type,
            dims,
        }
    }

    /// `float32[N,3,32,32]`-style description.
    pub fn describe(&self) -> String {
        let ty = match self.elem_type {
            ONNX_FLOAT => "float32".to_string(),
            ONNX_INT64 => "int64".to_string(),
            ONNX_FLOAT16 => "float16".to_string(),
            0 => "?".to_string(),
            other => format!("onnx-type-{other}"),
        };
        match &self.dims {
            None => format!("{ty}[?]"),
            Some(d) => format!(
                "{ty}[{}]",
                d.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// The interface of a graph: its non-initializer inputs and its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphInterface {
    /// Inputs in file order.
    pub inputs: Vec<TensorDecl>,
    /// Outputs in file order.
    pub outputs: Vec<TensorDecl>,
}

impl GraphInterface {
    /// Reads the interface of a graph (initializers listed as inputs, as
    /// older exporters do, are skipped).
    pub fn of(graph: &pb::GraphProto) -> Self {
        let inits: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|i| i.name.as_str()).collect();
        GraphInterface {
            inputs: graph
                .input
                .iter()
                .filter(|i| !inits.contains(i.name.as_str()))
                .map(TensorDecl::from_value_info)
                .collect(),
            outputs: graph
                .output
                .iter()
                .map(TensorDecl::from_value_info)
                .collect(),
        }
    }

    /// Checks the interface against the format's table for a model of
    /// `image` with `num_classes` classes.
    pub fn validate(&self, image: ImageShape, num_classes: u32) -> Result<(), LoadError> {
        for i in &self.inputs {
            if ![format::INPUT_Z, format::INPUT_T, format::INPUT_LABEL].contains(&i.name.as_str()) {
                return Err(LoadError::UnexpectedInput {
                    name: i.name.clone(),
                });
            }
        }
        let find = |name: &'static str| self.inputs.iter().find(|i| i.name == name);
        let z = find(format::INPUT_Z).ok_or(LoadError::MissingInput {
            name: format::INPUT_Z,
        })?;
        let t = find(format::INPUT_T).ok_or(LoadError::MissingInput {
            name: format::INPUT_T,
        })?;
        let want = [
            i64::from(image.channels),
            i64::from(image.height),
            i64::from(image.width),
        ];
        check_decl(z, ONNX_FLOAT, Some(&want))?;
        check_decl(t, ONNX_FLOAT, Some(&[]))?;
        match (find(format::INPUT_LABEL), num_classes) {
            (Some(l), k) if k > 0 => check_decl(l, ONNX_INT64, Some(&[]))?,
            (Some(_), _) => {
                return Err(LoadError::BadValue {
                    key: format::KEY_NUM_CLASSES,
                    value: "0".into(),
                    reason:
                        "the graph has a `label` input, so the model needs fewstep.num_classes >= 1"
                            .into(),
                });
            }
            (None, k) if k > 0 => {
                return Err(LoadError::MissingInput {
                    name: format::INPUT_LABEL,
                });
            }
            (None, _) => {}
        }
        if self.outputs.len() != 1 {
            return Err(LoadError::OutputCount {
                count: self.outputs.len(),
            });
        }
        check_decl(&self.outputs[0], ONNX_FLOAT, Some(&want))?;
        Ok(())
    }
}

/// Checks a declared tensor: element type (when declared), and a shape of
/// `[N] ++ rest` with a non-fixed batch `N` (when declared).
fn check_decl(d: &TensorDecl, elem: i32, rest: Option<&[i64]>) -> Result<(), LoadError> {
    let bad = |reason: String| LoadError::BadTensor {
        name: d.name.clone(),
        reason,
    };
    if d.elem_type != 0 && d.elem_type != elem {
        let want = if elem == ONNX_FLOAT {
            "float32"
        } else {
            "int64"
        };
        return Err(bad(format!("must be {want}, is {}", d.describe())));
    }
    if let (Some(dims), Some(rest)) = (&d.dims, rest) {
        let expect = format!(
            "[N{}]",
            rest.iter().map(|v| format!(",{v}")).collect::<String>()
        );
        if dims.len() != rest.len() + 1 {
            return Err(bad(format!(
                "must have shape {expect}, is {}",
                d.describe()
            )));
        }
        if let Dim::Fixed(n) = dims[0] {
            return Err(bad(format!(
                "the batch dimension must be symbolic (N), it is fixed to {n}; export with a dynamic batch axis"
            )));
        }
        for (got, want) in dims[1..].iter().zip(rest) {
            if let Dim::Fixed(g) = got
                && g != want
            {
                return Err(bad(format!(
                    "must have shape {expect} (from fewstep.image), is {}",
                    d.describe()
                )));
            }
        }
    }
    Ok(())
}

/// Batched plans (batch sizes other than 1) kept besides the batch-1 plan.
/// Each holds its own packed weights, about twice the model's f32 weights
/// (+28 MiB for the shipped model): an app asking for many batch sizes
/// must not grow by a plan per size. The least recently used is dropped
/// (a request still running on it keeps it alive until it returns).
pub(crate) const BATCHED_PLANS_KEPT: usize = 2;

/// The compiled network: a decluttered symbolic-batch graph and concrete
/// plans per batch size, built on first use: the batch-1 plan (per-image
/// execution) for the model's life, at most [`BATCHED_PLANS_KEPT`] others.
#[derive(Debug)]
pub(crate) struct Network {
    typed: TypedModel,
    batch_symbol: Symbol,
    /// Positions of `z`, `t`, `label` among the typed model's inputs.
    pub(crate) input_order: Vec<InputKind>,
    /// How plans compute 3×3 convolutions (`crate::winograd`).
    conv: ConvAlgorithm,
    plans: Mutex<Plans>,
}

/// The cached plans, by batch size.
#[derive(Debug, Default)]
struct Plans {
    single: Option<Arc<TypedRunnableModel>>,
    /// Most recently used last.
    batched: Vec<(usize, Arc<TypedRunnableModel>)>,
}

impl Plans {
    fn get(&mut self, batch: usize) -> Option<Arc<TypedRunnableModel>> {
        if batch == 1 {
            return self.single.clone();
        }
        let i = self.batched.iter().position(|(b, _)| *b == batch)?;
        let entry = self.batched.remove(i);
        let plan = entry.1.clone();
        self.batched.push(entry);
        Some(plan)
    }

    fn insert(&mut self, batch: usize, plan: Arc<TypedRunnableModel>) {
        if batch == 1 {
            self.single = Some(plan);
            return;
        }
        self.batched.retain(|(b, _)| *b != batch);
        if self.batched.len() >= BATCHED_PLANS_KEPT {
            self.batched.remove(0);
        }
        self.batched.push((batch, plan));
    }

    fn clear(&mut self) {
        *self = Plans::default();
    }

    /// Batch sizes with a plan, 1 first, then least to most recently used.
    fn sizes(&self) -> Vec<usize> {
        self.single
            .as_ref()
            .map(|_| 1)
            .into_iter()
            .chain(self.batched.iter().map(|(b, _)| *b))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputKind {
    Z,
    T,
    Label,
}

/// What fewstep does to a concrete graph before tract optimises it: a SiLU
/// after a group norm is folded into it (`crate::group_norm`), and with
/// [`ConvAlgorithm::Winograd`] the eligible 3×3 convolutions become
/// Winograd convolutions (`crate::winograd`). Returns (SiLUs fused,
/// convolutions rewritten). Public (hidden) so that the benchmark and the
/// profiling examples run the graph the runtime runs.
pub fn rewrite_graph(model: &mut TypedModel, conv: ConvAlgorithm) -> TractResult<(usize, usize)> {
    let fused = crate::group_norm::fuse_silu(model)?;
    let convs = match conv {
        ConvAlgorithm::Winograd => crate::winograd::rewrite(model)?,
        ConvAlgorithm::Direct => 0,
    };
    Ok((fused, convs))
}

/// The name the graph gives the first dimension of its `z` input, or `N`.
fn batch_dim_name(proto: &pb::ModelProto) -> String {
    use pb::tensor_shape_proto::dimension::Value;
    proto
        .graph
        .as_ref()
        .and_then(|g| g.input.iter().find(|i| i.name == format::INPUT_Z))
        .and_then(|z| {
            let pb::type_proto::Value::TensorType(t) = z.r#type.as_ref()?.value.as_ref()?;
            t.shape.as_ref()?.dim.first()?.value.clone()
        })
        .and_then(|v| match v {
            Value::DimParam(name) if !name.is_empty() => Some(name),
            _ => None,
        })
        .unwrap_or_else(|| "N".into())
}

fn tract_err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Tract(format!("{e:#}"))
}

impl Network {
    fn build(
        proto: &pb::ModelProto,
        model_dir: Option<&str>,
        meta: &Metadata,
    ) -> Result<Self, LoadError> {
        let fused = crate::graph::torch_group_norm::fuse(proto);
        let proto = fused.as_ref().unwrap_or(proto);
        let onnx = crate::group_norm::onnx();
        let parsed = onnx
            .parse(proto, model_dir)
            .map_err(|e| LoadError::Tract(format!("{e:#}")))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(LoadError::Tract(format!(
                "unresolved inputs: {:?}",
                parsed.unresolved_inputs
            )));
        }
        let mut model = parsed.model;
        // The batch symbol is the graph's own name for it (PyTorch's dynamo
        // exporter writes e.g. `s13` or `batch`, and repeats it in the
        // shapes it declares inside the graph), `N` when it names none.
        let batch_symbol = model.sym(&batch_dim_name(proto));
        let n = TDim::Sym(batch_symbol.clone());
        let img = meta.image;
        let mut input_order = Vec::new();
        let outlets: Vec<OutletId> = model.input_outlets().map_err(tract_err)?.to_vec();
        for (ix, outlet) in outlets.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let (kind, fact) = match name.as_str() {
                format::INPUT_Z => (
                    InputKind::Z,
                    f32::fact([
                        n.clone(),
                        TDim::from(img.channels as usize),
                        TDim::from(img.height as usize),
                        TDim::from(img.width as usize),
                    ]),
                ),
                format::INPUT_T => (InputKind::T, f32::fact([n.clone()])),
                format::INPUT_LABEL => (InputKind::Label, i64::fact([n.clone()])),
                other => {
                    return Err(LoadError::UnexpectedInput {
                        name: other.to_string(),
                    });
                }
            };
            model
                .set_input_fact(ix, fact.into())
                .map_err(|e| LoadError::BadTensor {
                    name: name.clone(),
                    reason: format!("{e:#}"),
                })?;
            input_order.push(kind);
        }
        let typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(tract_err)?;
        let out_fact = typed.output_fact(0).map_err(tract_err)?;
        let out_name = typed
            .output_outlets()
            .ok()
            .and_then(|o| o.first().map(|o| typed.node(o.node).name.clone()))
            .unwrap_or_else(|| "output".into());
        if out_fact.datum_type != f32::datum_type() {
            return Err(LoadError::BadTensor {
                name: out_name,
                reason: format!("must be float32, is {:?}", out_fact.datum_type),
            });
        }
        let want: [TDim; 4] = [
            n,
            TDim::from(img.channels as usize),
            TDim::from(img.height as usize),
            TDim::from(img.width as usize),
        ];
        if out_fact.shape.rank() != 4
            || out_fact
                .shape
                .iter()
                .zip(want.iter())
                .any(|(g, w)| g.to_i64().is_ok() && w.to_i64().is_ok() && g != w)
        {
            return Err(LoadError::BadTensor {
                name: out_name,
                reason: format!(
                    "the network computes shape {:?}; fewstep.image needs [N,{}]",
                    out_fact.shape, img
                ),
            });
        }
        let net = Network {
            typed,
            batch_symbol,
            input_order,
            conv: ConvAlgorithm::default(),
            plans: Mutex::new(Plans::default()),
        };
        // Build the batch-1 plan now: a graph tract cannot optimise is a load
        // error, not a surprise at the first generate call.
        net.plan(1)?;
        Ok(net)
    }

    /// The plan for a concrete batch size (cached).
    pub(crate) fn plan(&self, batch: usize) -> Result<Arc<TypedRunnableModel>, LoadError> {
        if let Some(p) = self.lock_plans().get(batch) {
            return Ok(p);
        }
        // Built outside the lock: another thread may build the same plan
        // concurrently; either result is equivalent.
        let concrete = self.concrete(batch)?;
        let plan = self.optimize(concrete)?;
        self.lock_plans().insert(batch, plan.clone());
        Ok(plan)
    }

    /// The runnable plan of a concrete graph after [`rewrite_graph`].
    /// Should a rewrite fail, or the rewritten graph fail to optimise (a
    /// graph shape the rewrites did not foresee), the plan is tract's own
    /// graph: slower, never wrong.
    fn optimize(&self, concrete: TypedModel) -> Result<Arc<TypedRunnableModel>, LoadError> {
        let plain = |m: TypedModel| {
            m.into_optimized()
                .and_then(|m| m.into_runnable())
                .map_err(tract_err)
        };
        let mut rewritten = concrete.clone();
        match rewrite_graph(&mut rewritten, self.conv) {
            Ok((0, 0)) | Err(_) => plain(concrete),
            Ok(_) => plain(rewritten).or_else(|_| plain(concrete)),
        }
    }

    /// The decluttered graph with `N` bound to `batch`.
    pub(crate) fn concrete(&self, batch: usize) -> Result<TypedModel, LoadError> {
        let subs = HashMap::from([(self.batch_symbol.clone(), TDim::from(batch))]);
        self.typed.set_symbols(&subs).map_err(tract_err)
    }

    /// Batch sizes that have a plan now (1 first, then least to most
    /// recently used).
    pub(crate) fn planned_batches(&self) -> Vec<usize> {
        self.lock_plans().sizes()
    }

    fn lock_plans(&self) -> std::sync::MutexGuard<'_, Plans> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A loaded fewstep model. `Send + Sync`: share it (e.g. in an `Arc`) between
/// threads generating at once; every call keeps its own state.
#[derive(Debug)]
pub struct Model {
    pub(crate) meta: Metadata,
    pub(crate) interface: GraphInterface,
    pub(crate) net: Network,
    pub(crate) parameters: u64,
    pub(crate) pools: crate::exec::Pools,
    pub(crate) default_threads: Option<usize>,
    /// Bytes of the batch-1 intermediates (`crate::memory`).
    pub(crate) activation_bytes: u64,
    /// Bytes of the largest of them.
    pub(crate) largest_activation_bytes: u64,
    pub(crate) memory_budget: Option<u64>,
}

impl Model {
    /// Loads a model from a `.onnx` file (external data next to it resolves).
    /// The file is decoded as it is read: its bytes are never all in memory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // Reading /dev/zero or a FIFO would never end (or exhaust memory).
        if !file.metadata().map_err(io)?.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let proto = match crate::model_file::decode_region(&file, 0, None) {
            Ok(proto) => proto,
            Err(RegionError::Io(e)) => return Err(io(e)),
            Err(RegionError::Load(e)) => return Err(e),
        };
        drop(file);
        let dir = path.parent().and_then(|d| d.to_str());
        Self::from_proto(&proto, Some(dir.unwrap_or(".")))
    }

    /// Loads a model from `len` bytes of an open file starting at `offset`
    /// (`len` `None`: to the end of the file); what Android's
    /// `AAsset_openFileDescriptor` gives for an uncompressed asset. The
    /// bytes are decoded as they are read, never all in memory, and on Unix
    /// the file's cursor does not move. A model with external data cannot be
    /// loaded this way (there is no directory to find it in).
    pub fn from_file_region(
        file: &std::fs::File,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Self, LoadError> {
        let proto = crate::model_file::decode_region(file, offset, len).map_err(|e| match e {
            RegionError::Io(source) => LoadError::Region {
                offset,
                len,
                source,
            },
            RegionError::Load(e) => e,
        })?;
        Self::from_proto(&proto, None)
    }

    /// Loads a model from the bytes of a `.onnx` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        Self::from_proto(&decode(bytes)?, None)
    }

    /// Loads a model from a decoded `ModelProto`.
    pub fn from_proto(proto: &pb::ModelProto, dir: Option<&str>) -> Result<Self, LoadError> {
        let graph = proto.graph.as_ref().ok_or(LoadError::NoGraph)?;
        let meta = Metadata::from_props(&proto.metadata_props)?;
        let interface = GraphInterface::of(graph);
        interface.validate(meta.image, meta.num_classes)?;
        check_outputs_are_computed(graph)?;
        // tract is not written for hostile input: a graph it cannot handle
        // must be a load error, not a panic in the caller (found by fuzzing).
        let net = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Network::build(proto, dir, &meta)
        }))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            LoadError::Tract(format!("internal error while preparing the graph: {what}"))
        })??;
        let parameters = graph
            .initializer
            .iter()
            .filter(|i| [ONNX_FLOAT, ONNX_FLOAT16, 11 /* double */].contains(&i.data_type))
            .map(|i| i.dims.iter().map(|&d| d.max(0) as u64).product::<u64>())
            .sum();
        // Counted on the direct graph, plus the largest block a Winograd
        // convolution keeps in its thread's scratch (`crate::winograd`).
        let batch1 = net.concrete(1)?;
        let (activations, largest_activation_bytes) = crate::memory::activation_bytes(&batch1)?;
        let activation_bytes = activations.saturating_add(crate::winograd::scratch_bytes(&batch1));
        Ok(Model {
            meta,
            interface,
            net,
            parameters,
            pools: Default::default(),
            default_threads: None,
            activation_bytes,
            largest_activation_bytes,
            memory_budget: None,
        })
    }

    /// Sets the thread count of every generation on this model that does not
    /// set its own (default: available parallelism).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.default_threads = Some(threads);
        self
    }

    /// Sets how wide 3×3, stride-1 convolutions are computed (default:
    /// [`ConvAlgorithm::Winograd`]); other convolutions always run as tract's
    /// direct convolution. Plans built so far are dropped and rebuilt on use.
    pub fn with_conv_algorithm(mut self, conv: ConvAlgorithm) -> Self {
        if self.net.conv != conv {
            self.net.conv = conv;
            self.net.lock_plans().clear();
        }
        self
    }

    /// How this model computes 3×3 convolutions.
    pub fn conv_algorithm(&self) -> ConvAlgorithm {
        self.net.conv
    }

    /// The parsed metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The graph's inputs and output as declared in the file.
    pub fn interface(&self) -> &GraphInterface {
        &self.interface
    }

    /// Number of floating-point weights (f32 and f16 initializers).
    pub fn parameter_count(&self) -> u64 {
        self.parameters
    }

    /// Whether the model takes class labels.
    pub fn is_conditional(&self) -> bool {
        self.meta.num_classes > 0
    }

    /// How many of the graph's convolutions run as Winograd F(2×2, 3×3) when
    /// Winograd is used (see [`ConvAlgorithm`]), and how many it has.
    pub fn winograd_convolutions(&self) -> Result<(usize, usize), LoadError> {
        let batch1 = self.net.concrete(1)?;
        Ok(crate::winograd::count(&batch1))
    }

    /// Estimated multiply-adds of one network evaluation of one image, from
    /// tract's cost model of the batch-1 graph (before kernel selection).
    pub fn macs_per_image(&self) -> Result<u64, LoadError> {
        let model = self.net.concrete(1)?;
        let mut total: u64 = 0;
        for node in model.eval_order().map_err(tract_err)? {
            let inputs = model.node_input_facts(node).map_err(tract_err)?;
            let costs = model.node(node).op.cost(&inputs).map_err(tract_err)?;
            for (kind, amount) in costs {
                if let tract_onnx::tract_core::ops::Cost::FMA(_) = kind
                    && let Ok(v) = amount.to_i64()
                {
                    total += v.max(0) as u64;
                }
            }
        }
        Ok(total)
    }

    /// Whether the optimised batch-1 plan computes in f32 only (no f16
    /// arithmetic left after constant folding of f16 weights).
    pub fn computes_in_f32(&self) -> Result<bool, LoadError> {
        let plan = self.net.plan(1)?;
        let m = plan.model();
        Ok(m.nodes().iter().all(|n| {
            n.op_is::<tract_onnx::tract_core::ops::konst::Const>()
                || n.outputs
                    .iter()
                    .all(|o| o.fact.datum_type != f16::datum_type())
        }))
    }

    /// Builds the concrete plan for a batch size now (it is otherwise built on
    /// first use): the batched execution mode runs one plan of the whole batch
    /// (twice the batch with guidance). The model keeps the batch-1 plan and
    /// the two most recently used others; each costs about twice the f32
    /// weights ([`MemoryEstimate::plan`](crate::MemoryEstimate::plan)).
    pub fn prepare_batch(&self, batch: usize) -> Result<(), LoadError> {
        self.net.plan(batch).map(|_| ())
    }

    /// Batch sizes whose plan is built and kept now: 1 first, then the
    /// batched ones from least to most recently used.
    #[doc(hidden)]
    pub fn planned_batches(&self) -> Vec<usize> {
        self.net.planned_batches()
    }
}

/// Every graph output must be a graph input, an initializer or a node output
/// (tract 0.23 panics on a dangling output name).
fn check_outputs_are_computed(graph: &pb::GraphProto) -> Result<(), LoadError> {
    for o in &graph.output {
        let known = graph.input.iter().any(|i| i.name == o.name)
            || graph.initializer.iter().any(|i| i.name == o.name)
            || graph.node.iter().any(|n| n.output.contains(&o.name));
        if !known || o.name.is_empty() {
            return Err(LoadError::BadTensor {
                name: o.name.clone(),
                reason: "graph output is not computed by any node".into(),
            });
        }
    }
    Ok(())
}

/// Decodes ONNX protobuf bytes.
pub fn decode(bytes: &[u8]) -> Result<pb::ModelProto, LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Decode("empty input".into()));
    }
    pb::ModelProto::decode(bytes).map_err(|e| LoadError::Decode(e.to_string()))
}
