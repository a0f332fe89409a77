//! Running the network: thread pools and the two execution strategies.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

use crate::error::GenerateError;
use crate::generate::CancelToken;
use crate::model::{InputKind, Model};

/// How a batch goes through the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Execution {
    /// One concrete batch-1 plan per image (tract's fastest convolution path
    /// is for concrete batch-1 shapes), images run in parallel across the
    /// threads; fewer images than threads run one at a time with the threads
    /// inside their matrix products.
    /// Image `i` is bitwise identical at any batch size and thread count.
    #[default]
    PerImage,
    /// One concrete plan for the whole (2N with guidance) batch, threads
    /// inside the matrix products.
    Batched,
}

/// What a call's helper threads do between the parallel parts of a forward
/// (only calls with more than one thread have helpers).
///
/// The default is `Sleep`, from `examples/pool_wait.rs` on 2 cores (shipped
/// model, batch 1; `docs/PERFORMANCE.md`): spinning made one call with 2
/// threads 10–22 % faster, but with more busy threads than cores (two such
/// calls at once) it halved the throughput, and on a small model it cost
/// 1.7× the CPU time per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolWait {
    /// Stay awake (spin, yielding to queued work) until the call returns:
    /// each operator's parallel part starts at once. The helpers keep their
    /// cores busy for the whole call, useful work or not: fastest for a call
    /// that has the cores to itself (as onnxruntime's default).
    Spin,
    /// Sleep when out of work (rayon's own behaviour): no cycles burnt while
    /// waiting, but each operator's parallel part may first wake the helpers.
    #[default]
    Sleep,
}

impl PoolWait {
    /// Every value, in the order of [`PoolWait::as_str`]'s names.
    pub const ALL: [PoolWait; 2] = [PoolWait::Spin, PoolWait::Sleep];

    /// `spin` or `sleep`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolWait::Spin => "spin",
            PoolWait::Sleep => "sleep",
        }
    }
}

impl std::fmt::Display for PoolWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PoolWait {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PoolWait::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| format!("unknown pool wait `{s}` (expected spin or sleep)"))
    }
}

/// The names of fewstep's worker threads start with this (`fewstep-0`, ...).
pub const WORKER_THREAD_PREFIX: &str = "fewstep-";

/// At most this many idle thread pools are kept per model between calls.
pub(crate) const MAX_IDLE_POOLS: usize = 4;

/// The model's thread pools. A call *leases* a pool of its thread count for
/// its whole length: no other call runs work on those threads meanwhile.
///
/// Why exclusive: a thread of a rayon pool that waits for its own parallel
/// work runs whatever else is queued in the pool. tract's matrix product
/// holds a thread-local scratch (`RefCell`) across the parallel dispatch of
/// its tiles, so if another call's image landed on that thread while it
/// waited, that image's matrix product would borrow the same scratch again
/// ("RefCell already borrowed", issue 19). Within one call this cannot
/// happen: the call's own queued work is either its own product's tiles or
/// an image run without threads inside (see `forward_per_image`).
/// Concurrent calls therefore get distinct pools (created on demand, kept
/// idle for reuse, at most [`MAX_IDLE_POOLS`]); a call never waits for
/// another call's pool.
#[derive(Debug, Default)]
pub(crate) struct Pools(Mutex<Vec<Arc<rayon::ThreadPool>>>);

/// A pool held by one call; returned to the model's idle pools on drop.
#[derive(Debug)]
pub(crate) struct PoolLease<'p> {
    pool: Option<Arc<rayon::ThreadPool>>,
    home: &'p Pools,
}

impl std::ops::Deref for PoolLease<'_> {
    type Target = Arc<rayon::ThreadPool>;
    fn deref(&self) -> &Self::Target {
        self.pool
            .as_ref()
            .expect("a lease holds its pool until dropped")
    }
}

impl Drop for PoolLease<'_> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let mut idle = self.home.0.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: a caller cycling through many thread counts, or a
            // burst of concurrent callers, must not leave idle threads
            // behind. The least recently returned pool goes first; its
            // threads exit once nothing holds it.
            if idle.len() >= MAX_IDLE_POOLS {
                idle.remove(0);
            }
            idle.push(pool);
        }
    }
}

