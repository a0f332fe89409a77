//! `fewstep-train report`: turns the JSON lines of `fewstep-train eval` into
//! docs/RESULTS.md's tables, the paper's targets checked against them, and a
//! quality-vs-latency plot per dataset.
//!
//! A row's `name` is `DATASET|METHOD` (e.g. `fmnist|CD`); rows keep the order
//! of the file within each dataset and method, and a later line for the same
//! (name, steps, sampler) replaces an earlier one (re-running one row is
//! cheap).

pub use crate::evaluation::eval::EvalRecord;
use crate::evaluation::plot::{Series, series_color, write_scatter};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

impl EvalRecord {
    fn dataset(&self) -> &str {
        self.name.split_once('|').map_or("", |(d, _)| d)
    }

    fn method(&self) -> &str {
        self.name.split_once('|').map_or(&self.name, |(_, m)| m)
    }
}

/// Reads a JSON-lines file of eval records (later duplicates win).
pub fn read_records(path: &Path) -> Result<Vec<EvalRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out: Vec<EvalRecord> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: EvalRecord = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an eval record", path.display(), i + 1))?;
        if let Some(old) = out
            .iter_mut()
            .find(|o| o.name == r.name && o.steps == r.steps && o.sampler == r.sampler)
        {
            *old = r;
        } else {
            out.push(r);
        }
    }
    if out.is_empty() {
        bail!("{} holds no eval records", path.display());
    }
    Ok(out)
}

fn find<'a>(
    rows: &'a [EvalRecord],
    dataset: &str,
    method: &str,
    steps: u32,
) -> Option<&'a EvalRecord> {
    rows.iter()
        .find(|r| r.dataset() == dataset && r.method() == method && r.steps == steps)
}

/// Percent change of `a` over `b`, for the targets (`None` when `b` is not a
/// usable reference).
fn rel(a: f64, b: f64) -> Option<f64> {
    (b.abs() > 0.0).then(|| 100.0 * (a - b) / b.abs())
}

/// The paper's targets, checked on the rows of `dataset`: one line each.
fn targets(rows: &[EvalRecord], dataset: &str) -> Vec<String> {
    let mut out = Vec::new();
    let teacher = find(rows, dataset, "teacher aDDIM", 512);
    for (t, limit) in [(8, 10.0), (4, 30.0)] {
        match (find(rows, dataset, "CD", t), teacher) {
            (Some(cd), Some(tr)) => {
                let r = rel(cd.kid_mean, tr.kid_mean);
                let verdict = match r {
                    Some(r) if r <= limit => "met",
                    Some(_) => "NOT met",
                    None => "undefined (teacher KID is 0)",
                };
                out.push(format!(
                    "- {t}-step CD within {limit:.0} % of the teacher's 512-step aDDIM KID: \
                     {:.2} vs {:.2}, {} → **{verdict}**",
                    cd.kid_mean,
                    tr.kid_mean,
                    r.map_or("n/a".into(), |r| format!("{r:+.0} %")),
                ));
            }
            _ => out.push(format!(
                "- {t}-step CD vs the teacher's 512-step aDDIM: rows missing"
            )),
        }
    }
    for t in [1, 2, 4, 8] {
        if let Some(pd) = find(rows, dataset, "PD", t) {
            for m in ["CD", "CT"] {
                if let Some(cm) = find(rows, dataset, m, t) {
                    let better = cm.kid_mean < pd.kid_mean;
                    out.push(format!(
                        "- {m} better than PD at {t} steps: KID {:.2} vs {:.2}, FID {:.2} vs {:.2} → **{}**",
                        cm.kid_mean,
                        pd.kid_mean,
                        cm.fid,
                        pd.fid,
                        if better { "yes" } else { "no" }
                    ));
                }
            }
        }
    }
    for t in [4, 8, 16, 64] {
        if let (Some(a), Some(d)) = (
            find(rows, dataset, "teacher aDDIM", t),
            find(rows, dataset, "teacher DDIM", t),
        ) {
            out.push(format!(
                "- aDDIM better than DDIM at {t} steps: KID {:.2} vs {:.2}, FID {:.2} vs {:.2} → **{}**",
                a.kid_mean,
                d.kid_mean,
                a.fid,
                d.fid,
                if a.kid_mean < d.kid_mean { "yes" } else { "no" }
            ));
        }
    }
    out
}

