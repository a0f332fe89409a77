//! A portable, counter-based Gaussian RNG: Philox4x32-10 + Box–Muller.
//!
//! # The exact algorithm (reproducible by any implementation)
//!
//! - **Key** from the 64-bit seed `S`: `k0 = S & 0xffff_ffff`, `k1 = S >> 32`.
//! - **Counter** for element `j` of stream `i` (for image noise, `i` is the
//!   image's index in the batch): block `b = j / 4`, lane `j % 4`,
//!   `ctr = [b & 0xffff_ffff, b >> 32, i & 0xffff_ffff, i >> 32]`.
//! - **Philox4x32-10** (Salmon et al. 2011, Random123): ten rounds of
//!   `(hi0, lo0) = M0 * c0`, `(hi1, lo1) = M1 * c2` (64-bit products),
//!   `c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]`, with
//!   `M0 = 0xD2511F53`, `M1 = 0xCD9E8D57`; the key is bumped by
//!   `(0x9E3779B9, 0xBB67AE85)` (wrapping) between rounds. Checked against
//!   Random123's known-answer vectors.
//! - **Uniforms**: `u = (x + 0.5) / 2^32` in f64, never 0 or 1.
//! - **Box–Muller** on lanes (0, 1) and (2, 3) of a block:
//!   `r = sqrt(-2 ln u_a)`, `θ = 2π u_b`, lane a = `r cos θ`, lane b = `r sin θ`,
//!   in f64 with the `libm` crate's `log`, `sqrt`, `cos`, `sin`, then rounded
//!   to f32.
//!
//! Element `j` of stream `i` depends only on `(S, i, j)`: image `i` gets the
//! same noise at any batch size, and any slice of it can be produced alone.
//! `libm` is a pure software implementation, so the bits do not depend on the
//! platform's math library.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The Philox4x32-10 block function.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// `(x + 0.5) / 2^32`: a uniform in the open interval (0, 1).
#[inline]
pub fn u32_to_open_unit(x: u32) -> f64 {
    (f64::from(x) + 0.5) * (1.0 / 4_294_967_296.0)
}

fn split(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

/// Four standard normals: Box–Muller on lanes (0, 1) and (2, 3) of a block.
fn gaussian_block(bits: [u32; 4]) -> [f32; 4] {
    let pair = |a: u32, b: u32| -> (f32, f32) {
        let r = libm::sqrt(-2.0 * libm::log(u32_to_open_unit(a)));
        let theta = 2.0 * core::f64::consts::PI * u32_to_open_unit(b);
        ((r * libm::cos(theta)) as f32, (r * libm::sin(theta)) as f32)
    };
    let (g0, g1) = pair(bits[0], bits[1]);
    let (g2, g3) = pair(bits[2], bits[3]);
    [g0, g1, g2, g3]
}

/// A seekable stream of standard normals: stream `stream` of seed `seed`.
#[derive(Debug, Clone)]
pub struct GaussianStream {
    key: [u32; 2],
    stream: (u32, u32),
    position: u64,
}

impl GaussianStream {
    /// The stream for `(seed, stream)`, at element 0.
    pub fn new(seed: u64, stream: u64) -> Self {
        let (k0, k1) = split(seed);
        Self {
            key: [k0, k1],
            stream: split(stream),
            position: 0,
        }
    }

    /// Index of the next element.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves to element `position` (O(1)).
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    fn block(&self, block: u64) -> [f32; 4] {
        let (b0, b1) = split(block);
        gaussian_block(philox4x32_10(
            [b0, b1, self.stream.0, self.stream.1],
            self.key,
        ))
    }

    /// Element `j` of this stream.
    pub fn at(&self, j: u64) -> f32 {
        self.block(j / 4)[(j % 4) as usize]
    }

    /// Fills `out` with the next `out.len()` elements.
    pub fn fill(&mut self, out: &mut [f32]) {
        let mut pos = self.position;
        let mut rest = out;
        while !rest.is_empty() {
            let lane = (pos % 4) as usize;
            let block = self.block(pos / 4);
            let take = (4 - lane).min(rest.len());
            let (head, tail) = rest.split_at_mut(take);
            head.copy_from_slice(&block[lane..lane + take]);
            rest = tail;
            pos += take as u64;
        }
        self.position = pos;
    }
}

/// Fills `out` with the initial noise of image `image_index` under `seed`
/// (elements `0..out.len()` of stream `image_index`).
pub fn image_noise(seed: u64, image_index: u64, out: &mut [f32]) {
    GaussianStream::new(seed, image_index).fill(out);
}

/// Fills a batch: `out` holds consecutive images of `image_len` values; image
/// `k` of the slice is image `first_image + k` of the seed. A trailing partial
/// image gets that image's leading values.
pub fn batch_noise(seed: u64, first_image: u64, image_len: usize, out: &mut [f32]) {
    if image_len == 0 {
        return;
    }
    for (k, img) in out.chunks_mut(image_len).enumerate() {
        image_noise(seed, first_image + k as u64, img);
    }
}

/// A counter-based stream of uniform numbers for training-time choices
/// (times, labels, dropout): block `b` of stream `stream` under `seed`, the same
/// counter layout as [`GaussianStream`].
#[derive(Debug, Clone)]
pub struct UniformStream {
    key: [u32; 2],
    stream: (u32, u32),
    position: u64,
}

impl UniformStream {
    /// The stream for `(seed, stream)`, at element 0.
    pub fn new(seed: u64, stream: u64) -> Self {
        let (k0, k1) = split(seed);
        Self {
            key: [k0, k1],
            stream: split(stream),
            position: 0,
        }
    }

    /// Index of the next 32-bit word (for checkpointing).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves to word `position` (to resume from a checkpoint).
    pub fn seek(&mut self, position: u64) {
        self.position = position;
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let (b0, b1) = split(self.position / 4);
        let bits = philox4x32_10([b0, b1, self.stream.0, self.stream.1], self.key);
        let v = bits[(self.position % 4) as usize];
        self.position += 1;
        v
    }

    /// A uniform in the open interval (0, 1).
    pub fn next_f64(&mut self) -> f64 {
        u32_to_open_unit(self.next_u32())
    }
}