impl Pools {
    /// A pool of `threads` threads for the caller alone: an idle one of that
    /// size, or a new one.
    pub(crate) fn lease(&self, threads: usize) -> Result<PoolLease<'_>, GenerateError> {
        let reused = {
            let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter()
                .rposition(|p| p.current_num_threads() == threads)
                .map(|i| idle.remove(i))
        };
        let pool = match reused {
            Some(pool) => pool,
            None => Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("{WORKER_THREAD_PREFIX}{i}"))
                    .build()
                    .map_err(|e| GenerateError::ThreadPool(e.to_string()))?,
            ),
        };
        Ok(PoolLease {
            pool: Some(pool),
            home: self,
        })
    }

    /// Idle pools kept (for tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or(usize::MAX)
    }
}

fn terr(e: impl std::fmt::Display) -> GenerateError {
    GenerateError::Tract(format!("{e:#}"))
}

/// Per-call state: tract states for the plans this call runs.
pub(crate) struct Runner<'m> {
    model: &'m Model,
    execution: Execution,
    threads: usize,
    /// This call's own pool (several threads), held until the call ends.
    pool: Option<PoolLease<'m>>,
    /// Per-image states (PerImage) or one state (Batched), created lazily.
    states: Vec<TypedSimpleState>,
    batched_rows: usize,
    /// Checked before every operator of a forward, so a cancel returns
    /// within one operator instead of one network evaluation.
    cancel: Option<CancelToken>,
    wait: PoolWait,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("execution", &self.execution)
            .field("threads", &self.threads)
            .finish()
    }
}

impl<'m> Runner<'m> {
    pub(crate) fn new(
        model: &'m Model,
        execution: Execution,
        threads: usize,
    ) -> Result<Self, GenerateError> {
        let pool = if threads > 1 {
            Some(model.pools.lease(threads)?)
        } else {
            None
        };
        Ok(Runner {
            model,
            execution,
            threads,
            pool,
            states: Vec::new(),
            batched_rows: 0,
            cancel: None,
            wait: PoolWait::default(),
        })
    }

    /// What the pool's helpers do between parallel parts.
    pub(crate) fn wait(mut self, wait: PoolWait) -> Self {
        self.wait = wait;
        self
    }

    /// Stops a forward between two operators once `token` is cancelled; the
    /// forward then fails with [`GenerateError::Cancelled`].
    pub(crate) fn cancel_with(mut self, token: Option<CancelToken>) -> Self {
        self.cancel = token;
        self
    }

    /// One network evaluation of `rows` images: `z` holds `rows * d` values,
    /// `labels` one per row when the model is conditional. The output (same
    /// shape as `z`) goes to `out`.
    pub(crate) fn forward(
        &mut self,
        z: &[f32],
        t: f32,
        labels: Option<&[i64]>,
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), GenerateError> {
        let d = self.model.meta.image_len();
        debug_assert_eq!(z.len(), rows * d);
        debug_assert_eq!(out.len(), rows * d);
        match self.execution {
            Execution::Batched => self.forward_batched(z, t, labels, rows, out),
            Execution::PerImage => self.forward_per_image(z, t, labels, rows, out),
        }
    }

    fn inputs(
        &self,
        z: &[f32],
        t: f32,
        labels: Option<&[i64]>,
        rows: usize,
    ) -> Result<TVec<TValue>, GenerateError> {
        let img = self.model.meta.image;
        let shape = [
            rows,
            img.channels as usize,
            img.height as usize,
            img.width as usize,
        ];
        let mut v: TVec<TValue> = tvec![];
        for kind in &self.model.net.input_order {
            let tensor = match kind {
                InputKind::Z => Tensor::from_shape(&shape, z).map_err(terr)?,
                InputKind::T => Tensor::from_shape(&[rows], &vec![t; rows]).map_err(terr)?,
                InputKind::Label => {
                    let l = labels.ok_or_else(|| {
                        GenerateError::Tract("conditional model run without labels".into())
                    })?;
                    Tensor::from_shape(&[rows], l).map_err(terr)?
                }
            };
            v.push(tensor.into_tvalue());
        }
        Ok(v)
    }

    fn forward_batched(
        &mut self,
        z: &[f32],
        t: f32,
        labels: Option<&[i64]>,
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), GenerateError> {
        if self.states.is_empty() || self.batched_rows != rows {
            let plan = self.model.net.plan(rows).map_err(terr)?;
            self.states = vec![TypedSimpleState::new(&plan).map_err(terr)?];
            self.batched_rows = rows;
        }
        let inputs = self.inputs(z, t, labels, rows)?;
        let state = &mut self.states[0];
        let cancel = self.cancel.as_ref();
        let result = match &self.pool {
            // On one of the pool's threads, as in `forward_per_image`.
            Some(pool) => on_pool(pool, self.wait, || {
                multithread_tract_scope(Executor::MultiThread(Arc::clone(pool)), || {
                    run_state(state, inputs, cancel)
                })
            }),
            None => run_state(state, inputs, cancel),
        }?;
        copy_output(&result, out)
    }

