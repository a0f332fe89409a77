//! aDDIM step over a batch of 8 images of 3×64×64 (the benchmark).
//! Reports throughput in bytes of state (z read + x_hat read + z written).
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fewstep_core::rng::batch_noise;
use fewstep_core::{Schedule, ddim_step, sampler::addim_step};
use std::hint::black_box;

fn bench_steps(c: &mut Criterion) {
    let sample_len = 3 * 64 * 64;
    let n = 8;
    let mut z = vec![0.0f32; n * sample_len];
    let mut x_hat = vec![0.0f32; n * sample_len];
    batch_noise(1, 0, sample_len, &mut z);
    batch_noise(2, 0, sample_len, &mut x_hat);
    let schedule = Schedule::Cosine;
    let at_t = schedule.alpha_sigma(0.5);
    let at_s = schedule.alpha_sigma(0.25);
    let xvar = fewstep_core::XVar::Analytic.at(&schedule, 0.5);

    let mut group = c.benchmark_group("step_8x3x64x64");
    group.throughput(Throughput::Bytes((3 * n * sample_len * 4) as u64));
    group.bench_function("addim_step", |b| {
        b.iter(|| {
            addim_step(
                black_box(&mut z),
                black_box(&x_hat),
                sample_len,
                at_t,
                at_s,
                xvar,
            )
            .expect("lengths match");
        })
    });
    group.bench_function("ddim_step", |b| {
        b.iter(|| {
            ddim_step(black_box(&mut z), black_box(&x_hat), at_t, at_s).expect("lengths match");
        })
    });
    group.finish();
}

criterion_group!(benches, bench_steps);
criterion_main!(benches);
