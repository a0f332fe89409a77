//! Which matrix kernel runs the products of each Winograd shape: estimated
//! from the kernel's register tile (the default, no timing), measured once
//! per shape and process, or measured once and kept in a small file between
//! processes ([`KernelTuning`]).
//!
//! Timing every candidate costs ~80 ms at the first load of the shipped
//! Fashion-MNIST model on this machine (15 product shapes, 5–12 candidate
//! kernels each), more than its whole first image. The estimate picks the
//! timed winner or one within a few percent of it on the shapes measured
//! (`docs/PERFORMANCE.md`, start-up). Every candidate sums each output over
//! `k` in the same order, so the choice changes the speed, not the result.

#![allow(clippy::wildcard_imports)]

use super::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How the runtime picks the matrix kernel of each Winograd product shape.
/// Process-wide ([`set_kernel_tuning`]): kernels are chosen when a plan is
/// built (at load, and at the first call with a new batch size).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum KernelTuning {
    /// A cost model of each candidate's padding and register tile: nothing
    /// is timed, so nothing slows the load. The default.
    #[default]
    Estimate,
    /// Every candidate timed once per shape and process: the fastest kernel
    /// for this machine, at ~1–12 ms per new shape when a plan is built.
    Measure,
    /// As `Measure`, with the choices kept in this file between processes:
    /// read at the first plan, rewritten (atomically) after a new shape is
    /// timed. A file from another processor, another fewstep version, or
    /// one that does not parse is ignored and replaced, never trusted; a
    /// kernel it names must be among this machine's candidates. A file that
    /// cannot be written costs the timing again next time, nothing else.
    Cached(PathBuf),
}

/// Sets how kernels are chosen for plans built from now on, in this process
/// (plans already built keep theirs). Forgets the choices made so far.
pub fn set_kernel_tuning(tuning: KernelTuning) {
    let mut state = lock();
    *state = State {
        tuning,
        ..State::default()
    };
}

/// The tuning in force ([`set_kernel_tuning`]).
pub fn kernel_tuning() -> KernelTuning {
    lock().tuning.clone()
}

/// A chosen kernel for one product shape `m × k × n`, by name and packing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Choice {
    shape: (usize, usize, usize),
    kernel: String,
    packing: usize,
}

#[derive(Debug, Default)]
struct State {
    tuning: KernelTuning,
    /// Measured choices (from timing or the file).
    measured: Vec<Choice>,
    /// Whether `Cached`'s file has been read.
    file_read: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    tuning: KernelTuning::Estimate,
    measured: Vec::new(),
    file_read: false,
});

fn lock() -> std::sync::MutexGuard<'static, State> {
    // The state is replaced whole or appended to: a panic cannot leave it
    // half-written.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The kernel (and packing) for the products of shape `m × k × n`
/// (block tiles × C_in × C_out), by the process's [`KernelTuning`].
pub(super) fn chosen_kernel(
    m: usize,
    k: usize,
    n: usize,
) -> TractResult<(Box<dyn MatMatMul>, usize)> {
    let candidates = candidate_kernels(m, k, n);
    ensure!(
        !candidates.is_empty(),
        "no f32 matrix kernel with plain packed panels for {m}×{k}×{n}"
    );
    let mut state = lock();
    let path = match &state.tuning {
        KernelTuning::Estimate => return estimated_best(candidates, m, n),
        KernelTuning::Measure => None,
        KernelTuning::Cached(path) => Some(path.clone()),
    };
    if let Some(path) = &path
        && !state.file_read
    {
        state.file_read = true;
        state.measured = read_cache(path).unwrap_or_default();
    }
    if let Some(c) = state.measured.iter().find(|c| c.shape == (m, k, n))
        && let Some(found) = candidates
            .iter()
            .find(|(mmm, ix)| mmm.name() == c.kernel && *ix == c.packing)
    {
        return Ok((found.0.clone(), found.1));
    }
    // Not measured yet, or the file named a kernel this machine lacks.
    let (mmm, packing) = fastest_kernel(candidates, m, k, n)?;
    state.measured.retain(|c| c.shape != (m, k, n));
    state.measured.push(Choice {
        shape: (m, k, n),
        kernel: mmm.name().to_string(),
        packing,
    });
    if let Some(path) = &path {
        // Best effort by design (see `KernelTuning::Cached`).
        let _ = write_cache(path, &state.measured);
    }
    Ok((mmm, packing))
}

