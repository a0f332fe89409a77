//! Winograd convolutions against tract's direct convolution, and the
//! transforms against their definitions.

use super::*;
use fewstep_core::rng::GaussianStream;

fn gaussian(len: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; len];
    GaussianStream::new(seed, 0).fill(&mut v);
    v
}

/// Direct cross-correlation, in f64.
#[allow(clippy::too_many_arguments)]
fn reference(
    g: &Geometry,
    cin: usize,
    cout: usize,
    x: &[f32],
    k: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let mut y = vec![0f32; g.batch * cout * g.out_h * g.out_w];
    for n in 0..g.batch {
        for o in 0..cout {
            for yy in 0..g.out_h {
                for xx in 0..g.out_w {
                    let mut s = if bias.len() == 1 { bias[0] } else { bias[o] } as f64;
                    for i in 0..cin {
                        for a in 0..3 {
                            for b in 0..3 {
                                let (r, c) = (
                                    (yy + a) as isize - g.pad_top as isize,
                                    (xx + b) as isize - g.pad_left as isize,
                                );
                                if r < 0 || c < 0 || r >= g.in_h as isize || c >= g.in_w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((n * cin + i) * g.in_h + r as usize) * g.in_w + c as usize];
                                s += xv as f64 * k[((o * cin + i) * 3 + a) * 3 + b] as f64;
                            }
                        }
                    }
                    y[((n * cout + o) * g.out_h + yy) * g.out_w + xx] = s as f32;
                }
            }
        }
    }
    y
}

/// Runs the op on `x` with `threads` threads.
fn run_op(op: &WinogradConv, x: Tensor, bias: Tensor, threads: usize) -> Vec<f32> {
    let executor = if threads > 1 {
        Executor::multithread(threads)
    } else {
        Executor::SingleThread
    };
    let y = multithread_tract_scope(executor, || {
        op.eval(
            &EvalContext::out_of_plan(),
            tvec!(x.into_tvalue(), bias.into_tvalue()),
        )
    })
    .unwrap()
    .remove(0);
    y.try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

/// The whole op against a direct convolution for odd and even sizes,
/// every padding, a batch, channel counts off the kernel's panels, and
/// thread counts that cut the work into smaller blocks and channel
/// groups.
#[test]
fn matches_a_direct_convolution() {
    let cases = [
        // (batch, cin, cout, h, w, pad_top, pad_left, pad_bottom, pad_right)
        (1, 3, 4, 8, 8, 1, 1, 1, 1),
        (2, 5, 3, 7, 9, 1, 1, 1, 1),
        (1, 2, 2, 6, 5, 0, 0, 0, 0),
        (1, 4, 6, 5, 6, 1, 0, 0, 1),
        (3, 1, 1, 1, 1, 1, 1, 1, 1),
        (1, 40, 37, 16, 16, 1, 1, 1, 1),
        (1, 33, 70, 8, 8, 1, 1, 1, 1),
        (2, 32, 32, 11, 30, 1, 1, 1, 1),
    ];
    for (seed, &(batch, cin, cout, h, w, pt, pl, pb, pr)) in cases.iter().enumerate() {
        let g = Geometry {
            batch,
            in_h: h,
            in_w: w,
            out_h: h + pt + pb - 2,
            out_w: w + pl + pr - 2,
            pad_top: pt,
            pad_left: pl,
        };
        let x = gaussian(batch * cin * h * w, seed as u64);
        let k = gaussian(cout * cin * 9, 100 + seed as u64);
        let bias = if seed % 2 == 0 {
            gaussian(cout, 200)
        } else {
            vec![0.25]
        };
        let op = WinogradConv {
            geo: g,
            in_ch: cin,
            out_ch: cout,
            products: Arc::new(Products::new(&g, cin, cout, &k).unwrap()),
        };
        let want = reference(&g, cin, cout, &x, &k, &bias);
        for threads in [1, 2, 3, 5] {
            let y = run_op(
                &op,
                Tensor::from_shape(&[batch, cin, h, w], &x).unwrap(),
                Tensor::from_shape(&[bias.len()], &bias).unwrap(),
                threads,
            );
            assert_eq!(y.len(), want.len());
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()) * (cin as f32).sqrt(),
                    "case {seed}, {threads} threads, [{i}]: {a} vs {b}"
                );
            }
        }
    }
}

