//! ONNX export of the U-Net (Burn has no exporter): the graph is written op
//! for op with `tract_onnx::pb` message types and encoded with `prost`.
//!
//! Design choices dictated by `docs/MODEL_FORMAT.md` and by tract:
//! - opset 21 (`GroupNormalization` with per-channel scale/bias), IR version 10;
//! - inputs `z` `[N, C, H, W]` f32, `t` `[N]` f32, `label` `[N]` i64 when
//!   class-conditional; `N` is the only symbolic dimension;
//! - linear layers as `MatMul` + `Add` (no `Gemm`); `Resize` with constant
//!   `scales`; reshapes with `0` (copy) for the batch dimension;
//! - `--f16`: weights stored as f16 initializers followed by a `Cast` to f32.

use crate::config::ModelConfig;
use crate::network::model::{Attention, ResBlock, UNet, time_frequencies};
use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use fewstep_core::StudentSteps;
use fewstep_core::format::{
    DataRange, FORMAT_VERSION, INPUT_LABEL, INPUT_T, INPUT_Z, KEY_ADDIM_XVAR, KEY_DATA_RANGE,
    KEY_FORMAT, KEY_IMAGE, KEY_NUM_CLASSES, KEY_PREDICTION, KEY_SCHEDULE, KEY_STUDENT_STEPS,
    xvar_table_len,
};
use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TypeProto, ValueInfoProto, attribute_proto,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// The default-domain opset the export targets.
pub const OPSET: i64 = 21;
/// ONNX IR version matching opset 21.
pub const IR_VERSION: i64 = 10;
/// Name of the graph output.
pub const OUTPUT: &str = "out";

/// Export options.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Store weights as f16 (computed in f32 after a `Cast`).
    pub f16: bool,
    /// Extra `fewstep.*` metadata (provenance), written after the required keys.
    pub extra_metadata: Vec<(String, String)>,
    /// `fewstep.student_steps`: `T` of a multistep consistency (or
    /// progressively distilled) model, 0 for a diffusion model.
    pub student_steps: u32,
    /// `fewstep.addim_xvar`: the empirical aDDIM table, if measured.
    pub addim_xvar: Option<Vec<f32>>,
}

/// Writes the graph of `model` (configured by `cfg`) as ONNX bytes.
pub fn export<B: Backend>(
    model: &UNet<B>,
    cfg: &ModelConfig,
    opts: &ExportOptions,
) -> Result<Vec<u8>> {
    cfg.validate()?;
    let mut g = Graph {
        nodes: Vec::new(),
        inits: Vec::new(),
        next: 0,
        f16: opts.f16,
    };
    let out = g.unet(model, cfg)?;
    let (c, h, w) = (cfg.channels as i64, cfg.height as i64, cfg.width as i64);
    let batch = || dim_param("N");
    let mut inputs = vec![
        value_info(
            INPUT_Z,
            DataType::Float,
            vec![batch(), dim(c), dim(h), dim(w)],
        ),
        value_info(INPUT_T, DataType::Float, vec![batch()]),
    ];
    if cfg.num_classes > 0 {
        inputs.push(value_info(INPUT_LABEL, DataType::Int64, vec![batch()]));
    }
    // Rename the last node's output to the graph output.
    if let Some(last) = g.nodes.last_mut()
        && last.output.first().map(String::as_str) == Some(out.as_str())
    {
        last.output[0] = OUTPUT.to_string();
    } else {
        bail!("internal: the graph's last node does not produce the output");
    }
    let graph = GraphProto {
        node: g.nodes,
        name: "fewstep_unet".into(),
        initializer: g.inits,
        input: inputs,
        output: vec![value_info(
            OUTPUT,
            DataType::Float,
            vec![batch(), dim(c), dim(h), dim(w)],
        )],
        ..Default::default()
    };
    let mut metadata = vec![
        (KEY_FORMAT.to_string(), FORMAT_VERSION.to_string()),
        (KEY_PREDICTION.to_string(), cfg.prediction()?.to_string()),
        (KEY_SCHEDULE.to_string(), cfg.schedule()?.to_string()),
        (
            KEY_STUDENT_STEPS.to_string(),
            StudentSteps(opts.student_steps).to_string(),
        ),
        (KEY_IMAGE.to_string(), cfg.image_shape().to_string()),
        (KEY_DATA_RANGE.to_string(), DataRange::default().to_string()),
    ];
    if cfg.num_classes > 0 {
        metadata.push((KEY_NUM_CLASSES.to_string(), cfg.num_classes.to_string()));
    }
    if let Some(table) = &opts.addim_xvar {
        let text = table
            .iter()
            .map(f32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // Written only in a form the runtime's parser accepts.
        xvar_table_len(&text).map_err(|e| anyhow::anyhow!("{KEY_ADDIM_XVAR} {text:?}: {e}"))?;
        metadata.push((KEY_ADDIM_XVAR.to_string(), text));
    }
    for (k, v) in &opts.extra_metadata {
        if metadata.iter().any(|(mk, _)| mk == k) {
            bail!("metadata key {k} is written by the exporter itself");
        }
        metadata.push((k.clone(), v.clone()));
    }
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "fewstep-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

fn dim(v: i64) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
    }
}

