//! Memory estimate of a generation, checked against a budget before any
//! buffer is allocated: a request that would need more (a huge batch, a
//! huge image) is refused with [`GenerateError::MemoryBudget`] instead of
//! being killed by the OS.

use tract_onnx::prelude::*;

use crate::error::{GenerateError, LoadError};
use crate::exec::Execution;
use crate::model::Model;

/// The budget a request gets when neither it nor its model sets one:
/// 512 MiB, chosen for phones. It is the request's own memory (buffers,
/// activations, thread stacks), on top of the loaded model's. Phones with
/// 2 GB of RAM let one app use well under 1 GB in all; 512 MiB admits every
/// image-by-image request of the shipped model up to 8 threads (estimate
/// ≤ 85 MiB at any batch) and batched ones up to batch 54 (503 MiB, 38 of
/// them for building the plan of that batch size). Desktop callers
/// with bigger batched requests raise it ([`Model::with_memory_budget`],
/// `fewstep_request.memory_budget`, `fewstep generate --memory-budget`).
pub const DEFAULT_MEMORY_BUDGET: u64 = 512 << 20;

/// Stack reserved per pool thread (Rust's default for spawned threads).
const THREAD_STACK: u64 = 2 << 20;

/// Bytes of the intermediate tensors of one network evaluation of one
/// image (the batch-1 graph, weights excluded): the most alive at once, and
/// the largest one. The graph is walked in tract's own RAM-saving order
/// (`eval_order_opt_ram`, what its plans run), each tensor alive from its
/// node to its last consumer (where tract's plan flushes it). Counting every
/// tensor as alive at once, as this did before, made estimates 10–16× the
/// measured peak (`bench/generate_memory.sh`).
pub(crate) fn activation_bytes(model: &TypedModel) -> Result<(u64, u64), LoadError> {
    let tract = |e: TractError| LoadError::Tract(format!("{e:#}"));
    let order = model.eval_order_opt_ram().map_err(tract)?;
    let mut position = vec![usize::MAX; model.nodes().len()];
    for (i, &n) in order.iter().enumerate() {
        position[n] = i;
    }
    let outputs = model.output_outlets().map_err(tract)?;
    // Bytes freed after each position of the order.
    let mut freed_after = vec![0u64; order.len()];
    let (mut live, mut peak, mut largest) = (0u64, 0u64, 0u64);
    for (i, &n) in order.iter().enumerate() {
        let node = model.node(n);
        if node.op_is::<tract_onnx::tract_core::ops::konst::Const>() {
            continue;
        }
        for (slot, o) in node.outputs.iter().enumerate() {
            let elems = o
                .fact
                .shape
                .as_concrete()
                .map(|s| s.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)))
                .ok_or_else(|| {
                    LoadError::Tract(format!(
                        "node `{}`: batch-1 shape {:?} is not concrete",
                        node.name, o.fact.shape
                    ))
                })?
                .ok_or_else(|| {
                    LoadError::Tract(format!("node `{}`: tensor size overflows", node.name))
                })?;
            let bytes = elems.saturating_mul(o.fact.datum_type.size_of() as u64);
            largest = largest.max(bytes);
            live = live.saturating_add(bytes);
            let is_output = outputs.contains(&OutletId::new(n, slot));
            let last_use = o
                .successors
                .iter()
                .map(|s| position[s.node])
                .filter(|&p| p != usize::MAX)
                .max()
                .unwrap_or(i);
            if !is_output {
                freed_after[last_use.max(i)] = freed_after[last_use.max(i)].saturating_add(bytes);
            }
        }
        peak = peak.max(live);
        live = live.saturating_sub(freed_after[i]);
    }
    Ok((peak, largest))
}

/// What a request would allocate, in bytes (see [`Model::memory_estimate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Sampler state: noise, network input/output, the returned images and
    /// the per-image input tensors.
    pub buffers: u64,
    /// Network intermediates: twice (for im2col and packing scratch) the
    /// most batch-1 activations alive at once, times the rows evaluated at
    /// once.
    pub activations: u64,
    /// Stacks of the call's thread pool (2 MiB per thread when it uses more
    /// than one): a request for a million threads is refused, not spawned.
    pub thread_stacks: u64,
    /// A batched request of more than one row may build the plan for its
    /// row count ([`Model::prepare_batch`]): its packed weights, which the
    /// model then keeps (up to two such plans), and tract's optimisation
    /// scratch while it builds. 0 for per-image requests (their plan is
    /// built at load).
    pub plan: u64,
}