/// Every candidate kernel gives the same bits, so the measured choice
/// changes the speed only.
#[test]
fn every_kernel_gives_the_same_result() {
    let g = Geometry {
        batch: 1,
        in_h: 16,
        in_w: 14,
        out_h: 16,
        out_w: 14,
        pad_top: 1,
        pad_left: 1,
    };
    let (cin, cout) = (40, 37);
    let x = gaussian(cin * 16 * 14, 1);
    let k = gaussian(cout * cin * 9, 2);
    let bias = gaussian(cout, 3);
    let (_, m) = Products::block_shape(&g);
    let candidates = candidate_kernels(m, cin, cout);
    assert!(!candidates.is_empty());
    let mut first: Option<(String, Vec<f32>)> = None;
    for (mmm, ix) in candidates {
        let name = mmm.name().to_string();
        let op = WinogradConv {
            geo: g,
            in_ch: cin,
            out_ch: cout,
            products: Arc::new(Products::with_kernel(&g, cin, cout, &k, mmm, ix).unwrap()),
        };
        let y = run_op(
            &op,
            Tensor::from_shape(&[1, cin, 16, 14], &x).unwrap(),
            Tensor::from_shape(&[cout], &bias).unwrap(),
            1,
        );
        match &first {
            None => first = Some((name, y)),
            Some((n0, y0)) => assert!(y == *y0, "{name} differs from {n0}"),
        }
    }
}

/// More threads cut the work into more tasks, never across an output
/// element, and every element is in exactly one task.
#[test]
fn blocks_cover_the_output_once() {
    for (batch, h, cin, cout) in [
        (1, 32, 64, 64),
        (1, 8, 128, 128),
        (3, 16, 64, 128),
        (1, 3, 32, 40),
    ] {
        let g = Geometry {
            batch,
            in_h: h,
            in_w: h,
            out_h: h,
            out_w: h,
            pad_top: 1,
            pad_left: 1,
        };
        let k = gaussian(cout * cin * 9, 1);
        let op = WinogradConv {
            geo: g,
            in_ch: cin,
            out_ch: cout,
            products: Arc::new(Products::new(&g, cin, cout, &k).unwrap()),
        };
        for threads in 1..=8 {
            let blocks = op.blocks(threads);
            let mut seen = vec![0u8; batch * g.tiles_h() * cout];
            for b in &blocks {
                for ty in b.rows.clone() {
                    for c in b.channels.clone() {
                        seen[(b.image * g.tiles_h() + ty) * cout + c] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&s| s == 1),
                "{batch}×{h}², {threads} threads"
            );
            if threads == 1 {
                assert_eq!(
                    blocks.len(),
                    batch * g.tiles_h().div_ceil(op.products.rows_per_block)
                );
            } else {
                // Enough tasks, or the channels cut as fine as the
                // kernel's panels allow.
                let nr = op.products.mmm.nr();
                assert!(
                    blocks.len() >= threads || blocks.iter().all(|b| b.channels.len() <= nr),
                    "{batch}×{h}², {threads} threads: {blocks:?}"
                );
            }
        }
    }
}

/// The written-out transforms are the matrices Bᵀ and Aᵀ.
#[test]
fn transforms_are_the_matrices() {
    let g = Geometry {
        batch: 1,
        in_h: 4,
        in_w: 4,
        out_h: 2,
        out_w: 2,
        pad_top: 0,
        pad_left: 0,
    };
    let d = gaussian(16, 7);
    let mut v = [[0f32; 1]; 16];
    let mut rows: Vec<&mut [f32]> = v.iter_mut().map(|r| &mut r[..]).collect();
    let layout = TileLayout {
        mr: 1,
        panel_len: 1,
        channel: 0,
    };
    InputScratch::new(&g, 1).transform_rows(&g, &d, 0..1, &mut rows, layout);
    for k in 0..4 {
        for l in 0..4 {
            let want: f32 = (0..4)
                .flat_map(|i| (0..4).map(move |j| (i, j)))
                .map(|(i, j)| BT[k][i] * d[i * 4 + j] * BT[l][j])
                .sum();
            assert!((v[k * 4 + l][0] - want).abs() < 1e-5);
        }
    }
    let m = gaussian(16, 8);
    let mut y = [[0f32; 2]; 2];
    {
        let mut out = y.each_mut().into_iter();
        OutputScratch::default().transform(
            &g,
            0..1,
            |xi| &m[xi..][..1],
            0.0,
            |_| out.next().unwrap(),
        );
    }
    for a in 0..2 {
        for b in 0..2 {
            let want: f32 = (0..4)
                .flat_map(|i| (0..4).map(move |j| (i, j)))
                .map(|(i, j)| AT[a][i] * m[i * 4 + j] * AT[b][j])
                .sum();
            assert!((y[a][b] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn algorithm_names_round_trip() {
    for a in [ConvAlgorithm::Direct, ConvAlgorithm::Winograd] {
        assert_eq!(a.to_string().parse::<ConvAlgorithm>(), Ok(a));
    }
    assert!(
        "winograd4"
            .parse::<ConvAlgorithm>()
            .unwrap_err()
            .contains("winograd or direct")
    );
}
