//! `fewstep-train`: diffusion pretraining, multistep consistency training and
//! distillation, progressive distillation, the aDDIM xvar table, ONNX export,
//! the quality benchmark. The command line is [`cli`]; the work is the
//! `fewstep_trainer` library's.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
