//! Pixels an app can show: RGB8, RGBA8 (alpha 255) or gray8, written with a
//! caller-given row stride, so an `AndroidBitmap_lockPixels` buffer or a
//! `CVPixelBuffer` is filled in place.

use fewstep_runtime::Images;

use super::{
    Failure, fewstep_model, fewstep_request, fewstep_status, finish, guard, overflow, prepare, run,
    short_buffer,
};

/// Interleaved R, G, B bytes per pixel (one channel is expanded to gray RGB).
pub const FEWSTEP_PIXELS_RGB8: u32 = 0;
/// Interleaved R, G, B, A bytes per pixel, A = 255 (Android `ARGB_8888`
/// memory order, iOS `kCGImageAlphaNoneSkipLast` / premultiplied-last).
pub const FEWSTEP_PIXELS_RGBA8: u32 = 1;
/// One byte per pixel: the value of a one-channel model; for three channels
/// the BT.601 luma `(299 R + 587 G + 114 B) / 1000`, rounded.
pub const FEWSTEP_PIXELS_GRAY8: u32 = 2;

fn bytes_per_pixel(format: u32) -> Result<usize, Failure> {
    match format {
        FEWSTEP_PIXELS_RGB8 => Ok(3),
        FEWSTEP_PIXELS_RGBA8 => Ok(4),
        FEWSTEP_PIXELS_GRAY8 => Ok(1),
        other => Err(Failure::new(
            fewstep_status::FEWSTEP_ERROR_INVALID_ARGUMENT,
            format!(
                "pixel format {other} is not FEWSTEP_PIXELS_RGB8 (0), FEWSTEP_PIXELS_RGBA8 (1) or FEWSTEP_PIXELS_GRAY8 (2)"
            ),
        )),
    }
}

/// The layout of `batch` images stacked vertically: row `y` of image `i` starts
/// at byte `(i * H + y) * stride`. Returns (stride, bytes needed).
fn layout(
    model: &fewstep_model,
    batch: usize,
    format: u32,
    row_stride: usize,
) -> Result<(usize, usize), Failure> {
    let bpp = bytes_per_pixel(format)?;
    let s = model.inner.metadata().image;
    let row = (s.width as usize).checked_mul(bpp).ok_or_else(overflow)?;
    let stride = if row_stride == 0 { row } else { row_stride };
    if stride < row {
        return Err(Failure::new(
            fewstep_status::FEWSTEP_ERROR_INVALID_ARGUMENT,
            format!(
                "row_stride {row_stride} is shorter than a row of {} pixels ({row} bytes)",
                s.width
            ),
        ));
    }
    let rows = (s.height as usize)
        .checked_mul(batch)
        .ok_or_else(overflow)?;
    if rows == 0 {
        return Ok((stride, 0));
    }
    let need = (rows - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(row))
        .ok_or_else(overflow)?;
    Ok((stride, need))
}

/// Writes to `*len` the bytes `fewstep_generate_pixels` needs for `batch`
/// images in `format` with `row_stride` bytes per row (0 = tightly packed):
/// `(batch * H - 1) * row_stride + W * bytes_per_pixel` (the last row needs
/// no padding).
///
/// # Safety
/// `model` NULL or a live handle; `len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_pixels_len(
    model: *const fewstep_model,
    batch: u32,
    format: u32,
    row_stride: usize,
    len: *mut usize,
) -> fewstep_status {
    guard(|| {
        // SAFETY: NULL or a live handle, per the contract.
        let model = unsafe { model.as_ref() }.ok_or_else(|| Failure::null("model"))?;
        if len.is_null() {
            return Err(Failure::null("len"));
        }
        let (_, need) = layout(model, batch as usize, format, row_stride)?;
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { len.write(need) };
        Ok(fewstep_status::FEWSTEP_OK)
    })
}

