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

/// 3×5 glyphs, one row per entry, bit 2 = left column.
fn glyph(c: char) -> [u8; 5] {
    match c {
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