/// The candidate with the lowest estimated cost: the padded output tile
/// area (`m` and `n` rounded up to the kernel's `mr × nr`) over the FMA
/// instructions per load of its register tile, per lane of throughput.
/// Ties go to the first candidate.
pub(super) fn estimated_best(
    candidates: Vec<(Box<dyn MatMatMul>, usize)>,
    m: usize,
    n: usize,
) -> TractResult<(Box<dyn MatMatMul>, usize)> {
    let cost = |mmm: &dyn MatMatMul| estimated_cost(mmm.name(), mmm.mr(), mmm.nr(), m, n);
    type Candidate = (Box<dyn MatMatMul>, usize);
    let mut best: Option<(f64, Candidate)> = None;
    for c in candidates {
        let cost = cost(&*c.0);
        if best.as_ref().is_none_or(|(b, _)| cost < *b) {
            best = Some((cost, c));
        }
    }
    best.map(|(_, c)| c).context("no candidate kernel")
}

/// The cost model of [`estimated_best`], in arbitrary units. A kernel's
/// tile of `mr × nr` outputs loads `mr / lanes` vectors of A and `nr`
/// broadcasts of B per step of `k` for `mr / lanes × nr` FMAs: the more
/// FMAs per load, the closer to the FMA peak. A 512-bit FMA counts for 6
/// lanes of throughput, fitted to this machine's Zen 4 (which splits it in
/// two 256-bit halves): there every AVX2 kernel beat the AVX-512 kernel of
/// the same tile by 10–70 % in the timings. Elsewhere the estimate may be
/// further off; `Measure` and `Cached` time the real thing.
pub(super) fn estimated_cost(name: &str, mr: usize, nr: usize, m: usize, n: usize) -> f64 {
    // (f32 lanes of one vector, lanes of FMA throughput per instruction)
    let (lanes, throughput) = if name.starts_with("avx512") {
        (16.0, 6.0)
    } else if name.starts_with("fma") || name.starts_with("avx") {
        (8.0, 8.0)
    } else {
        // NEON, and tract's generic kernels: 128-bit vectors.
        (4.0, 4.0)
    };
    let a_vectors = (mr as f64 / lanes).max(1.0);
    let fmas_per_load = a_vectors * nr as f64 / (a_vectors + nr as f64);
    let padded = (m.div_ceil(mr) * mr * n.div_ceil(nr) * nr) as f64;
    padded / (throughput * fmas_per_load)
}

/// First line of a cache file. The number changes whenever the file's
/// meaning does.
const CACHE_HEADER: &str = "fewstep kernel choices 1";

/// What a cache file must have been written on: the architecture, the
/// processor's model, and fewstep's version (which pins tract's).
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| {
                l.starts_with("model name")
                    || l.starts_with("CPU part")
                    || l.starts_with("cpu model")
            })?;
            Some(line.split_once(':')?.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{} {} fewstep {}",
        std::env::consts::ARCH,
        cpu,
        env!("CARGO_PKG_VERSION")
    )
}

