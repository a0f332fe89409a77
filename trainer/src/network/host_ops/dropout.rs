//! Dropout masks on host memory from core's counter-based Philox4x32-10:
//! one block function per four elements, in parallel chunks, the same bits
//! at any thread count. Burn's `Dropout` draws a Bernoulli per element
//! through a ChaCha stream and multiplies twice (mask, then scale); on
//! `flex` that was ~5 % of a training step (`perf`, small preset, batch 16).

use fewstep_core::rng::philox4x32_10;
use rayon::prelude::*;

/// Elements per parallel chunk (a multiple of 4: whole Philox blocks).
const CHUNK: usize = 1 << 14;

/// `len` values, each `1 / keep` with probability `keep` and 0 otherwise:
/// element `j` is kept when word `j % 4` of Philox block `j / 4` under key
/// `seed` is below `keep · 2^32`. `keep` must lie in (0, 1].
pub fn mask(seed: u64, keep: f64, len: usize) -> Vec<f32> {
    debug_assert!(keep > 0.0 && keep <= 1.0);
    let threshold = (keep * 4_294_967_296.0).min(4_294_967_296.0);
    let scale = (1.0 / keep) as f32;
    let key = [seed as u32, (seed >> 32) as u32];
    let mut out = vec![0.0f32; len];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let first_block = (ci * CHUNK / 4) as u64;
            for (b, values) in chunk.chunks_mut(4).enumerate() {
                let block = first_block + b as u64;
                let bits = philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], key);
                for (v, &w) in values.iter_mut().zip(&bits) {
                    *v = if f64::from(w) < threshold { scale } else { 0.0 };
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_asked_share_scaled() {
        let len = 200_003;
        for keep in [0.9, 0.5, 0.1] {
            let m = mask(11, keep, len);
            assert_eq!(m.len(), len);
            let scale = (1.0 / keep) as f32;
            assert!(m.iter().all(|&v| v == 0.0 || v == scale), "keep {keep}");
            let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / len as f64;
            // 5 standard deviations of a binomial share at this length.
            let sd = (keep * (1.0 - keep) / len as f64).sqrt();
            assert!((kept - keep).abs() < 5.0 * sd, "keep {keep}: kept {kept}");
        }
        assert!(mask(3, 1.0, 1000).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn same_seed_same_mask_at_any_thread_count_and_length() {
        let a = mask(5, 0.9, 50_000);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = one.install(|| mask(5, 0.9, 50_000));
        assert_eq!(a, b);
        // A prefix is the shorter mask (element j depends on j alone).
        assert_eq!(mask(5, 0.9, 777)[..], a[..777]);
        assert_ne!(mask(6, 0.9, 50_000), a);
    }
}
