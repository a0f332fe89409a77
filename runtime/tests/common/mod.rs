//! Test helper: builds small fewstep ONNX models with `tract_onnx::pb` and
//! prost, and an independent f64 reference of the sampler (transcribed from
//! `docs/MODEL_FORMAT.md`, not from `fewstep-core`).
#![allow(dead_code)]

use fewstep::pb;
use prost::Message;

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;
pub const FLOAT16: i32 = 10;

/// Which schedule a test model computes in its graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sched {
    Cosine,
    Shifted(f64),
    Interpolated(f64, f64),
}

impl Sched {
    pub fn meta(self) -> String {
        match self {
            Sched::Cosine => "cosine".into(),
            Sched::Shifted(f) => format!("shifted_cosine:{f}"),
            Sched::Interpolated(a, b) => format!("interpolated_cosine:{a}:{b}"),
        }
    }
    /// Independent transcription of the spec's logsnr.
    pub fn logsnr(self, t: f64) -> f64 {
        let b = (-15.0f64 / 2.0).exp().atan();
        let a = (15.0f64 / 2.0).exp().atan() - b;
        let cos = -2.0 * (a * t + b).tan().ln();
        match self {
            Sched::Cosine => cos,
            Sched::Shifted(f) => cos + 2.0 * f.ln(),
            Sched::Interpolated(lo, hi) => cos + 2.0 * (t * lo.ln() + (1.0 - t) * hi.ln()),
        }
    }
    pub fn alpha_sigma(self, t: f64) -> (f64, f64) {
        let l = self.logsnr(t);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        (sig(l).sqrt(), sig(-l).sqrt())
    }
}

/// A per-pixel Gaussian data model `x ~ N(mu, s²)` (mu per class when
/// conditional), whose exact denoiser the graph computes.
#[derive(Debug, Clone)]
pub struct GaussSpec {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// `[(K+1) or 1, C*H*W]`: row `k` is class `k`'s mean, the last row the
    /// unconditional mean.
    pub mu: Vec<Vec<f32>>,
    pub s2: Vec<f32>,
    pub prediction: &'static str,
    pub sched: Sched,
    pub student_steps: u32,
    pub num_classes: u32,
    /// Store `mu` as f16 with a Cast to f32 in the graph.
    pub f16_weights: bool,
}