/// The choices in a cache file, or `None` if it is missing, unreadable,
/// from another machine or version, or malformed in any line.
fn read_cache(path: &Path) -> Option<Vec<Choice>> {
    // A cache is a few hundred bytes: a larger "cache" is not ours.
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > 64 * 1024 {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    parse_cache(&text, &machine())
}

fn parse_cache(text: &str, machine: &str) -> Option<Vec<Choice>> {
    let mut lines = text.lines();
    if lines.next()? != CACHE_HEADER || lines.next()?.strip_prefix("machine ")? != machine {
        return None;
    }
    lines
        .map(|line| {
            let mut f = line.split(' ');
            let mut number = || f.next()?.parse::<usize>().ok();
            let shape = (number()?, number()?, number()?);
            let packing = number()?;
            let kernel = f.next()?.to_string();
            if f.next().is_some() || kernel.is_empty() {
                return None;
            }
            Some(Choice {
                shape,
                kernel,
                packing,
            })
        })
        .collect()
}

fn format_cache(choices: &[Choice], machine: &str) -> String {
    let mut text = format!("{CACHE_HEADER}\nmachine {machine}\n");
    for c in choices {
        let (m, k, n) = c.shape;
        text.push_str(&format!("{m} {k} {n} {} {}\n", c.packing, c.kernel));
    }
    text
}

/// Writes the file whole through a temporary file and a rename, so that a
/// reader (another process) never sees half of it.
fn write_cache(path: &Path, choices: &[Choice]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format_cache(choices, &machine()))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(shape: (usize, usize, usize), kernel: &str, packing: usize) -> Choice {
        Choice {
            shape,
            kernel: kernel.into(),
            packing,
        }
    }

    #[test]
    fn cache_round_trips_and_rejects_what_is_not_ours() {
        let choices = vec![
            choice((140, 32, 32), "fma_mmm_f32_24x4", 0),
            choice((49, 128, 64), "fma_mmm_f32_8x8", 1),
        ];
        let text = format_cache(&choices, "x86_64 CPU tract 0.23");
        assert_eq!(parse_cache(&text, "x86_64 CPU tract 0.23"), Some(choices));
        // Another machine or version, another format, damage.
        assert_eq!(parse_cache(&text, "aarch64 CPU tract 0.23"), None);
        assert_eq!(
            parse_cache(
                &text.replace("choices 1", "choices 2"),
                "x86_64 CPU tract 0.23"
            ),
            None
        );
        for bad in [
            "140 32 32 0\n",
            "140 32 x 0 k\n",
            "1 2 3 4 k extra\n",
            "1 2 3 4 \n",
        ] {
            let damaged = format!("{}{bad}", format_cache(&[], "m"));
            assert_eq!(parse_cache(&damaged, "m"), None, "{bad:?}");
        }
        assert_eq!(parse_cache("", "m"), None);
        assert_eq!(parse_cache(&format_cache(&[], "m"), "m"), Some(vec![]));
    }

    /// The estimate against the timings of session 11 (Zen 4, AVX-512 and
    /// AVX2 kernels; `docs/PERFORMANCE.md`): it picks the timed winner where
    /// one kernel was clearly fastest.
    #[test]
    fn estimate_picks_the_timed_winners_of_this_machine() {
        let kernels: &[(&str, usize, usize)] = &[
            ("avx512_mmm_f32_16x12", 16, 12),
            ("avx512_mmm_f32_16x8", 16, 8),
            ("avx512_mmm_f32_32x6", 32, 6),
            ("avx512_mmm_f32_48x4", 48, 4),
            ("fma_mmm_f32_16x5", 16, 5),
            ("fma_mmm_f32_16x6", 16, 6),
            ("fma_mmm_f32_24x4", 24, 4),
            ("fma_mmm_f32_32x3", 32, 3),
            ("fma_mmm_f32_8x8", 8, 8),
        ];
        let best = |m: usize, n: usize| {
            kernels
                .iter()
                .min_by(|a, b| {
                    estimated_cost(a.0, a.1, a.2, m, n)
                        .total_cmp(&estimated_cost(b.0, b.1, b.2, m, n))
                })
                .map(|k| k.0)
        };
        // Timed: 24x4 28.7 µs, next 32x3 34.5, 48x4 38.3, AVX-512 16x12 49.5.
        assert_eq!(best(140, 32), Some("fma_mmm_f32_24x4"));
        assert_eq!(best(140, 64), Some("fma_mmm_f32_24x4"));
        // Timed: 32x3 49.4 µs, 8x8 50.1, 16x5 51.8; AVX-512 16x12 68.7.
        assert_eq!(best(49, 64), Some("fma_mmm_f32_32x3"));
    }
}