/// Writes the markdown tables (one per dataset) and, per dataset, a
/// quality-vs-latency plot `PLOT_DIR/quality-latency-DATASET.png`. Returns the
/// markdown (without any hand-written preamble: the caller adds it).
pub fn render(rows: &[EvalRecord], plot_dir: &Path, doc_dir: &Path) -> Result<String> {
    let mut datasets: Vec<&str> = Vec::new();
    for r in rows {
        if !datasets.contains(&r.dataset()) {
            datasets.push(r.dataset());
        }
    }
    let mut md = String::new();
    for ds in datasets {
        let mut ds_rows: Vec<&EvalRecord> = rows.iter().filter(|r| r.dataset() == ds).collect();
        let mut methods: Vec<&str> = Vec::new();
        for r in &ds_rows {
            if !methods.contains(&r.method()) {
                methods.push(r.method());
            }
        }
        // Teachers, then the students, then the rest (ablations); steps
        // ascending within a method. Rows arrive in the order they were run.
        methods.sort_by_key(|m| method_rank(m));
        let position = |m: &str| methods.iter().position(|x| *x == m).unwrap_or(usize::MAX);
        ds_rows.sort_by_key(|r| (position(r.method()), r.steps));
        let n = ds_rows[0].n;
        writeln!(md, "\n## {ds}\n")?;
        if ds_rows.iter().any(|r| r.n != n) {
            writeln!(md, "**Warning: rows differ in N.**\n")?;
        }
        let floor = ds_rows.iter().find(|r| r.floor_kid_mean.is_some());
        if let Some(f) = floor {
            writeln!(
                md,
                "Real-vs-real floor (N = {n} training images vs the reference set, same metric): \
                 KID {:.3} ± {:.3}, FID {:.2}.\n",
                f.floor_kid_mean.unwrap_or(f64::NAN),
                f.floor_kid_std.unwrap_or(f64::NAN),
                f.floor_fid.unwrap_or(f64::NAN),
            )?;
        }
        writeln!(
            md,
            "| method | steps | sampler | KID (± std) | FID | ms / sample | label agreement | samples |"
        )?;
        writeln!(md, "|---|---:|---|---:|---:|---:|---:|---|")?;
        for r in &ds_rows {
            let grid = r.grid.as_deref().map_or(String::from("—"), |g| {
                let p = PathBuf::from(g);
                let shown = p.strip_prefix(doc_dir).unwrap_or(&p);
                format!("[grid]({})", shown.display())
            });
            writeln!(
                md,
                "| {} | {} | {} | {:.3} ± {:.3} | {:.2} | {:.1} | {} | {} |",
                r.method(),
                r.steps,
                r.sampler,
                r.kid_mean,
                r.kid_std,
                r.fid,
                r.ms_per_sample,
                r.label_agreement
                    .map_or("—".into(), |a| format!("{:.1} %", 100.0 * a)),
                grid
            )?;
        }
        let t = targets(rows, ds);
        if !t.is_empty() {
            writeln!(md, "\nTargets (KID in these features; lower is better):\n")?;
            for line in t {
                writeln!(md, "{line}")?;
            }
        }
        let series: Vec<Series> = methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut pts: Vec<(u32, f64, f64)> = ds_rows
                    .iter()
                    .filter(|r| r.method() == *m)
                    .map(|r| (r.steps, r.ms_per_sample, r.fid))
                    .collect();
                pts.sort_by_key(|p| p.0);
                Series {
                    name: (*m).to_string(),
                    color: series_color(i),
                    points: pts.into_iter().map(|p| (p.1, p.2)).collect(),
                }
            })
            .collect();
        let plot = plot_dir.join(format!("quality-latency-{ds}.png"));
        write_scatter(&plot, ds, "ms per sample", "FID", &series)?;
        let shown = plot.strip_prefix(doc_dir).unwrap_or(&plot);
        writeln!(md, "\n![FID vs ms per sample, {ds}]({})\n", shown.display())?;
    }
    Ok(md)
}

/// Order of a method in the tables: the teacher's samplers, then the few-step
/// families the paper compares (CD, CT, PD), then everything else. The sort
/// is stable, so methods of one rank keep their first-seen order.
fn method_rank(method: &str) -> u8 {
    match method {
        "teacher DDIM" => 0,
        "teacher aDDIM" => 1,
        m if m.starts_with("teacher") => 2,
        "CD" => 3,
        "CT" => 4,
        "PD" => 5,
        _ => 6,
    }
}

/// Markers around the generated part of the results document.
pub const BEGIN: &str = "<!-- generated by `fewstep-train report`: do not edit below -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- end of generated part -->";

