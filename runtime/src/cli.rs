//! The `fewstep` command line: `generate`, `info`, `stamp` (the `cli`
//! feature). `src/main.rs` calls [`main`]; the fuzz harness calls
//! [`parse_args`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::fewstep_core::format::{DataRange, ImageShape};
use crate::fewstep_core::{Prediction, Schedule, StudentSteps};
use crate::{Model, SamplerChoice, StampOptions};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fewstep",
    version,
    about = "Few-step image generation from fewstep ONNX models"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--sampler`: core's one spelling (`auto`, `ddim`, `addim`).
fn parse_sampler(s: &str) -> Result<SamplerChoice, String> {
    s.parse().map_err(|e: crate::PlanError| e.to_string())
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate images and write a PNG grid or a float32 .npy [N,C,H,W].
    Generate {
        /// The fewstep .onnx model.
        #[arg(long)]
        model: PathBuf,
        /// Steps (default: T for a consistency model, 32 for a diffusion model).
        #[arg(long)]
        steps: Option<u32>,
        /// Sampler: auto (T DDIM steps for a consistency model, aDDIM for a
        /// diffusion model), ddim or addim.
        #[arg(long, value_parser = parse_sampler, default_value = "auto")]
        sampler: SamplerChoice,
        /// Seed of the initial noise.
        #[arg(long, conflicts_with = "noise")]
        seed: Option<u64>,
        /// Initial noise z_1 as a float32 .npy of shape [N,C,H,W].
        #[arg(long)]
        noise: Option<PathBuf>,
        /// Number of images.
        #[arg(long)]
        batch: Option<usize>,
        /// Class label for every image (class-conditional models),
        /// `0..num_classes`; a comma-separated list (`0,1,2`) is taken
        /// cyclically: image i gets the (i mod len)-th label. Without it a
        /// class-conditional model samples unconditionally.
        #[arg(long, allow_negative_numbers = true, value_delimiter = ',')]
        label: Vec<i64>,
        /// Classifier-free guidance scale (1 = none).
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        guidance: f32,
        /// Edit this image instead of drawing from pure noise: a PNG of the
        /// model's size (mapped through fewstep.data_range) or a float32 .npy
        /// [N,C,H,W] / [C,H,W] in data space.
        #[arg(long)]
        init: Option<PathBuf>,
        /// img2img strength in (0, 1]: how much of the way from noise to
        /// data is walked again (a T-step consistency model starts at its
        /// segment boundary ceil(s*T)/T). Needs --init.
        #[arg(long, requires = "init")]
        strength: Option<f64>,
        /// Inpainting mask: a grayscale PNG (white = generate, black = keep)
        /// or a float32 .npy [N,C,H,W] / [N,1,H,W] / [H,W] in [0, 1]. Needs --init.
        #[arg(long, requires = "init")]
        mask: Option<PathBuf>,
        /// Clip x_hat to the model's data range at every step.
        #[arg(long)]
        clip: bool,
        /// Threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Run the whole batch as one network batch instead of per image.
        #[arg(long)]
        batched: bool,
        /// How wide 3×3 convolutions are computed: winograd (F(2×2, 3×3),
        /// 2.25× fewer multiplies) or direct (tract's im2col).
        #[arg(long, default_value = "winograd")]
        conv: crate::ConvAlgorithm,
        /// With several threads, what the helpers do between operators:
        /// sleep, or spin (faster when nothing else needs the cores; keeps
        /// them busy for the whole run).
        #[arg(long, default_value = "sleep")]
        wait: crate::PoolWait,
        /// Time the Winograd matrix kernels once and keep the fastest in
        /// this file for later runs (default: estimate them, no timing).
        #[arg(long, value_name = "FILE")]
        kernel_cache: Option<PathBuf>,
        /// Refuse a request estimated to need more memory than this (bytes,
        /// or with a unit: 512M, 2G; default 512M).
        #[arg(long, value_parser = crate::parse_bytes)]
        memory_budget: Option<u64>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// Output: .png (grid) or .npy (float32 [N,C,H,W] in data space).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a model's metadata, interface, parameter count and cost per step.
    Info {
        /// The .onnx model.
        model: PathBuf,
    },
    /// Write fewstep metadata into an ONNX model exported by another framework.
    Stamp {
        /// Input .onnx.
        input: PathBuf,
        /// Output .onnx.
        output: PathBuf,
        /// x, eps or v.
        #[arg(long)]
        prediction: String,
        /// cosine, shifted_cosine:<f> or interpolated_cosine:<lo>:<hi>.
        #[arg(long)]
        schedule: String,
        /// T >= 1 for a multistep consistency model, 0 for a diffusion model.
        #[arg(long)]
        student_steps: u32,
        /// C,H,W.
        #[arg(long)]
        image: String,
        /// Number of classes (class-conditional models).
        #[arg(long)]
        num_classes: Option<u32>,
        /// lo,hi of the data space (default -1,1).
        #[arg(long)]
        data_range: Option<String>,
        /// Rename a graph input, OLD=NEW (e.g. x=z); repeatable.
        #[arg(long, value_name = "OLD=NEW")]
        rename: Vec<String>,
    },
}

/// Parses a command line (the fuzz harness, `fuzz/harness.rs`, calls this).
///
/// # Errors
/// clap's error for arguments it refuses.
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args)
}

/// The `fewstep` binary: parses `std::env::args_os()`, runs the command,
/// and turns any failure into one line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = match parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return ExitCode::SUCCESS;
            }
            // clap's message up to its first blank line, as one line.
            let msg = e.to_string();
            let line = msg
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!(
                "{}",
                if line.is_empty() {
                    "error: bad arguments"
                } else {
                    &line
                }
            );
            return ExitCode::from(2);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<(), String> {
    match cmd {
        Command::Generate {
            model,
            steps,
            sampler,
            seed,
            noise,
            batch,
            label,
            guidance,
            init,
            strength,
            mask,
            clip,
            threads,
            batched,
            wait,
            kernel_cache,
            conv,
            memory_budget,
            quiet,
            out,
        } => {
            crate::tune_allocator();
            if let Some(file) = kernel_cache {
                crate::set_kernel_tuning(crate::KernelTuning::Cached(file));
            }
            let ext = out
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let as_png = match ext.as_deref() {
                Some("png") => true,
                Some("npy") => false,
                _ => return Err(format!("--out {}: must end in .png or .npy", out.display())),
            };
            let m = Model::load(&model)
                .map_err(|e| e.to_string())?
                .with_conv_algorithm(conv);
            let plan = m.plan(steps, sampler).map_err(|e| e.to_string())?;
            let n_images;
            let mut req = m
                .generate()
                .steps(plan.steps())
                .sampler(sampler)
                .guidance(guidance)
                .clip(clip);
            if let Some(path) = &noise {
                let (values, shape) = crate::read_npy(path).map_err(|e| e.to_string())?;
                let img = m.metadata().image;
                let want = [
                    img.channels as usize,
                    img.height as usize,
                    img.width as usize,
                ];
                if shape.len() != 4 || shape[1..] != want {
                    return Err(format!(
                        "--noise {}: shape {:?}, expected [N,{},{},{}]",
                        path.display(),
                        shape,
                        want[0],
                        want[1],
                        want[2]
                    ));
                }
                if let Some(b) = batch
                    && b != shape[0]
                {
                    return Err(format!(
                        "--batch {b} disagrees with --noise, which holds {} images",
                        shape[0]
                    ));
                }
                n_images = shape[0];
                req = req.noise(values);
            } else {
                n_images = batch.unwrap_or(1);
                req = req.seed(seed.unwrap_or(0)).batch(n_images);
            }
            if let [l] = label[..] {
                req = req.label(l);
            } else if !label.is_empty() {
                req = req.labels((0..n_images).map(|i| label[i % label.len()]).collect());
            }
            if let Some(path) = &init {
                req = req
                    .init(crate::read_init_image(path, m.metadata()).map_err(|e| e.to_string())?);
            }
            if let Some(path) = &mask {
                req = req.mask(crate::read_mask(path, m.metadata()).map_err(|e| e.to_string())?);
            }
            let plan = match strength {
                Some(s) => {
                    req = req.strength(s);
                    plan.with_strength(m.metadata().student_steps, s)
                        .map_err(|e| format!("--strength {s}: {e}"))?
                }
                None => plan,
            };
            if let Some(t) = threads {
                req = req.threads(t);
            }
            req = req.pool_wait(wait);
            if batched {
                req = req.execution(crate::Execution::Batched);
            }
            if let Some(b) = memory_budget {
                req = req.memory_budget(b);
            }
            let bar = if quiet {
                indicatif::ProgressBar::hidden()
            } else {
                let b = indicatif::ProgressBar::new(u64::from(plan.steps()));
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            };
            let bar2 = bar.clone();
            req = req.on_progress(move |p| {
                bar2.set_position(u64::from(p.step));
                bar2.set_message(format!("t={:.3}", p.s));
            });
            let images = req.run().map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            if as_png {
                images.save_png(&out).map_err(|e| e.to_string())?;
            } else {
                images.save_npy(&out).map_err(|e| e.to_string())?;
            }
            if !quiet {
                eprintln!(
                    "wrote {} image(s) to {} ({} steps, {})",
                    images.batch(),
                    out.display(),
                    images.steps_done(),
                    plan.sampler()
                );
            }
            Ok(())
        }
        Command::Info { model } => info(&model),
        Command::Stamp {
            input,
            output,
            prediction,
            schedule,
            student_steps,
            image,
            num_classes,
            data_range,
            rename,
        } => {
            let opts = StampOptions {
                prediction: Prediction::parse(&prediction)
                    .map_err(|e| format!("--prediction {prediction}: {e}"))?,
                schedule: Schedule::parse(&schedule)
                    .map_err(|e| format!("--schedule {schedule}: {e}"))?,
                student_steps: StudentSteps(student_steps),
                image: image
                    .parse::<ImageShape>()
                    .map_err(|e| format!("--image {image}: {e}"))?,
                num_classes,
                data_range: data_range
                    .map(|r| {
                        r.parse::<DataRange>()
                            .map_err(|e| format!("--data-range {r}: {e}"))
                    })
                    .transpose()?,
                renames: rename
                    .iter()
                    .map(|r| {
                        r.split_once('=')
                            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                            .ok_or_else(|| format!("--rename {r}: expected OLD=NEW"))
                    })
                    .collect::<Result<_, _>>()?,
            };
            let bytes = std::fs::read(&input)
                .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            let mut proto = crate::decode(&bytes).map_err(|e| e.to_string())?;
            let dir = input
                .parent()
                .and_then(|d| d.to_str())
                .map(|d| if d.is_empty() { "." } else { d });
            crate::stamp(&mut proto, &opts, dir).map_err(|e| e.to_string())?;
            std::fs::write(&output, crate::encode(&proto))
                .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
            eprintln!("wrote fewstep model {}", output.display());
            Ok(())
        }
    }
}

fn info(path: &Path) -> Result<(), String> {
    let m = Model::load(path).map_err(|e| e.to_string())?;
    let meta = m.metadata();
    println!("model: {}", path.display());
    println!("metadata:");
    for (k, v) in &meta.all {
        let v = if v.len() > 80 {
            format!("{}… ({} chars)", &v[..v.floor_char_boundary(77)], v.len())
        } else {
            v.clone()
        };
        println!("  {k} = {v}");
    }
    let kind = if meta.student_steps.is_diffusion() {
        "diffusion model (any step count; auto sampler: aDDIM)".to_string()
    } else {
        format!(
            "multistep consistency model, {} steps (DDIM)",
            meta.student_steps.0
        )
    };
    println!("kind: {kind}");
    println!("inputs:");
    for i in &m.interface().inputs {
        println!("  {} {}", i.name, i.describe());
    }
    println!("output:");
    for o in &m.interface().outputs {
        println!("  {} {}", o.name, o.describe());
    }
    println!("parameters: {}", m.parameter_count());
    let (winograd, convs) = m.winograd_convolutions().map_err(|e| e.to_string())?;
    println!(
        "convolutions: {convs}, of which {winograd} 3×3 stride-1 run as Winograd F(2×2, 3×3) by default"
    );
    let macs = m.macs_per_image().map_err(|e| e.to_string())?;
    println!(
        "per step and image: {macs} multiply-adds ({:.3} GFLOP); x2 with guidance",
        2.0 * macs as f64 / 1e9
    );
    Ok(())
}
