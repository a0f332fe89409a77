use fewstep_core::rng::*;

#[test]
fn philox_matches_random123_known_answers() {
    // Random123 kat_vectors, "philox4x32 10" lines: counter, key -> output.
    let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (ctr, key, want) in cases {
        assert_eq!(philox4x32_10(ctr, key), want);
    }
}

#[test]
fn same_seed_same_bits_and_pinned_values() {
    let mut a = vec![0.0f32; 1000];
    let mut b = vec![0.0f32; 1000];
    image_noise(42, 3, &mut a);
    image_noise(42, 3, &mut b);
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    image_noise(43, 3, &mut b);
    assert_ne!(a, b);
    image_noise(42, 4, &mut b);
    assert_ne!(a, b);
    // Pinned: element 0 of seed 0 stream 0 is Box-Muller of the first KAT block.
    let bits = philox4x32_10([0; 4], [0; 2]);
    let r = (-2.0 * u32_to_open_unit(bits[0]).ln()).sqrt();
    let th = 2.0 * std::f64::consts::PI * u32_to_open_unit(bits[1]);
    let want = [(r * th.cos()) as f32, (r * th.sin()) as f32];
    let s = GaussianStream::new(0, 0);
    for (j, w) in want.iter().enumerate() {
        assert!((s.at(j as u64) - w).abs() <= 1e-6, "element {j}");
    }
}

#[test]
fn image_noise_does_not_depend_on_batch_size() {
    let d = 3 * 9 * 11; // not a multiple of 4: images straddle Philox blocks
    let mut single = vec![0.0f32; d];
    image_noise(7, 5, &mut single);
    let mut batch = vec![0.0f32; 7 * d];
    batch_noise(7, 0, d, &mut batch);
    assert_eq!(&batch[5 * d..6 * d], &single[..]);
    // A batch starting elsewhere gives the same images.
    let mut tail = vec![0.0f32; 2 * d];
    batch_noise(7, 5, d, &mut tail);
    assert_eq!(&tail[..d], &single[..]);
}

#[test]
fn fill_is_seekable_and_chunk_independent() {
    let mut whole = vec![0.0f32; 103];
    GaussianStream::new(9, 1).fill(&mut whole);
    let mut s = GaussianStream::new(9, 1);
    let mut parts = vec![0.0f32; 103];
    let (a, rest) = parts.split_at_mut(1);
    s.fill(a);
    let (b, c) = rest.split_at_mut(6);
    s.fill(b);
    s.fill(c);
    assert_eq!(whole, parts);
    assert_eq!(s.position(), 103);
    s.seek(50);
    let mut one = [0.0f32; 1];
    s.fill(&mut one);
    assert_eq!(one[0], whole[50]);
    assert_eq!(GaussianStream::new(9, 1).at(77), whole[77]);
}

#[test]
fn gaussian_moments_within_statistical_bounds() {
    let n = 1_000_000usize;
    let mut v = vec![0.0f32; n];
    image_noise(2024, 0, &mut v);
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    let skew = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(3))
        .sum::<f64>()
        / n as f64;
    let kurt = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(4))
        .sum::<f64>()
        / n as f64;
    // 5-sigma bounds: sd(mean) = 1e-3, sd(var) = sqrt(2/n) = 1.41e-3,
    // sd(3rd moment) = sqrt(15/n) = 3.9e-3, sd(4th) = sqrt(96/n) = 9.8e-3.
    assert!(mean.abs() < 5e-3, "mean {mean}");
    assert!((var - 1.0).abs() < 7.1e-3, "var {var}");
    assert!(skew.abs() < 2e-2, "skew {skew}");
    assert!((kurt - 3.0).abs() < 5e-2, "kurtosis {kurt}");
    // Tail mass beyond 2 sigma: 4.55 %, sd ~ 2.1e-4.
    let tail = v.iter().filter(|x| x.abs() > 2.0).count() as f64 / n as f64;
    assert!((tail - 0.0455).abs() < 1.1e-3, "tail {tail}");
}

#[test]
fn uniform_stream_is_resumable_and_uniform() {
    let mut a = UniformStream::new(5, 2);
    let first: Vec<u32> = (0..10).map(|_| a.next_u32()).collect();
    let mut b = UniformStream::new(5, 2);
    b.seek(4);
    assert_eq!(b.next_u32(), first[4]);
    let mut u = UniformStream::new(1, 0);
    let n = 200_000;
    let mean = (0..n).map(|_| u.next_f64()).sum::<f64>() / f64::from(n);
    assert!((mean - 0.5).abs() < 5.0 * (1.0 / 12.0f64).sqrt() / f64::from(n).sqrt());
}
