//! The fuzz targets' entry points on stable (CI has no cargo-fuzz): every
//! committed corpus file under `fuzz/corpus/<target>/`, plus seeded
//! deterministic mutations (every truncation and thousands of bit flips,
//! byte edits and splices of valid models, random bytes, token soups of
//! metadata values and CLI arguments, mutated C requests), go through
//! `fuzz/harness.rs`, which panics on any panic, abort-worthy state, empty
//! error message or unexpected status. See docs/RELIABILITY.md.

extern crate fewstep as fewstep_runtime;

#[path = "../../fuzz/harness.rs"]
mod harness;

use harness::Outcome;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/corpus/{target}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// One random edit of `b`: bit flips, a byte overwrite, an insertion, a
/// deletion, or a splice of a chunk from elsewhere in the file.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = rng.below(b.len());
            b[i] = *rng.pick(&[0u8, 0x7f, 0x80, 0xff, 1, 8, 0x10, 0x22]);
        }
        2 => {
            let i = rng.below(b.len() + 1);
            b.insert(i, rng.next() as u8);
        }
        3 if b.len() > 1 => {
            let i = rng.below(b.len());
            b.remove(i);
        }
        _ => {
            let (from, to) = (rng.below(b.len()), rng.below(b.len()));
            let n = rng.below(16).min(b.len() - from).min(b.len() - to);
            let chunk = b[from..from + n].to_vec();
            b[to..to + n].copy_from_slice(&chunk);
        }
    }
}

#[test]
fn load_model_corpus_and_mutations() {
    let mut refused = 0;
    let mut total = 0;
    let mut count = |o: Outcome| {
        total += 1;
        refused += usize::from(o == Outcome::Refused);
    };
    for f in corpus("load_model") {
        count(harness::load_model(&f));
    }
    let seeds = [harness::tiny_model(2, 0), harness::tiny_model(0, 3)];
    for seed in &seeds {
        assert_eq!(harness::load_model(seed), Outcome::Accepted);
        // Every truncation.
        for cut in 0..seed.len() {
            count(harness::load_model(&seed[..cut]));
        }
    }
    // Seeded mutations: 1 to 4 edits of a valid model.
    let mut rng = Rng(0xF022_0001);
    for _ in 0..3000 {
        let mut b = rng.pick(&seeds).clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut b);
        }
        count(harness::load_model(&b));
    }
    // Random bytes.
    for _ in 0..500 {
        let b: Vec<u8> = (0..rng.below(512)).map(|_| rng.next() as u8).collect();
        count(harness::load_model(&b));
    }
    eprintln!("load_model: {total} inputs, {refused} refused with a typed error");
    assert!(refused > total / 2, "{refused} of {total}");
}

const META_TOKENS: &[&str] = &[
    "cosine",
    "shifted_cosine:",
    "interpolated_cosine:",
    "x",
    "eps",
    "v",
    "0",
    "1",
    "3",
    "64",
    "-1",
    "0.5",
    "1e-30",
    "1e39",
    "inf",
    "nan",
    "-0",
    "4294967295",
    "4294967296",
    "99999999999999999999",
    ",",
    ":",
    " ",
    ".",
    "fewstep.format",
    "fewstep.prediction",
    "fewstep.schedule",
    "fewstep.student_steps",
    "fewstep.image",
    "fewstep.num_classes",
    "fewstep.data_range",
    "fewstep.addim_xvar",
    "\0",
    "é",
    "auto",
    "ddim",
    "addim",
];

fn token_soup(rng: &mut Rng, tokens: &[&str], max: usize) -> Vec<u8> {
    let mut s = Vec::new();
    for _ in 0..rng.below(max) {
        s.extend_from_slice(rng.pick(tokens).as_bytes());
    }
    s
}

#[test]
fn metadata_corpus_and_token_soup() {
    let mut total = 0;
    for f in corpus("metadata") {
        harness::metadata(&f);
        total += 1;
    }
    let mut rng = Rng(0xF022_0002);
    let mut accepted = 0;
    for i in 0..20_000 {
        let mut b = vec![(i % 9) as u8];
        b.extend(token_soup(&mut rng, META_TOKENS, 12));
        accepted += usize::from(harness::metadata(&b) == Outcome::Accepted);
        total += 1;
    }
    // Sampling plans from random numbers.
    for _ in 0..2000 {
        let mut b = vec![6u8];
        b.extend((0..16).map(|_| rng.next() as u8));
        harness::metadata(&b);
        total += 1;
    }
    eprintln!("metadata: {total} inputs, {accepted} soups accepted");
    assert!(accepted > 0);
}

