//! A check of the CUDA driver and NVRTC before `--backend cuda` starts Burn.
//!
//! Burn's CUDA backend loads `libcuda` and `libnvrtc` at run time (through
//! cudarc) on its own device thread; when either is missing or the wrong one,
//! that thread panics and the trainer dies with two backtraces. Seen on an
//! H200 machine: a CUDA toolkit's `compat/` folder on `LD_LIBRARY_PATH`
//! shadowed the running driver's `libcuda` (`CUDA_ERROR_SYSTEM_DRIVER_MISMATCH`).
//! [`preflight`] asks the same libraries first and turns each failure into one
//! error that names it and what to try.

use anyhow::{Result, bail};
use cudarc::driver::sys as driver;
use cudarc::nvrtc::sys as nvrtc;

/// What the driver reported, for the log line a run starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaInfo {
    /// `cuDriverGetVersion`, e.g. 13000 for CUDA 13.0.
    pub driver_version: i32,
    /// Visible devices.
    pub devices: i32,
    /// NVRTC's (major, minor).
    pub nvrtc_version: (i32, i32),
}

/// Checks that the CUDA driver library loads, initialises and sees a device,
/// and that NVRTC (which compiles Burn's kernels) loads.
///
/// cudarc panics when a library it opened lacks a symbol (a file named
/// `libcuda.so` that is not the driver); that panic is caught here, quietly,
/// and returned as an error.
pub fn preflight() -> Result<CudaInfo> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(checks);
    std::panic::set_hook(hook);
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        bail!("CUDA: the driver or NVRTC library is not usable: {message}")
    })
}

fn checks() -> Result<CudaInfo> {
    // SAFETY: cudarc's loaders only open the libraries and look up symbols;
    // the calls below take plain out-pointers to locals.
    unsafe {
        if !driver::is_culib_present() {
            bail!(
                "CUDA: no driver library (libcuda.so / libcuda.so.1) could be loaded; \
                 is an NVIDIA driver installed, and is its folder (e.g. /usr/local/nvidia/lib64) \
                 on LD_LIBRARY_PATH?"
            );
        }
        check("cuInit", driver::cuInit(0))?;
        let mut driver_version = 0;
        check(
            "cuDriverGetVersion",
            driver::cuDriverGetVersion(&mut driver_version),
        )?;
        let mut devices = 0;
        check("cuDeviceGetCount", driver::cuDeviceGetCount(&mut devices))?;
        if devices < 1 {
            bail!("CUDA: the driver sees no device (CUDA_VISIBLE_DEVICES?)");
        }
        if !nvrtc::is_culib_present() {
            bail!(
                "CUDA: NVRTC (libnvrtc.so / libnvrtc.so.{}) could not be loaded; Burn compiles \
                 its kernels with it. Put the CUDA toolkit's lib folder (or pip's \
                 nvidia/cu13/lib) on LD_LIBRARY_PATH",
                driver_version / 1000
            );
        }
        let (mut major, mut minor) = (0, 0);
        let status = nvrtc::nvrtcVersion(&mut major, &mut minor);
        if status != nvrtc::nvrtcResult::NVRTC_SUCCESS {
            bail!("CUDA: nvrtcVersion failed: {status:?}");
        }
        Ok(CudaInfo {
            driver_version,
            devices,
            nvrtc_version: (major, minor),
        })
    }
}

fn check(call: &str, status: driver::CUresult) -> Result<()> {
    use driver::CUresult::*;
    match status {
        CUDA_SUCCESS => Ok(()),
        // A toolkit's stubs/libcuda.so (for linking only) answers cuInit with
        // STUB_LIBRARY; its compat/ one with SYSTEM_DRIVER_MISMATCH.
        CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
        | CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE
        | CUDA_ERROR_STUB_LIBRARY => bail!(
            "CUDA: {call} failed: {status:?}: the libcuda.so loaded first is not the running \
             driver's. A CUDA toolkit's compat/ or stubs/ folder on LD_LIBRARY_PATH shadows it; \
             put the driver's folder (e.g. /usr/local/nvidia/lib64) first"
        ),
        CUDA_ERROR_NO_DEVICE => bail!("CUDA: {call}: no CUDA device (CUDA_VISIBLE_DEVICES?)"),
        other => bail!("CUDA: {call} failed: {other:?}"),
    }
}
