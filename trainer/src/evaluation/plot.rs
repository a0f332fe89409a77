//! The loss curve as a PNG: raw per-step loss (light) and its running average
//! (dark) on a log axis, with tick labels in a built-in 3×5 pixel font (no
//! font files needed).

use crate::checkpoint::StepLog;
use anyhow::Result;
use std::path::Path;

const W: usize = 720;
const H: usize = 420;
const LEFT: usize = 64;
const RIGHT: usize = 16;
const TOP: usize = 24;
const BOTTOM: usize = 36;
const SCALE: usize = 2;

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            px: vec![255; W * H * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`.
    fn text(&mut self, x: i64, y: i64, text: &str, c: [u8; 3]) {
        let mut cx = x;
        for ch in text.chars() {
            let glyph = glyph(ch);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for sy in 0..SCALE {
                            for sx in 0..SCALE {
                                self.set(
                                    cx + (col * SCALE + sx) as i64,
                                    y + (row * SCALE + sy) as i64,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
            cx += (4 * SCALE) as i64;
        }
    }
}

fn text_width(text: &str) -> i64 {
    (text.chars().count() * 4 * SCALE) as i64
}

/// 3×5 glyphs, one row per entry, bit 2 = left column (upper case is drawn
/// as lower case).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_lowercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        'k' => [4, 5, 6, 5, 5],
        'l' => [6, 2, 2, 2, 7],
        'o' => [0, 7, 5, 5, 7],
        's' => [0, 7, 6, 1, 7],
        't' => [2, 7, 2, 2, 3],
        'p' => [0, 7, 5, 7, 4],
        'g' => [0, 7, 5, 7, 1],
        'a' => [0, 7, 1, 7, 7],
        'v' => [0, 5, 5, 5, 2],
        'r' => [0, 7, 4, 4, 4],
        'i' => [2, 0, 2, 2, 2],
        'n' => [0, 6, 5, 5, 5],
        'w' => [0, 5, 5, 7, 7],
        ':' => [0, 2, 0, 2, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '=' => [0, 7, 0, 7, 0],
        'b' => [4, 4, 7, 5, 7],
        'c' => [0, 7, 4, 4, 7],
        'd' => [1, 1, 7, 5, 7],
        'f' => [3, 4, 7, 4, 4],
        'h' => [4, 4, 7, 5, 5],
        'j' => [1, 0, 1, 5, 7],
        'm' => [0, 7, 7, 5, 5],
        'q' => [0, 7, 5, 7, 1],
        'u' => [0, 5, 5, 5, 7],
        'x' => [0, 5, 2, 2, 5],
        'y' => [5, 5, 7, 1, 7],
        'z' => [0, 7, 1, 4, 7],
        '/' => [1, 1, 2, 4, 4],
        '%' => [5, 1, 2, 4, 5],
        '+' => [0, 2, 7, 2, 0],
        ',' => [0, 0, 0, 2, 4],
        '_' => [0, 0, 0, 0, 7],
        _ => [0, 0, 0, 0, 0],
    }
}

/// A compact number label: `0.05`, `1.2`, `3e-4`, `12k`.
fn label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10_000.0 {
        format!("{}k", (v / 1000.0).round())
    } else if a >= 10.0 {
        format!("{}", v.round())
    } else if a >= 0.01 {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

/// Writes the loss curve of `log` to `path`.
pub fn write_loss_curve(path: &Path, log: &[StepLog]) -> Result<()> {
    let mut cv = Canvas::new();
    let black = [0, 0, 0];
    let grid = [225, 225, 225];
    let (x0, x1) = (LEFT as i64, (W - RIGHT) as i64);
    let (y0, y1) = (TOP as i64, (H - BOTTOM) as i64);
    let points: Vec<(f64, f64)> = log
        .iter()
        .filter(|e| e.loss.is_finite() && e.loss > 0.0)
        .map(|e| (e.step as f64, f64::from(e.loss)))
        .collect();
    // Running average (bias-corrected exponential moving average).
    let mut smooth = Vec::with_capacity(points.len());
    let (mut acc, mut wsum) = (0.0, 0.0);
    let beta = if points.len() > 200 { 0.98 } else { 0.9 };
    for &(s, l) in &points {
        acc = beta * acc + (1.0 - beta) * l.ln();
        wsum = beta * wsum + (1.0 - beta);
        smooth.push((s, (acc / wsum).exp()));
    }
    let (smin, smax) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (lmin, lmax) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1.ln()), b.max(p.1.ln()))
        });
    let (smin, smax) = if smin.is_finite() && smax > smin {
        (smin, smax)
    } else {
        (0.0, smin.max(1.0) + 1.0)
    };
    let (lmin, lmax) = if lmin.is_finite() && lmax > lmin {
        (lmin, lmax)
    } else {
        let c = if lmin.is_finite() { lmin } else { 0.0 };
        (c - 0.5, c + 0.5)
    };
    let px = |s: f64| x0 + ((s - smin) / (smax - smin) * (x1 - x0) as f64).round() as i64;
    let py = |l: f64| y1 - ((l - lmin) / (lmax - lmin) * (y1 - y0) as f64).round() as i64;
    // Grid and tick labels: 5 on each axis (y evenly in log space).
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let s = smin + f * (smax - smin);
        let x = px(s);
        cv.line(x, y0, x, y1, grid);
        let l = label(s);
        cv.text(x - text_width(&l) / 2, y1 + 6, &l, black);
        let lv = lmin + f * (lmax - lmin);
        let y = py(lv);
        cv.line(x0, y, x1, y, grid);
        let l = label(lv.exp());
        cv.text(x0 - 6 - text_width(&l), y - 5, &l, black);
    }
    cv.line(x0, y0, x0, y1, black);
    cv.line(x0, y1, x1, y1, black);
    cv.text(x0, 6, "loss (log) vs step", black);
    for &(s, l) in &points {
        cv.set(px(s), py(l.ln()), [160, 190, 230]);
    }
    for w in smooth.windows(2) {
        cv.line(
            px(w[0].0),
            py(w[0].1.ln()),
            px(w[1].0),
            py(w[1].1.ln()),
            [20, 40, 160],
        );
    }
    crate::sample::write_rgb_png(path, W, H, &cv.px)
}

/// One named, coloured series of a scatter plot; its points are joined in
/// order.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Line and marker colour.
    pub color: [u8; 3],
    /// `(x, y)`, both > 0 (log axes); others are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A colour per series index that stays readable on white.
pub fn series_color(i: usize) -> [u8; 3] {
    const C: [[u8; 3]; 8] = [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [23, 190, 207],
    ];
    C[i % C.len()]
}

/// Writes a log-log scatter plot of `series` (joined points, a legend at the
/// top right) to `path`: the quality-vs-latency plot of docs/RESULTS.md.
pub fn write_scatter(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let px = render_scatter(title, x_label, y_label, series);
    crate::sample::write_rgb_png(path, W, H, &px)
}

/// The RGB8 pixels (`W × H`) of [`write_scatter`]'s plot.
fn render_scatter(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Vec<u8> {
    let mut cv = Canvas::new();
    let black = [0, 0, 0];
    let grid = [225, 225, 225];
    let (x0, x1) = (LEFT as i64, (W - RIGHT) as i64);
    let (y0, y1) = ((TOP + 8) as i64, (H - BOTTOM - 12) as i64);
    let valid = |p: &&(f64, f64)| p.0 > 0.0 && p.1 > 0.0 && p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().filter(valid).map(|p| (p.0.ln(), p.1.ln())))
        .collect();
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(f(p)), b.max(f(p)))
            });
        if lo.is_finite() && hi > lo {
            let pad = 0.06 * (hi - lo);
            (lo - pad, hi + pad)
        } else {
            let c = if lo.is_finite() { lo } else { 0.0 };
            (c - 0.5, c + 0.5)
        }
    };
    let (xmin, xmax) = range(|p| p.0);
    let (ymin, ymax) = range(|p| p.1);
    let px = |v: f64| x0 + ((v - xmin) / (xmax - xmin) * (x1 - x0) as f64).round() as i64;
    let py = |v: f64| y1 - ((v - ymin) / (ymax - ymin) * (y1 - y0) as f64).round() as i64;
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let xv = xmin + f * (xmax - xmin);
        let x = px(xv);
        cv.line(x, y0, x, y1, grid);
        let l = label(xv.exp());
        cv.text(x - text_width(&l) / 2, y1 + 6, &l, black);
        let yv = ymin + f * (ymax - ymin);
        let y = py(yv);
        cv.line(x0, y, x1, y, grid);
        let l = label(yv.exp());
        cv.text(x0 - 6 - text_width(&l), y - 5, &l, black);
    }
    cv.line(x0, y0, x0, y1, black);
    cv.line(x0, y1, x1, y1, black);
    cv.text(
        x0,
        6,
        &format!("{title}: {y_label} (log) vs {x_label} (log)"),
        black,
    );
    cv.text(
        (x0 + x1) / 2 - text_width(x_label) / 2,
        (H - 14) as i64,
        x_label,
        black,
    );
    for s in series {
        let pts: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(valid)
            .map(|p| (px(p.0.ln()), py(p.1.ln())))
            .collect();
        for w in pts.windows(2) {
            cv.line(w[0].0, w[0].1, w[1].0, w[1].1, s.color);
        }
        for &(x, y) in &pts {
            for d in -3..=3 {
                cv.line(x - 3, y + d, x + 3, y + d, s.color);
            }
        }
    }
    // Legend: a swatch and the name per series, top right.
    let legend_w = series
        .iter()
        .map(|s| text_width(&s.name))
        .max()
        .unwrap_or(0)
        + 24;
    let (lx, mut ly) = (x1 - legend_w - 8, y0 + 8);
    for s in series {
        for d in 0..8 {
            cv.line(lx, ly + d, lx + 12, ly + d, s.color);
        }
        cv.text(lx + 18, ly - 1, &s.name, black);
        ly += 16;
    }
    cv.px
}

/// Writes the per-step log as CSV.
pub fn write_csv(path: &Path, log: &[StepLog]) -> Result<()> {
    let mut s = String::from("step,loss,lr,grad_norm\n");
    for e in log {
        s.push_str(&format!("{},{},{},{}\n", e.step, e.loss, e.lr, e.grad_norm));
    }
    crate::checkpoint::write_atomic(path, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_compact() {
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(1.25), "1.25");
        assert_eq!(label(250.0), "250");
        assert_eq!(label(20_000.0), "20k");
        assert_eq!(label(0.0003), "3e-4");
    }

    #[test]
    fn every_legend_character_has_a_glyph() {
        for c in "abcdefghijklmnopqrstuvwxyz0123456789.-:()=/%+,_".chars() {
            assert_ne!(glyph(c), [0; 5], "{c:?} has no glyph");
        }
        assert_eq!(glyph('K'), glyph('k'));
    }

    #[test]
    fn scatter_plot_draws_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.png");
        let series: Vec<Series> = (0..3)
            .map(|i| Series {
                name: format!("series {i}"),
                color: series_color(i),
                points: vec![
                    (1.0 + i as f64, 0.1),
                    (10.0, 0.01 * (i + 1) as f64),
                    (0.0, 1.0),
                ],
            })
            .collect();
        let px = render_scatter("t", "ms per sample", "kid", &series);
        for s in &series {
            let n = px.chunks_exact(3).filter(|p| *p == s.color).count();
            assert!(n > 50, "{} drew only {n} pixels", s.name);
        }
        write_scatter(&p, "t", "ms per sample", "kid", &series).unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[1..4], b"PNG");
        // Degenerate input still writes a picture.
        write_scatter(&p, "t", "x", "y", &[]).unwrap();
    }

    #[test]
    fn writes_a_png_for_short_and_empty_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log: Vec<StepLog> = (1..=50)
            .map(|s| StepLog {
                step: s,
                loss: 1.0 / s as f32,
                lr: 1e-4,
                grad_norm: 1.0,
            })
            .collect();
        for (name, l) in [
            ("a.png", &log[..]),
            ("b.png", &[][..]),
            ("c.png", &log[..1]),
        ] {
            let p = dir.path().join(name);
            write_loss_curve(&p, l).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
        }
    }
}