impl GaussSpec {
    pub fn new(c: usize, h: usize, w: usize, prediction: &'static str, sched: Sched) -> Self {
        let d = c * h * w;
        let mu = vec![(0..d).map(|i| 0.5 * ((i as f32) * 0.7).sin()).collect()];
        let s2 = (0..d)
            .map(|i| 0.05 + 0.2 * ((i * 7 % 5) as f32) / 5.0)
            .collect();
        GaussSpec {
            c,
            h,
            w,
            mu,
            s2,
            prediction,
            sched,
            student_steps: 0,
            num_classes: 0,
            f16_weights: false,
        }
    }
    pub fn d(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Conditional with `k` classes: class `j` has mean `0.3 (j+1) - 0.5`
    /// plus the base pattern; the null label has the base pattern.
    pub fn conditional(mut self, k: u32) -> Self {
        let base = self.mu[0].clone();
        let mut mu: Vec<Vec<f32>> = (0..k)
            .map(|j| {
                base.iter()
                    .map(|m| m + 0.3 * (j as f32 + 1.0) - 0.5)
                    .collect()
            })
            .collect();
        mu.push(base);
        self.mu = mu;
        self.num_classes = k;
        self
    }

    /// The exact network output (f64 reference) for one image.
    pub fn output(&self, z: &[f64], t: f64, label: Option<usize>) -> Vec<f64> {
        let (a, s) = self.sched.alpha_sigma(t);
        let mu = &self.mu[label.unwrap_or(self.mu.len() - 1)];
        z.iter()
            .enumerate()
            .map(|(i, &zi)| {
                let m = f64::from(mu[i]);
                let v = f64::from(self.s2[i]);
                let x = m + a * v / (a * a * v + s * s) * (zi - a * m);
                match self.prediction {
                    "x" => x,
                    "eps" => (zi - a * x) / s,
                    "v" => (a * zi - x) / s,
                    p => panic!("prediction {p}"),
                }
            })
            .collect()
    }

    /// Builds the ONNX model (with all required metadata).
    pub fn build(&self) -> pb::ModelProto {
        let d = self.d();
        let (c, h, w) = (self.c as i64, self.h as i64, self.w as i64);
        let mut g = Graph::default();
        g.input("z", FLOAT, &[None, Some(c), Some(h), Some(w)]);
        g.input("t", FLOAT, &[None]);
        if self.num_classes > 0 {
            g.input("label", INT64, &[None]);
        }
        g.output("out", FLOAT, &[None, Some(c), Some(h), Some(w)]);
        // Schedule in graph ops. -2 ln tan(a t + b) = 2 ln tan(e0 + a (1 - t))
        // with e0 = pi/2 - a - b = atan(exp(-7.5)): the same function, but
        // accurate in f32 next to t = 1, where alpha is ~5e-4 and an eps
        // model's x_hat amplifies any schedule error by 1/alpha.
        let b = (-15.0f64 / 2.0).exp().atan();
        let a = (15.0f64 / 2.0).exp().atan() - b;
        let e0 = (-15.0f64 / 2.0).exp().atan();
        g.scalar("ca", a as f32);
        g.scalar("ce0", e0 as f32);
        g.scalar("two_", 2.0);
        g.scalar("one_", 1.0);
        g.node("Sub", &["one_", "t"], "omt_");
        g.node("Mul", &["omt_", "ca"], "at");
        g.node("Add", &["at", "ce0"], "atb");
        g.node("Tan", &["atb"], "tan");
        g.node("Log", &["tan"], "lntan");
        g.node("Mul", &["lntan", "two_"], "cosl");
        match self.sched {
            Sched::Cosine => g.node("Identity", &["cosl"], "logsnr"),
            Sched::Shifted(f) => {
                g.scalar("shift", (2.0 * f.ln()) as f32);
                g.node("Add", &["cosl", "shift"], "logsnr");
            }
            Sched::Interpolated(lo, hi) => {
                g.scalar("llo", (2.0 * lo.ln()) as f32);
                g.scalar("lhi", (2.0 * hi.ln()) as f32);
                g.scalar("one", 1.0);
                g.node("Sub", &["one", "t"], "omt");
                g.node("Mul", &["t", "llo"], "p1");
                g.node("Mul", &["omt", "lhi"], "p2");
                g.node("Add", &["p1", "p2"], "p12");
                g.node("Add", &["cosl", "p12"], "logsnr");
            }
        }
        // sigmoid(+-logsnr) as 1 / (1 + exp(-+logsnr)): tract's f32 Sigmoid
        // is a fast approximation with absolute (not relative) error, too
        // coarse for alpha^2 ~ 3e-7 at t = 1.
        g.node("Neg", &["logsnr"], "nlogsnr");
        g.node("Exp", &["nlogsnr"], "enl");
        g.node("Exp", &["logsnr"], "el");
        g.node("Add", &["one_", "enl"], "den_a");
        g.node("Add", &["one_", "el"], "den_s");
        g.node("Div", &["one_", "den_a"], "a2f");
        g.node("Div", &["one_", "den_s"], "s2f");
        g.init_i64("shape4", &[4], &[-1, 1, 1, 1]);
        g.node("Reshape", &["a2f", "shape4"], "alpha2");
        g.node("Reshape", &["s2f", "shape4"], "sigma2");
        g.node("Sqrt", &["alpha2"], "alpha");
        g.node("Sqrt", &["sigma2"], "sigma");
        // Data model.
        let rows = self.mu.len() as i64;
        let flat: Vec<f32> = self.mu.iter().flatten().copied().collect();
        if self.f16_weights {
            g.init_f16("mu_h", &[rows, c, h, w], &flat);
            g.node_attrs(
                "Cast",
                &["mu_h"],
                "mu_table",
                vec![attr_int("to", FLOAT.into())],
            );
        } else {
            g.init_f32("mu_table", &[rows, c, h, w], &flat);
        }
        if self.num_classes > 0 {
            g.node_attrs(
                "Gather",
                &["mu_table", "label"],
                "mu",
                vec![attr_int("axis", 0)],
            );
        } else {
            g.node("Identity", &["mu_table"], "mu");
        }
        g.init_f32("s2", &[1, c, h, w], &self.s2);
        // gain = alpha s2 / (alpha2 s2 + sigma2); x = mu + gain (z - alpha mu)
        g.node("Mul", &["alpha", "s2"], "as2");
        g.node("Mul", &["alpha2", "s2"], "a2s2");
        g.node("Add", &["a2s2", "sigma2"], "den");
        g.node("Div", &["as2", "den"], "gain");
        g.node("Mul", &["alpha", "mu"], "amu");
        g.node("Sub", &["z", "amu"], "resid");
        g.node("Mul", &["gain", "resid"], "gres");
        g.node("Add", &["mu", "gres"], "xhat");
        match self.prediction {
            "x" => g.node("Identity", &["xhat"], "out"),
            "eps" => {
                g.node("Mul", &["alpha", "xhat"], "ax");
                g.node("Sub", &["z", "ax"], "zax");
                g.node("Div", &["zax", "sigma"], "out");
            }
            "v" => {
                g.node("Mul", &["alpha", "z"], "az");
                g.node("Sub", &["az", "xhat"], "azx");
                g.node("Div", &["azx", "sigma"], "out");
            }
            p => panic!("prediction {p}"),
        }
        let _ = d;
        let mut meta = vec![
            ("fewstep.format", "1".to_string()),
            ("fewstep.prediction", self.prediction.to_string()),
            ("fewstep.schedule", self.sched.meta()),
            ("fewstep.student_steps", self.student_steps.to_string()),
            ("fewstep.image", format!("{c},{h},{w}")),
        ];
        if self.num_classes > 0 {
            meta.push(("fewstep.num_classes", self.num_classes.to_string()));
        }
        g.finish(&meta)
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.build().encode_to_vec()
    }
}

pub fn attr_int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// A tiny graph builder.
#[derive(Default)]
pub struct Graph {
    pub g: pb::GraphProto,
}

pub fn value_info(name: &str, elem: i32, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => Value::DimValue(*v),
                                None => Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Graph {
    pub fn input(&mut self, name: &str, elem: i32, dims: &[Option<i64>]) {
        self.g.input.push(value_info(name, elem, dims));
    }
    pub fn output(&mut self, name: &str, elem: i32, dims: &[Option<i64>]) {
        self.g.output.push(value_info(name, elem, dims));
    }
    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        self.g.initializer.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: FLOAT,
            float_data: data.to_vec(),
            ..Default::default()
        });
    }
    pub fn init_f16(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        let raw = data
            .iter()
            .flat_map(|&v| fewstep::fewstep_core::f16::f16::from_f32(v).to_le_bytes())
            .collect();
        self.g.initializer.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: FLOAT16,
            raw_data: raw,
            ..Default::default()
        });
    }
    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        self.g.initializer.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: INT64,
            int64_data: data.to_vec(),
            ..Default::default()
        });
    }
    pub fn scalar(&mut self, name: &str, v: f32) {
        self.init_f32(name, &[], &[v]);
    }
    pub fn node(&mut self, op: &str, inputs: &[&str], output: &str) {
        self.node_attrs(op, inputs, output, vec![]);
    }
    pub fn node_attrs(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) {
        let n = self.g.node.len();
        self.g.node.push(pb::NodeProto {
            op_type: op.into(),
            name: format!("{op}_{n}"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        });
    }
    pub fn finish(mut self, meta: &[(&str, String)]) -> pb::ModelProto {
        self.g.name = "test".into();
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            producer_name: "fewstep-tests".into(),
            graph: Some(self.g),
            metadata_props: meta
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.to_string(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Sets (or with `None` removes) a metadata key.
pub fn set_meta(p: &mut pb::ModelProto, key: &str, value: Option<&str>) {
    p.metadata_props.retain(|e| e.key != key);
    if let Some(v) = value {
        p.metadata_props.push(pb::StringStringEntryProto {
            key: key.into(),
            value: v.into(),
        });
    }
}

/// Which reference sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefSampler {
    Ddim,
    /// aDDIM with analytic xvar, or a table.
    Addim(Option<&'static [f64]>),
}

/// Independent f64 sampler (docs/MODEL_FORMAT.md "Sampling"), with optional
/// guidance `(labels, w)` and clipping to [-1, 1].
pub fn reference_sample(
    spec: &GaussSpec,
    z0: &[f32],
    steps: u32,
    sampler: RefSampler,
    labels: Option<&[usize]>,
    guidance: f64,
    clip: bool,
) -> Vec<f64> {
    let d = spec.d();
    let n = z0.len() / d;
    let mut z: Vec<f64> = z0.iter().map(|&v| f64::from(v)).collect();
    for k in (1..=steps).rev() {
        let t = f64::from(k) / f64::from(steps);
        let s = f64::from(k - 1) / f64::from(steps);
        let (at, st) = spec.sched.alpha_sigma(t);
        let (as_, ss) = spec.sched.alpha_sigma(s);
        for i in 0..n {
            let zi = &mut z[i * d..(i + 1) * d];
            let label = labels.map(|l| l[if l.len() == 1 { 0 } else { i }]);
            let mut out = spec.output(zi, t, label);
            if guidance != 1.0 {
                let un = spec.output(zi, t, Some(spec.mu.len() - 1));
                for (o, u) in out.iter_mut().zip(&un) {
                    *o = u + guidance * (*o - u);
                }
            }
            let mut x: Vec<f64> = out
                .iter()
                .zip(zi.iter())
                .map(|(&o, &zz)| match spec.prediction {
                    "x" => o,
                    "eps" => (zz - st * o) / at,
                    _ => at * zz - st * o,
                })
                .collect();
            if clip {
                x.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
            }
            match sampler {
                RefSampler::Ddim => {
                    for (zz, &xx) in zi.iter_mut().zip(&x) {
                        *zz = as_ * xx + ss / st * (*zz - at * xx);
                    }
                }
                RefSampler::Addim(table) => {
                    let xvar = match table {
                        None => 0.1 / (2.0 + spec.sched.logsnr(t).exp()),
                        Some(tab) => {
                            let pos = t * (tab.len() - 1) as f64;
                            let lo = (pos.floor() as usize).min(tab.len() - 2);
                            let f = pos - lo as f64;
                            tab[lo] * (1.0 - f) + tab[lo + 1] * f
                        }
                    };
                    let eps: Vec<f64> = zi
                        .iter()
                        .zip(&x)
                        .map(|(&zz, &xx)| (zz - at * xx) / st)
                        .collect();
                    let norm2: f64 = eps.iter().map(|e| e * e).sum();
                    let zvar = (as_ - at * ss / st).powi(2) * xvar;
                    let scale = (ss * ss + d as f64 / norm2 * zvar).sqrt();
                    for ((zz, &xx), e) in zi.iter_mut().zip(&x).zip(&eps) {
                        *zz = as_ * xx + scale * e;
                    }
                }
            }
        }
    }
    z
}

pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

/// Deterministic standard normal noise for tests (Box–Muller on an LCG;
/// independent of the runtime's RNG).
pub fn test_noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut u = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (a, b) = (u(), u());
            ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
        })
        .collect()
}