    fn forward_per_image(
        &mut self,
        z: &[f32],
        t: f32,
        labels: Option<&[i64]>,
        rows: usize,
        out: &mut [f32],
    ) -> Result<(), GenerateError> {
        let d = self.model.meta.image_len();
        if self.states.len() < rows {
            let plan = self.model.net.plan(1).map_err(terr)?;
            while self.states.len() < rows {
                self.states
                    .push(TypedSimpleState::new(&plan).map_err(terr)?);
            }
        }
        let mut inputs = Vec::with_capacity(rows);
        for i in 0..rows {
            let l = labels.map(|l| &l[i..i + 1]);
            inputs.push(self.inputs(&z[i * d..(i + 1) * d], t, l, 1)?);
        }
        let states = &mut self.states[..rows];
        let cancel = self.cancel.as_ref();
        let run_one = |(state, (inp, o)): (&mut TypedSimpleState, (TVec<TValue>, &mut [f32]))| {
            let r = run_state(state, inp, cancel)?;
            copy_output(&r, o)
        };
        match &self.pool {
            None => states
                .iter_mut()
                .zip(inputs.into_iter().zip(out.chunks_mut(d)))
                .try_for_each(run_one),
            // Fewer images than threads: images one after the other, each
            // using every thread inside its matrix products. On one of the
            // pool's own threads: from outside, every product hands its work
            // to the pool and waits for a wake-up, which costs more than
            // Winograd's small products gain (one image, 2 threads: 20 ms
            // from outside against 13.5 ms inside).
            Some(pool) if rows < self.threads => {
                let exec = Executor::MultiThread(Arc::clone(pool));
                on_pool(pool, self.wait, || {
                    multithread_tract_scope(exec, || {
                        states
                            .iter_mut()
                            .zip(inputs.into_iter().zip(out.chunks_mut(d)))
                            .try_for_each(run_one)
                    })
                })
            }
            // Enough images: one image per thread at a time, each on its
            // thread alone (a single-thread tract executor), so a thread of
            // this pool never waits for parallel work while it holds tract's
            // thread-local scratch: the pool's queue holds only whole images
            // (see `Pools`).
            Some(pool) => pool.install(|| {
                states
                    .par_iter_mut()
                    .zip(inputs.into_par_iter().zip(out.par_chunks_mut(d)))
                    .with_max_len(1)
                    .try_for_each(|job| {
                        // Whatever the process-wide default executor is.
                        multithread_tract_scope(Executor::SingleThread, || run_one(job))
                    })
            }),
        }
    }
}

/// One forward of a plan; with a token, operator by operator, stopping at
/// the first operator that starts after the token is cancelled.
fn run_state(
    state: &mut TypedSimpleState,
    inputs: TVec<TValue>,
    cancel: Option<&CancelToken>,
) -> Result<TVec<TValue>, GenerateError> {
    let Some(token) = cancel else {
        return state.run(inputs).map_err(terr);
    };
    let result = state.run_plan_with_eval(inputs, |ctx, op_state, node, input| {
        if token.is_cancelled() {
            tract_onnx::tract_core::internal::bail!("cancelled");
        }
        tract_onnx::tract_core::plan::eval(ctx, op_state, node, input)
    });
    match result {
        Ok(outputs) => Ok(outputs),
        Err(_) if token.is_cancelled() => Err(GenerateError::Cancelled),
        Err(e) => Err(terr(e)),
    }
}

/// Runs `f` on one of `pool`'s threads, its helpers waiting as `wait` says.
fn on_pool<R: Send>(pool: &rayon::ThreadPool, wait: PoolWait, f: impl FnOnce() -> R + Send) -> R {
    match wait {
        PoolWait::Spin => with_awake_pool(pool, f),
        PoolWait::Sleep => pool.install(f),
    }
}