/// Generates `request->batch` images into `out` as `format` pixels, images
/// stacked vertically, `row_stride` bytes per row (0 = `W * bytes per
/// pixel`); bytes between a row's end and the next row are left as they
/// were. `out_len` must be at least `fewstep_pixels_len`. On
/// `FEWSTEP_CANCELLED` the buffer holds the latest estimate.
///
/// # Safety
/// `model` NULL or a live handle; `request` NULL or initialised by
/// `fewstep_request_init`; `out` NULL or `out_len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_generate_pixels(
    model: *const fewstep_model,
    request: *const fewstep_request,
    format: u32,
    out: *mut u8,
    row_stride: usize,
    out_len: usize,
) -> fewstep_status {
    guard(|| {
        // SAFETY: forwarded contract.
        let (model, req) = unsafe { prepare(model, request, out.is_null()) }?;
        let (stride, need) = layout(model, req.batch as usize, format, row_stride)?;
        if out_len < need {
            return Err(short_buffer("bytes", out_len, need, req.batch));
        }
        // SAFETY: the request's pointers are valid per the contract.
        let images = unsafe { run(model, &req) }?;
        // SAFETY: `out` has `out_len >= need` writable bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(out, need) };
        write_pixels(&images, format, stride, dst);
        finish(&images)
    })
}

/// Fills the rows of `dst` (the layout checked by [`layout`]).
fn write_pixels(images: &Images, format: u32, stride: usize, dst: &mut [u8]) {
    let shape = images.shape();
    let (c, h, w) = (
        shape.channels as usize,
        shape.height as usize,
        shape.width as usize,
    );
    let range = images.data_range();
    let hw = h * w;
    for (i, img) in images.data().chunks_exact((c * hw).max(1)).enumerate() {
        for y in 0..h {
            let start = (i * h + y) * stride;
            for x in 0..w {
                let p = y * w + x;
                let v = |ch: usize| range.to_u8(img[if c >= 3 { ch } else { 0 } * hw + p]);
                match format {
                    FEWSTEP_PIXELS_GRAY8 => {
                        dst[start + x] = if c >= 3 {
                            let l = 299 * u32::from(v(0))
                                + 587 * u32::from(v(1))
                                + 114 * u32::from(v(2));
                            ((l + 500) / 1000) as u8
                        } else {
                            v(0)
                        };
                    }
                    FEWSTEP_PIXELS_RGBA8 => {
                        let o = start + 4 * x;
                        dst[o..o + 4].copy_from_slice(&[v(0), v(1), v(2), 255]);
                    }
                    _ => {
                        let o = start + 3 * x;
                        dst[o..o + 3].copy_from_slice(&[v(0), v(1), v(2)]);
                    }
                }
            }
        }
    }
}

/// Writes to `*bytes` the memory the library estimates `request` needs on
/// `model` (buffers, network activations, thread stacks): what
/// `fewstep_request.memory_budget` is compared with. An app can size a
/// request to its memory class before running it.
///
/// # Safety
/// `model` NULL or a live handle; `request` NULL or initialised by
/// `fewstep_request_init`; `bytes` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fewstep_estimate_memory(
    model: *const fewstep_model,
    request: *const fewstep_request,
    bytes: *mut u64,
) -> fewstep_status {
    guard(|| {
        if bytes.is_null() {
            return Err(Failure::null("bytes"));
        }
        // SAFETY: forwarded contract; no output buffer here.
        let (model, req) = unsafe { prepare(model, request, false) }?;
        let meta = model.inner.metadata();
        let guided = meta.num_classes > 0 && req.guidance != 1.0;
        let threads = if req.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            req.threads as usize
        };
        let estimate = model.inner.memory_estimate(
            req.batch as usize,
            guided,
            fewstep_runtime::Execution::default(),
            threads,
        );
        // SAFETY: checked non-NULL; writable per the contract.
        unsafe { bytes.write(estimate.total()) };
        Ok(fewstep_status::FEWSTEP_OK)
    })
}