/// Replaces the generated part of `doc` (between [`BEGIN`] and [`END`]) with
/// `generated`, keeping the hand-written text around it; a new document gets
/// a one-line title.
pub fn splice(doc: Option<&str>, generated: &str) -> String {
    let body = format!("{BEGIN}\n{generated}\n{END}\n");
    match doc {
        Some(d) => match (d.find(BEGIN), d.find(END)) {
            (Some(b), Some(e)) if e > b => {
                let rest = d[e + END.len()..].trim_start_matches('\n');
                let gap = if rest.is_empty() { "" } else { "\n" };
                format!("{}{body}{gap}{rest}", &d[..b])
            }
            _ => format!("{}\n\n{body}", d.trim_end()),
        },
        None => format!("# Results\n\n{body}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, steps: u32, sampler: &str, kid: f64, fid: f64) -> EvalRecord {
        EvalRecord {
            name: name.into(),
            model: "m.onnx".into(),
            classifier: "c".into(),
            classifier_accuracy: 0.9,
            reference: "r".into(),
            reference_n: 100,
            steps,
            sampler: sampler.into(),
            student_steps: 0,
            n: 100,
            seed: 0,
            batch: 100,
            threads: 1,
            kid_mean: kid,
            kid_std: 0.0,
            kid_subsets: 10,
            kid_subset_size: 100,
            fid,
            floor_n: Some(100),
            floor_kid_mean: Some(0.0001),
            floor_kid_std: Some(0.0),
            floor_fid: Some(0.5),
            ms_per_sample: steps as f64,
            eval_seconds: 1.0,
            class_hist: vec![],
            class_names: vec![],
            label_agreement: None,
            grid: None,
            created: "t".into(),
        }
    }

    #[test]
    fn splice_keeps_the_hand_written_text() {
        let first = splice(None, "T1");
        assert!(first.starts_with("# Results") && first.contains("T1"));
        let edited = first.replace("# Results", "# Results\n\nintro") + "\nafter\n";
        let second = splice(Some(&edited), "T2");
        assert!(second.contains("intro") && second.contains("after"));
        assert!(second.contains("T2") && !second.contains("T1"));
        assert_eq!(second.matches(BEGIN).count(), 1);
        // Re-rendering the same rows changes nothing (blank lines included).
        assert_eq!(splice(Some(&second), "T2"), second);
    }

    #[test]
    fn targets_compare_the_right_rows() {
        let rows = vec![
            rec("f|teacher aDDIM", 512, "addim", 0.010, 5.0),
            rec("f|CD", 8, "ddim", 0.0105, 6.0),
            rec("f|CD", 4, "ddim", 0.014, 7.0),
            rec("f|PD", 4, "ddim", 0.020, 9.0),
            rec("f|teacher aDDIM", 4, "addim", 0.05, 20.0),
            rec("f|teacher DDIM", 4, "ddim", 0.08, 30.0),
        ];
        let t = targets(&rows, "f");
        assert!(
            t[0].contains("8-step CD") && t[0].ends_with("**met**"),
            "{}",
            t[0]
        );
        assert!(
            t[1].contains("4-step CD") && t[1].ends_with("**NOT met**"),
            "{}",
            t[1]
        );
        assert!(
            t.iter()
                .any(|l| l.contains("CD better than PD at 4 steps") && l.ends_with("**yes**"))
        );
        assert!(
            t.iter()
                .any(|l| l.contains("aDDIM better than DDIM at 4") && l.ends_with("**yes**"))
        );
    }

    #[test]
    fn tables_group_teachers_then_students_with_steps_ascending() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            rec("f|CD, fixed teacher", 4, "ddim", 0.1, 1.0),
            rec("f|PD", 2, "ddim", 0.1, 1.0),
            rec("f|CD", 8, "ddim", 0.1, 1.0),
            rec("f|teacher aDDIM", 64, "addim", 0.1, 1.0),
            rec("f|CD", 1, "ddim", 0.1, 1.0),
            rec("f|teacher DDIM", 4, "ddim", 0.1, 1.0),
            rec("f|CT", 4, "ddim", 0.1, 1.0),
        ];
        let md = render(&rows, dir.path(), dir.path()).unwrap();
        let order: Vec<String> = md
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| method"))
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                format!("{} {}", cells[0].trim_start_matches("| "), cells[1])
            })
            .collect();
        assert_eq!(
            order,
            [
                "teacher DDIM 4",
                "teacher aDDIM 64",
                "CD 1",
                "CD 8",
                "CT 4",
                "PD 2",
                "CD, fixed teacher 4"
            ]
        );
    }

    #[test]
    fn later_lines_replace_earlier_ones_and_render_writes_a_plot() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.jsonl");
        // Lines as `eval` writes them: the same type, serialised.
        let line = |kid: f64| {
            let mut r = rec("fm|CD", 4, "ddim", kid, 3.0);
            r.kid_std = 0.001;
            r.ms_per_sample = 2.0;
            r.label_agreement = Some(0.9);
            serde_json::to_string(&r).unwrap() + "\n"
        };
        std::fs::write(&f, line(0.5) + &line(0.25)).unwrap();
        let rows = read_records(&f).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].kid_mean, 0.25);
        let md = render(&rows, dir.path(), dir.path()).unwrap();
        assert!(
            md.contains("| CD | 4 | ddim | 0.250 ± 0.001 | 3.00 | 2.0 | 90.0 % | — |"),
            "{md}"
        );
        assert!(dir.path().join("quality-latency-fm.png").exists());
        std::fs::write(&f, "not json\n").unwrap();
        let err = read_records(&f).unwrap_err().to_string();
        assert!(err.contains("r.jsonl:1"), "{err}");
    }
}
