//! The command line of `fewstep-train`: parsing, dispatch, exit codes.
//!
//! Each command's flags are one options type of the library (its
//! `clap::Args` derive), flattened here beside what only the command line
//! has: `--backend`, which picks the generic backend type the library
//! functions take ([`backend`]), and `eval --results`, where the command
//! appends its result. Commands without a library options type (`export`,
//! `bench`, `report`) keep their few flags here.

mod backend;
mod evaluate;
mod export;
mod train;

use backend::WithBackend;
use clap::{Parser, Subcommand};
use fewstep_trainer::algorithms::xvar::StoreOptions;
use fewstep_trainer::evaluation::classifier::ClassifierOptions;
use fewstep_trainer::run::{ConsistencyOptions, DiffusionOptions, ProgressiveOptions};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "fewstep-train",
    version,
    about = "Train fewstep diffusion models and export them to ONNX"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Diffusion pretraining (the teacher of multistep consistency models).
    Diffusion(Box<WithBackend<DiffusionOptions>>),
    /// Multistep consistency training (ct) or distillation (cd) from a
    /// diffusion checkpoint (Algorithm 1).
    Consistency(Box<WithBackend<ConsistencyOptions>>),
    /// Progressive distillation from a diffusion checkpoint (the baseline).
    Progressive(Box<WithBackend<ProgressiveOptions>>),
    /// Measure a diffusion checkpoint's empirical aDDIM xvar table and store
    /// it in the checkpoint (exported as fewstep.addim_xvar).
    Xvar(StoreOptions),
    /// Export a run's EMA weights as a fewstep ONNX model.
    Export(export::ExportArgs),
    /// Measure training throughput (examples/s); writes nothing.
    Bench(train::BenchArgs),
    /// Train the small CNN classifier whose features `eval` scores samples
    /// with (idx: train-*/t10k-* split; PNG folder: every 10th image tests).
    Classifier(Box<WithBackend<ClassifierOptions>>),
    /// Quality benchmark of an exported model: generate N samples through
    /// the runtime, KID/FID against the test split, class histogram.
    Eval(Box<evaluate::EvalArgs>),
    /// Turn `eval --results` JSON lines into docs/RESULTS.md's tables,
    /// target checks and quality-vs-latency plots.
    Report(evaluate::ReportArgs),
}

/// A clap error on one line (`error: ... [possible values: ...]`), without
/// the usage block: the CLI's errors are all one line.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line);
        }
    }
    parts.join(" ")
}

/// Parses the command line and runs the command. Exit codes: 0 on success
/// (and for `--help` / `--version`), 2 for a command line clap rejects
/// (one line on stderr), 1 when the command fails (`error: ...` on stderr).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            eprintln!("{}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Diffusion(a) => train::diffusion(*a),
        Command::Consistency(a) => train::consistency(*a),
        Command::Progressive(a) => train::progressive(*a),
        Command::Xvar(a) => train::xvar(&a),
        Command::Export(a) => export::export(&a),
        Command::Bench(a) => train::bench(&a),
        Command::Classifier(a) => evaluate::classifier(*a),
        Command::Eval(a) => evaluate::eval(*a),
        Command::Report(a) => evaluate::report(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use fewstep_trainer::config::{ConsistencyMode, TrainConfig};

    fn parse(args: &[&str]) -> Command {
        let argv = std::iter::once("fewstep-train").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("parses").command
    }

    #[test]
    fn commands_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn diffusion_flags_default_to_train_config() {
        let Command::Diffusion(a) = parse(&["diffusion", "--data", "d", "--out", "o"]) else {
            panic!("not diffusion");
        };
        assert_eq!(a.options.train, TrainConfig::default());
        assert_eq!(a.options.steps, None);
        assert_eq!(a.options.png.size, 32);
        assert_eq!(a.backend, backend::BackendArg::Flex);
    }

    #[test]
    fn consistency_flags_make_the_configs() {
        let Command::Consistency(a) = parse(&[
            "consistency",
            "--mode",
            "cd",
            "--student-steps",
            "4",
            "--out",
            "o",
            "--steps",
            "1000",
            "--backend",
            "cpu",
        ]) else {
            panic!("not consistency");
        };
        let c = a.options.config();
        assert_eq!(c.mode, ConsistencyMode::Cd);
        assert_eq!(c.student_steps, 4);
        // The annealing defaults to half of --steps.
        assert_eq!((c.teacher_steps_start, c.teacher_steps_end), (64.0, 1280.0));
        assert_eq!(c.anneal_iters, 500);
        let t = a.options.distill.train_config(a.options.steps);
        assert_eq!((t.steps, t.lr, t.warmup), (1000, 1e-4, 100));
        assert_eq!(t.sample_steps, TrainConfig::default().sample_steps);
        assert_eq!(a.backend, backend::BackendArg::Ndarray);

        let Command::Consistency(a) = parse(&[
            "consistency",
            "--mode",
            "ct",
            "--student-steps",
            "2",
            "--out",
            "o",
            "--teacher-steps-fixed",
            "32",
        ]) else {
            panic!("not consistency");
        };
        let c = a.options.config();
        assert_eq!((c.teacher_steps_start, c.teacher_steps_end), (32.0, 32.0));
        assert_eq!(c.anneal_iters, 0);
    }

    #[test]
    fn classifier_png_flags_keep_their_names() {
        let Command::Classifier(a) = parse(&[
            "classifier",
            "--data",
            "d",
            "--out",
            "o",
            "--image-size",
            "28",
            "--image-channels",
            "1",
        ]) else {
            panic!("not classifier");
        };
        let png = a.options.png();
        assert_eq!((png.size, png.channels), (28, 1));
    }
}