const CLI_TOKENS: &[&str] = &[
    "generate",
    "info",
    "stamp",
    "--model",
    "m.onnx",
    "--steps",
    "--batch",
    "--seed",
    "--noise",
    "--label",
    "--guidance",
    "--threads",
    "--memory-budget",
    "--sampler",
    "--out",
    "out.png",
    "--batched",
    "--clip",
    "-q",
    "--prediction",
    "--schedule",
    "--student-steps",
    "--image",
    "--rename",
    "x=z",
    "=",
    "2G",
    "1T",
    "16777216T",
    "12X",
    "-1",
    "0",
    "4",
    "nan",
    "1e400",
    "99999999999999999999",
    "ddim",
    "bogus",
    "--help",
    "--version",
    "",
    "é",
];

#[test]
fn cli_args_corpus_and_token_soup() {
    let mut total = 0;
    for f in corpus("cli_args") {
        harness::cli_args(&f);
        total += 1;
    }
    let mut rng = Rng(0xF022_0003);
    let mut accepted = 0;
    for _ in 0..5000 {
        let args: Vec<&str> = (0..rng.below(10)).map(|_| *rng.pick(CLI_TOKENS)).collect();
        accepted += usize::from(harness::cli_args(args.join("\0").as_bytes()) == Outcome::Accepted);
        total += 1;
    }
    eprintln!("cli_args: {total} inputs, {accepted} parsed");
    assert!(accepted > 0);
}

#[test]
fn ffi_request_corpus_and_mutations() {
    let mut total = 0;
    let mut accepted = 0;
    for f in corpus("ffi_request") {
        accepted += usize::from(harness::ffi_request(&f) == Outcome::Accepted);
        total += 1;
    }
    let size = std::mem::size_of::<harness::ffi::fewstep_request>();
    let base = harness::ffi::fewstep_request {
        batch: 2,
        ..Default::default()
    };
    let mut rng = Rng(0xF022_0004);
    for _ in 0..3000 {
        let mut r = base;
        for _ in 0..rng.below(4) {
            match rng.below(9) {
                0 => r.struct_size = *rng.pick(&[0, 1, 63, 64, 72, 80, u32::MAX]),
                1 => r.batch = *rng.pick(&[0, 1, 3, 1000, 1 << 20, u32::MAX]),
                2 => r.steps = *rng.pick(&[0, 1, 2, 3, 64, u32::MAX]),
                3 => r.sampler = *rng.pick(&[0, 1, 2, 3, u32::MAX]),
                4 => r.label = *rng.pick(&[-2, -1, 0, 2, 3, 4, i64::MIN, i64::MAX]),
                5 => r.guidance = *rng.pick(&[1.0, 0.0, -1.0, 2.5, f32::NAN, f32::INFINITY]),
                6 => r.threads = *rng.pick(&[0, 1, 2, 4]),
                7 => r.clip = *rng.pick(&[0, 1, 2, u32::MAX]),
                _ => r.memory_budget = *rng.pick(&[0, 1, 4096, 1 << 20, u64::MAX]),
            }
        }
        // SAFETY: a plain-data struct viewed as bytes.
        let bytes = unsafe { std::slice::from_raw_parts((&raw const r).cast::<u8>(), size) };
        let mut input = bytes.to_vec();
        input.push(rng.next() as u8);
        let len: u32 = *rng.pick(&[0, 47, 48, 96, 383, 384, 1000, 65536]);
        input.extend_from_slice(&len.to_le_bytes());
        accepted += usize::from(harness::ffi_request(&input) == Outcome::Accepted);
        total += 1;
    }
    eprintln!("ffi_request: {total} inputs, {accepted} generated");
    assert!(accepted > 0 && accepted < total);
}

/// Writes the generated seeds of `fuzz/corpus/` (the valid models and C
/// requests); run by hand: `cargo test -p fewstep --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    std::fs::write(root.join("load_model/cm2"), harness::tiny_model(2, 0)).unwrap();
    std::fs::write(root.join("load_model/cond3"), harness::tiny_model(0, 3)).unwrap();
    let size = std::mem::size_of::<harness::ffi::fewstep_request>();
    for (name, sel, batch, label, guidance) in [
        ("cm_rgb8", 0u8, 2u32, -1i64, 1.0f32),
        ("cond_f32_guided", 3, 3, 1, 2.0),
    ] {
        let r = harness::ffi::fewstep_request {
            batch,
            label,
            guidance,
            steps: if sel & 1 == 1 { 3 } else { 0 },
            ..Default::default()
        };
        // SAFETY: a plain-data struct viewed as bytes.
        let bytes = unsafe { std::slice::from_raw_parts((&raw const r).cast::<u8>(), size) };
        let mut input = bytes.to_vec();
        input.push(sel);
        input.extend_from_slice(&4096u32.to_le_bytes());
        std::fs::write(root.join(format!("ffi_request/{name}")), input).unwrap();
    }
}
