//! The quality benchmark's commands: `classifier`, `eval` and `report`.

use super::backend::{BackendArg, WithBackend, on_backend};
use anyhow::{Context, Result};
use clap::Args;
use fewstep_trainer::evaluation::classifier::{self, ClassifierOptions};
use fewstep_trainer::evaluation::eval::{self, EvalOptions};
use fewstep_trainer::evaluation::report;
use std::path::{Path, PathBuf};

pub fn classifier(a: WithBackend<ClassifierOptions>) -> Result<()> {
    let meta = on_backend!(a.backend, classifier::train(&a.options))?;
    println!(
        "test accuracy: {:.2}% ({} images)",
        100.0 * meta.test_accuracy,
        meta.test_images
    );
    Ok(())
}

/// `eval`'s flags: the library's options, and where the command appends
/// its result.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    options: EvalOptions,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Backend of the classifier.
    #[arg(long, value_enum, default_value_t = BackendArg::Flex)]
    backend: BackendArg,
}

/// Fails early (before minutes of work) when an output's folder is missing.
fn check_parent(path: &Path, flag: &str) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        anyhow::bail!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            parent.display()
        );
    }
    Ok(())
}

pub fn eval(a: EvalArgs) -> Result<()> {
    if let Some(r) = &a.results {
        check_parent(r, "--results")?;
    }
    if let Some(g) = &a.options.grid {
        check_parent(g, "--grid")?;
    }
    let record = on_backend!(a.backend, eval::evaluate(&a.options))?;
    println!("{}", eval::format_report(&record));
    if let Some(r) = &a.results {
        eval::append_result(r, &record)?;
        eprintln!("appended to {}", r.display());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The JSON-lines file of `eval --results`.
    #[arg(long)]
    results: PathBuf,
    /// The markdown file; only its generated part is replaced.
    #[arg(long)]
    out: PathBuf,
    /// Folder of the plots (quality-latency-DATASET.png).
    #[arg(long)]
    plots: PathBuf,
}

pub fn report(a: &ReportArgs) -> Result<()> {
    let rows = report::read_records(&a.results)?;
    std::fs::create_dir_all(&a.plots)
        .with_context(|| format!("cannot create {}", a.plots.display()))?;
    let doc_dir = a.out.parent().map(Path::to_path_buf).unwrap_or_default();
    let generated = report::render(&rows, &a.plots, &doc_dir)?;
    let old = std::fs::read_to_string(&a.out).ok();
    let doc = report::splice(old.as_deref(), &generated);
    fewstep_trainer::checkpoint::write_atomic(&a.out, doc.as_bytes())?;
    println!("wrote {} ({} rows)", a.out.display(), rows.len());
    Ok(())
}