/// Runs `f` on one of `pool`'s threads while its other threads stay awake
/// until `f` returns, taking the parallel parts of each operator as soon as
/// they are offered.
///
/// A forward hands work to the pool dozens of times (every Winograd
/// convolution, group norm and large product), each a fraction of a
/// millisecond apart: long enough for rayon's idle threads to fall asleep,
/// so each hand-over would wait for a thread to be woken (onnxruntime's
/// pool spins between operators for the same reason). The helpers burn
/// their cores for the length of `f`: only with [`PoolWait::Spin`].
/// Public (hidden) for the profiling example.
pub fn with_awake_pool<R: Send>(pool: &rayon::ThreadPool, f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    pool.install(|| {
        let caller = rayon::current_thread_index();
        let done = AtomicBool::new(false);
        rayon::scope(|scope| {
            for _ in 1..rayon::current_num_threads() {
                scope.spawn(|_| {
                    // A helper the caller itself picks up (while it waits
                    // inside `f`) must not spin: `f` could never finish.
                    if rayon::current_thread_index() == caller {
                        return;
                    }
                    while !done.load(Ordering::Acquire) {
                        if rayon::yield_now() != Some(rayon::Yield::Executed) {
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            // Set however `f` ends: a panic must not leave helpers spinning
            // (the scope waits for them before it unwinds).
            struct Release<'a>(&'a AtomicBool);
            impl Drop for Release<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _release = Release(&done);
            f()
        })
    })
}

fn copy_output(result: &TVec<TValue>, out: &mut [f32]) -> Result<(), GenerateError> {
    let first = result
        .first()
        .ok_or_else(|| GenerateError::Tract("the network returned no output".into()))?;
    let view = first.try_as_plain_ram().map_err(terr)?;
    let values = view.as_slice::<f32>().map_err(terr)?;
    if values.len() != out.len() {
        return Err(GenerateError::Tract(format!(
            "the network returned {} values, expected {}",
            values.len(),
            out.len()
        )));
    }
    out.copy_from_slice(values);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{MAX_IDLE_POOLS, Pools};
    use std::sync::Arc;

    #[test]
    fn pools_are_leased_exclusively_reused_and_bounded() {
        let pools = Pools::default();
        let a = pools.lease(2).expect("pool");
        let a_ptr = Arc::as_ptr(&a);
        // A second caller while the first holds its pool gets another one.
        let b = pools.lease(2).expect("pool");
        assert!(!std::ptr::eq(a_ptr, Arc::as_ptr(&b)));
        assert_eq!(b.current_num_threads(), 2);
        drop(b);
        drop(a);
        assert_eq!(pools.idle(), 2);
        // Returned pools are reused, the latest returned first.
        let again = pools.lease(2).expect("pool");
        assert!(std::ptr::eq(a_ptr, Arc::as_ptr(&again)));
        drop(again);
        // Many sizes, and many at once: at most MAX_IDLE_POOLS stay idle.
        let held: Vec<_> = (2..2 + 3 * MAX_IDLE_POOLS)
            .map(|threads| {
                let p = pools.lease(threads).expect("pool");
                assert_eq!(p.current_num_threads(), threads);
                p
            })
            .collect();
        drop(held);
        assert_eq!(pools.idle(), MAX_IDLE_POOLS);
    }

    /// The awake helpers take the parallel work handed out inside `f`, and
    /// return when it does, at any pool size (one thread: no helper).
    #[test]
    fn awake_pool_runs_the_work_and_lets_go() {
        use rayon::prelude::*;
        for threads in [1, 2, 3, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut most_workers = 0;
            for _ in 0..20 {
                let (sum, workers) = super::with_awake_pool(&pool, || {
                    let workers = std::sync::Mutex::new(std::collections::HashSet::new());
                    let sum: u64 = (0..10_000usize)
                        .into_par_iter()
                        .with_max_len(100)
                        .map(|i| {
                            workers
                                .lock()
                                .unwrap()
                                .insert(rayon::current_thread_index());
                            if i % 100 == 0 {
                                // Enough work per chunk for a helper to
                                // take some while the caller is busy.
                                std::thread::sleep(std::time::Duration::from_micros(20));
                            }
                            i as u64
                        })
                        .sum();
                    (sum, workers.into_inner().unwrap().len())
                });
                assert_eq!(sum, 49_995_000);
                assert!(workers >= 1 && workers <= threads);
                most_workers = most_workers.max(workers);
            }
            // With several threads the helpers did take work.
            assert_eq!(most_workers > 1, threads > 1, "{threads} threads");
            // The pool is free again: a plain install runs.
            assert_eq!(pool.install(rayon::current_num_threads), threads);
            // A panic in `f` reaches the caller; the helpers let go.
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                super::with_awake_pool(&pool, || panic!("inside the forward"))
            }));
            assert!(caught.is_err());
            assert_eq!(pool.install(rayon::current_num_threads), threads);
        }
    }
}
