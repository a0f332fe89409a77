//! Peak memory of one generation (issue 16 §4), in one fresh process:
//! the RSS after loading the model, the peak RSS while generating (Linux
//! `VmHWM`, reset after the load through `/proc/self/clear_refs`), the peak
//! of heap bytes in use while generating over those in use after the load
//! (a counting global allocator: RSS alone can hide a request's memory in
//! pages the load freed but kept), and what fewstep estimates for the
//! request (`Model::memory_estimate`), beside the weights (f32) and the
//! largest intermediate tensor of one image.
//!
//!   cargo run --release -p fewstep --example generate_memory -- MODEL.onnx BATCH THREADS [batched]
//!
//! Prints one tab-separated line of `key=value` (KiB); `bench/generate_memory.sh`
//! runs it for every row of its table.

#[path = "../tests/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: generate_memory MODEL.onnx BATCH THREADS [batched]";
    let (Some(path), Some(batch), Some(threads)) = (args.first(), args.get(1), args.get(2)) else {
        panic!("{usage}");
    };
    let batch: usize = batch.parse().expect(usage);
    let threads: usize = threads.parse().expect(usage);
    let execution = if args.get(3).map(String::as_str) == Some("batched") {
        fewstep::Execution::Batched
    } else {
        fewstep::Execution::PerImage
    };
    fewstep::tune_allocator();
    let before = status_kib("VmRSS:");
    let model = fewstep::Model::load(path).expect("load");
    let loaded = status_kib("VmRSS:");
    // Reset the peak to the current RSS (Linux ≥ 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let heap_loaded = Counting::reset_peak();
    let images = model
        .generate()
        .batch(batch)
        .seed(1)
        .threads(threads)
        .execution(execution)
        .run()
        .expect("generate");
    let peak = status_kib("VmHWM:");
    let heap_peak = Counting::peak() - heap_loaded;
    assert_eq!(images.data().len(), batch * model.metadata().image_len());
    let guided = false;
    let estimate = model.memory_estimate(batch, guided, execution, threads);
    let weights = model.parameter_count() * 4;
    println!(
        "before={before}\tloaded={loaded}\tpeak={peak}\tgenerate={}\theap={}\testimate={}\tweights={}\tlargest={}",
        peak.saturating_sub(loaded),
        heap_peak / 1024,
        estimate.total() / 1024,
        weights / 1024,
        model.largest_activation_bytes() / 1024
    );
}