fn dim_param(name: &str) -> tensor_shape_proto::Dimension {
    tensor_shape_proto::Dimension {
        denotation: String::new(),
        value: Some(tensor_shape_proto::dimension::Value::DimParam(name.into())),
    }
}

fn value_info(
    name: &str,
    ty: DataType,
    dims: Vec<tensor_shape_proto::Dimension>,
) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: ty as i32,
                shape: Some(pb::TensorShapeProto { dim: dims }),
            })),
        }),
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Reads a tensor's values as f32.
pub fn tensor_values<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Result<Vec<f32>> {
    t.to_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading weights: {e:?}"))
}

fn param_values<B: Backend, const D: usize>(
    p: &Param<Tensor<B, D>>,
) -> Result<(Vec<i64>, Vec<f32>)> {
    let t = p.val();
    let dims = t.dims().iter().map(|&d| d as i64).collect();
    Ok((dims, tensor_values(&t)?))
}

struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    next: usize,
    f16: bool,
}

impl Graph {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// An f32 constant that stays f32 (shapes, scales, frequencies).
    fn const_f32(&mut self, hint: &str, dims: &[i64], data: Vec<f32>) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn const_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.inits.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A trained weight: f32, or f16 + `Cast` with `--f16`.
    fn weight(&mut self, hint: &str, dims: &[i64], data: Vec<f32>) -> Result<String> {
        if !self.f16 {
            return Ok(self.const_f32(hint, dims, data));
        }
        if !fewstep_core::f16::fits_f16(&data) {
            bail!("weight {hint} overflows f16: export without --f16");
        }
        let mut half = vec![fewstep_core::f16::f16::ZERO; data.len()];
        fewstep_core::f16::f32_to_f16(&data, &mut half)
            .map_err(|e| anyhow::anyhow!("f16 conversion: {e}"))?;
        let name = self.fresh(&format!("{hint}_f16"));
        self.inits.push(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Float16 as i32,
            name: name.clone(),
            raw_data: half
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect(),
            ..Default::default()
        });
        Ok(self.node(
            "Cast",
            &[&name],
            vec![attr_int("to", DataType::Float as i64)],
        ))
    }

    fn param<B: Backend, const D: usize>(
        &mut self,
        hint: &str,
        p: &Param<Tensor<B, D>>,
    ) -> Result<String> {
        let (dims, data) = param_values(p)?;
        self.weight(hint, &dims, data)
    }

    fn silu(&mut self, x: &str) -> String {
        let s = self.node("Sigmoid", &[x], vec![]);
        self.node("Mul", &[x, &s], vec![])
    }

    fn linear<B: Backend>(&mut self, l: &Linear<B>, x: &str) -> Result<String> {
        let w = self.param("linear_w", &l.weight)?;
        let mut y = self.node("MatMul", &[x, &w], vec![]);
        if let Some(b) = &l.bias {
            let b = self.param("linear_b", b)?;
            y = self.node("Add", &[&y, &b], vec![]);
        }
        Ok(y)
    }

    fn conv<B: Backend>(&mut self, c: &Conv2d<B>, x: &str) -> Result<String> {
        let w = self.param("conv_w", &c.weight)?;
        let pads = match &c.padding {
            PaddingConfig2d::Valid => [0, 0, 0, 0],
            PaddingConfig2d::Explicit(top, left, bottom, right) => {
                [*top as i64, *left as i64, *bottom as i64, *right as i64]
            }
            other => bail!("conv padding {other:?} is not exported"),
        };
        let attrs = vec![
            attr_ints(
                "kernel_shape",
                &[c.kernel_size[0] as i64, c.kernel_size[1] as i64],
            ),
            attr_ints("strides", &[c.stride[0] as i64, c.stride[1] as i64]),
            attr_ints("dilations", &[c.dilation[0] as i64, c.dilation[1] as i64]),
            attr_int("group", c.groups as i64),
            // ONNX order: top, left, bottom, right.
            attr_ints("pads", &pads),
        ];
        match &c.bias {
            Some(b) => {
                let b = self.param("conv_b", b)?;
                Ok(self.node("Conv", &[x, &w, &b], attrs))
            }
            None => Ok(self.node("Conv", &[x, &w], attrs)),
        }
    }

    fn group_norm<B: Backend>(&mut self, n: &GroupNorm<B>, x: &str) -> Result<String> {
        let (Some(gamma), Some(beta)) = (&n.gamma, &n.beta) else {
            bail!("GroupNorm without affine parameters is not exported");
        };
        let s = self.param("gn_scale", gamma)?;
        let b = self.param("gn_bias", beta)?;
        Ok(self.node(
            "GroupNormalization",
            &[x, &s, &b],
            vec![
                attr_float("epsilon", n.epsilon as f32),
                attr_int("num_groups", n.num_groups as i64),
            ],
        ))
    }

    fn res_block<B: Backend>(&mut self, r: &ResBlock<B>, x: &str, emb: &str) -> Result<String> {
        let h = self.group_norm(&r.norm1, x)?;
        let h = self.silu(&h);
        let h = self.conv(&r.conv1, &h)?;
        let e = self.linear(&r.emb, emb)?;
        let axes = self.const_i64("axes23", &[2, 3]);
        let e = self.node("Unsqueeze", &[&e, &axes], vec![]);
        let h = self.node("Add", &[&h, &e], vec![]);
        let h = self.group_norm(&r.norm2, &h)?;
        let h = self.silu(&h);
        // Dropout is the identity at inference.
        let h = self.conv(&r.conv2, &h)?;
        let skip = match &r.skip {
            Some(c) => self.conv(c, x)?,
            None => x.to_string(),
        };
        Ok(self.node("Add", &[&skip, &h], vec![]))
    }

    fn attention<B: Backend>(
        &mut self,
        a: &Attention<B>,
        x: &str,
        ch: usize,
        hw: (usize, usize),
    ) -> Result<String> {
        let heads = a.heads;
        let d = ch / heads;
        let l = hw.0 * hw.1;
        let xn = self.group_norm(&a.norm, x)?;
        let shape = self.const_i64("shape_heads", &[0, heads as i64, d as i64, l as i64]);
        let q = self.conv(&a.q, &xn)?;
        let q = self.node("Reshape", &[&q, &shape], vec![]);
        let k = self.conv(&a.k, &xn)?;
        let k = self.node("Reshape", &[&k, &shape], vec![]);
        let v = self.conv(&a.v, &xn)?;
        let v = self.node("Reshape", &[&v, &shape], vec![]);
        let perm = vec![attr_ints("perm", &[0, 1, 3, 2])];
        let qt = self.node("Transpose", &[&q], perm.clone());
        let scores = self.node("MatMul", &[&qt, &k], vec![]);
        let scale = self.const_f32("attn_scale", &[], vec![(1.0 / (d as f64).sqrt()) as f32]);
        let scores = self.node("Mul", &[&scores, &scale], vec![]);
        let attn = self.node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let attn_t = self.node("Transpose", &[&attn], perm);
        let out = self.node("MatMul", &[&v, &attn_t], vec![]);
        let back = self.const_i64("shape_image", &[0, ch as i64, hw.0 as i64, hw.1 as i64]);
        let out = self.node("Reshape", &[&out, &back], vec![]);
        let out = self.conv(&a.proj, &out)?;
        Ok(self.node("Add", &[x, &out], vec![]))
    }

    fn unet<B: Backend>(&mut self, m: &UNet<B>, cfg: &ModelConfig) -> Result<String> {
        if m.num_classes() != cfg.num_classes {
            bail!(
                "model has {} classes, config says {}",
                m.num_classes(),
                cfg.num_classes
            );
        }
        // Time embedding: [sin(t f), cos(t f)] -> Linear -> SiLU -> Linear.
        let freqs = time_frequencies(cfg.base_channels);
        let half = freqs.len() as i64;
        let freqs = self.const_f32("time_freqs", &[1, half], freqs);
        let axis1 = self.const_i64("axes1", &[1]);
        let t = self.node("Unsqueeze", &[INPUT_T, &axis1], vec![]);
        let arg = self.node("Mul", &[&t, &freqs], vec![]);
        let sin = self.node("Sin", &[&arg], vec![]);
        let cos = self.node("Cos", &[&arg], vec![]);
        let sincos = self.node("Concat", &[&sin, &cos], vec![attr_int("axis", 1)]);
        let e = self.linear(&m.time1, &sincos)?;
        let e = self.silu(&e);
        let mut emb = self.linear(&m.time2, &e)?;
        if let Some(ce) = &m.class_emb {
            let table = self.param("class_emb", &ce.weight)?;
            let c = self.node("Gather", &[&table, INPUT_LABEL], vec![attr_int("axis", 0)]);
            emb = self.node("Add", &[&emb, &c], vec![]);
        }
        let emb = self.silu(&emb);

        let levels = cfg.channel_mult.len();
        let mut size = (cfg.height, cfg.width);
        let mut h = self.conv(&m.input, INPUT_Z)?;
        let mut skips = vec![h.clone()];
        for (level, blocks) in m.down.iter().enumerate() {
            let ch = cfg.level_channels(level);
            for block in blocks {
                h = self.res_block(&block.res, &h, &emb)?;
                if let Some(a) = &block.attn {
                    h = self.attention(a, &h, ch, size)?;
                }
                skips.push(h.clone());
            }
            if level + 1 < levels {
                h = if m.avg_pool {
                    self.node(
                        "AveragePool",
                        &[&h],
                        vec![
                            attr_ints("kernel_shape", &[2, 2]),
                            attr_ints("strides", &[2, 2]),
                        ],
                    )
                } else {
                    self.conv(&m.down_convs[level], &h)?
                };
                size = (size.0 / 2, size.1 / 2);
                skips.push(h.clone());
            }
        }
        let ch = cfg.level_channels(levels - 1);
        h = self.res_block(&m.mid1, &h, &emb)?;
        h = self.attention(&m.mid_attn, &h, ch, size)?;
        h = self.res_block(&m.mid2, &h, &emb)?;
        for (i, blocks) in m.up.iter().enumerate() {
            let level = levels - 1 - i;
            let ch = cfg.level_channels(level);
            for block in blocks {
                let skip = skips.pop().context("internal: skip stack underflow")?;
                let cat = self.node("Concat", &[&h, &skip], vec![attr_int("axis", 1)]);
                h = self.res_block(&block.res, &cat, &emb)?;
                if let Some(a) = &block.attn {
                    h = self.attention(a, &h, ch, size)?;
                }
            }
            if i + 1 < levels {
                let scales = self.const_f32("scales", &[4], vec![1.0, 1.0, 2.0, 2.0]);
                let up = self.node(
                    "Resize",
                    &[&h, "", &scales],
                    vec![
                        attr_str("mode", "nearest"),
                        attr_str("coordinate_transformation_mode", "asymmetric"),
                        attr_str("nearest_mode", "floor"),
                    ],
                );
                size = (size.0 * 2, size.1 * 2);
                h = self.conv(&m.up_convs[i], &up)?;
            }
        }
        let h = self.group_norm(&m.out_norm, &h)?;
        let h = self.silu(&h);
        self.conv(&m.out_conv, &h)
    }
}

/// Reads the `fewstep.*` metadata of an encoded model (for tests and `info`).
pub fn read_metadata(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    let model = ModelProto::decode(bytes).context("not an ONNX model")?;
    Ok(model
        .metadata_props
        .into_iter()
        .filter(|e| e.key.starts_with("fewstep."))
        .map(|e| (e.key, e.value))
        .collect())
}