impl MemoryEstimate {
    /// `buffers + activations + thread_stacks + plan`.
    pub fn total(&self) -> u64 {
        self.buffers
            .saturating_add(self.activations)
            .saturating_add(self.thread_stacks)
            .saturating_add(self.plan)
    }
}

/// Scratch of tract's optimiser while it builds one plan, beyond the
/// plan's own weights. Measured in session 12 with a counting allocator (a
/// one-off example, `docs/PERFORMANCE.md` "Batched plans"): a first
/// batched batch-2 request peaked 5.3 MiB over the heap before it for the
/// 45 k-parameter model (0.2 MB of weights), and 33 MiB for the shipped
/// model (15.8 MB of weights, 28 MiB kept). `tests/memory_estimate.rs`
/// checks the resulting estimate against counted request peaks.
const PLAN_SCRATCH: u64 = 8 << 20;

impl Model {
    /// Estimates the memory a generation of `batch` images takes: with
    /// classifier-free guidance (`guided`) the network sees `2 * batch`
    /// rows; [`Execution::PerImage`] runs at most `threads` images at once,
    /// [`Execution::Batched`] all rows in one evaluation (and may first
    /// build a plan for that many rows). Saturates at `u64::MAX` (never
    /// overflows).
    pub fn memory_estimate(
        &self,
        batch: usize,
        guided: bool,
        execution: Execution,
        threads: usize,
    ) -> MemoryEstimate {
        let image = (self.meta.image_len() as u64).saturating_mul(4);
        let batch = batch as u64;
        let rows = if guided {
            batch.saturating_mul(2)
        } else {
            batch
        };
        // z + output + returned images, plus the guided network input, plus
        // the copied input tensors of every row.
        let vectors = batch
            .saturating_mul(2)
            .saturating_add(rows)
            .saturating_add(if guided { rows } else { 0 })
            .saturating_add(rows);
        let at_once = match execution {
            Execution::PerImage => rows.min(threads.max(1) as u64),
            Execution::Batched => rows,
        };
        MemoryEstimate {
            buffers: vectors.saturating_mul(image),
            activations: self
                .activation_bytes
                .saturating_mul(2)
                .saturating_mul(at_once),
            thread_stacks: if threads > 1 {
                (threads as u64).saturating_mul(THREAD_STACK)
            } else {
                0
            },
            plan: match execution {
                Execution::Batched if rows > 1 => self
                    .parameters
                    .saturating_mul(4 * 2)
                    .saturating_add(PLAN_SCRATCH),
                _ => 0,
            },
        }
    }

    /// Bytes of the largest intermediate tensor of one image's network
    /// evaluation (`bench/generate_memory.sh` compares peaks with it).
    #[doc(hidden)]
    pub fn largest_activation_bytes(&self) -> u64 {
        self.largest_activation_bytes
    }

    /// The budget of requests that set none (default
    /// [`DEFAULT_MEMORY_BUDGET`]).
    pub fn memory_budget(&self) -> u64 {
        self.memory_budget.unwrap_or(DEFAULT_MEMORY_BUDGET)
    }

    /// Sets the memory budget, in bytes, of every generation on this model
    /// that does not set its own.
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// Refuses a request whose estimate exceeds `budget`.
    pub(crate) fn check_memory(
        &self,
        batch: usize,
        guided: bool,
        execution: Execution,
        threads: usize,
        budget: u64,
    ) -> Result<(), GenerateError> {
        let needed = self
            .memory_estimate(batch, guided, execution, threads)
            .total();
        // A saturated estimate is a size that does not fit in memory at all.
        if needed > budget || needed == u64::MAX {
            return Err(GenerateError::MemoryBudget {
                needed,
                budget,
                batch,
            });
        }
        Ok(())
    }
}

/// Parses a byte size: a number with an optional binary unit, `K`, `M`,
/// `G`, `T` (also `KiB`, `MB`, ... all meaning powers of 1024), e.g.
/// `512M`, `2G`, `1073741824`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("`{s}` is not a size (e.g. 512M, 2G, 1073741824)"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: the number does not fit in 64 bits"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{}` (use K, M, G or T)",
                unit.trim()
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_bytes("3 KiB"), Ok(3 << 10));
        assert_eq!(parse_bytes("1T"), Ok(1 << 40));
        for bad in [
            "",
            "M",
            "-1",
            "1.5G",
            "12X",
            "99999999999999999999",
            "16777216T",
            "1e9",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
