//! Reading an init image and an inpainting mask for image editing
//! ([`crate::GenerateRequest::init`], [`crate::GenerateRequest::mask`]) from
//! PNG or `.npy` files, checked against the model.
//!
//! - Init image: a PNG of the model's `H×W` (grayscale for one channel, RGB
//!   for three; other colour types are converted), mapped to data space
//!   through `fewstep.data_range`; or a float32 `.npy` `[N,C,H,W]` or
//!   `[C,H,W]` already in data space.
//! - Mask: a grayscale PNG of `H×W`, white (255) = generate, black (0) =
//!   keep, grey in between; or a float32 `.npy` `[N,C,H,W]`, `[N,1,H,W]` or
//!   `[H,W]` with values in `[0, 1]`.

use std::path::Path;

use crate::error::IoError;
use crate::images::read_npy;
use crate::model::Metadata;

/// Reads an init image for `meta`'s model; returns its values (one image
/// or `N` images, in data space).
///
/// # Errors
/// [`IoError`] naming the file and what does not fit.
pub fn read_init_image(path: impl AsRef<Path>, meta: &Metadata) -> Result<Vec<f32>, IoError> {
    let path = path.as_ref();
    let (c, h, w) = chw(meta);
    if is_npy(path) {
        let (values, shape) = read_npy(path)?;
        let ok = match shape[..] {
            [n, cc, hh, ww] => n >= 1 && [cc, hh, ww] == [c, h, w],
            [cc, hh, ww] => [cc, hh, ww] == [c, h, w],
            _ => false,
        };
        if !ok {
            return Err(bad(
                path,
                format!("shape {shape:?}, expected [N,{c},{h},{w}] or [{c},{h},{w}]"),
            ));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad(path, "holds NaN or infinite values".into()));
        }
        return Ok(values);
    }
    let img = decode_png(path, h, w)?;
    let range = meta.data_range;
    let planar = match c {
        1 => img
            .to_luma8()
            .into_raw()
            .into_iter()
            .map(|p| range.from_u8(p))
            .collect(),
        3 => {
            let rgb = img.to_rgb8().into_raw();
            let mut v = vec![0f32; 3 * h * w];
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                for ch in 0..3 {
                    v[ch * h * w + i] = range.from_u8(px[ch]);
                }
            }
            v
        }
        _ => {
            return Err(bad(
                path,
                format!("the model has {c} channels: give the init image as .npy [N,{c},{h},{w}]"),
            ));
        }
    };
    Ok(planar)
}

/// Reads an inpainting mask for `meta`'s model (1 = generate, 0 = keep).
///
/// # Errors
/// [`IoError`] naming the file and what does not fit.
pub fn read_mask(path: impl AsRef<Path>, meta: &Metadata) -> Result<Vec<f32>, IoError> {
    let path = path.as_ref();
    let (c, h, w) = chw(meta);
    if is_npy(path) {
        let (values, shape) = read_npy(path)?;
        let ok = match shape[..] {
            [n, cc, hh, ww] => n >= 1 && (cc == c || cc == 1) && [hh, ww] == [h, w],
            [hh, ww] => [hh, ww] == [h, w],
            _ => false,
        };
        if !ok {
            return Err(bad(
                path,
                format!("shape {shape:?}, expected [N,{c},{h},{w}], [N,1,{h},{w}] or [{h},{w}]"),
            ));
        }
        if let Some(i) = values.iter().position(|m| !(0.0..=1.0).contains(m)) {
            return Err(bad(
                path,
                format!(
                    "value {i} is {}, outside [0, 1] (1 = generate, 0 = keep)",
                    values[i]
                ),
            ));
        }
        return Ok(values);
    }
    let img = decode_png(path, h, w)?;
    Ok(img
        .to_luma8()
        .into_raw()
        .into_iter()
        .map(|p| f32::from(p) / 255.0)
        .collect())
}

fn chw(meta: &Metadata) -> (usize, usize, usize) {
    let i = meta.image;
    (i.channels as usize, i.height as usize, i.width as usize)
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

fn decode_png(path: &Path, h: usize, w: usize) -> Result<image::DynamicImage, IoError> {
    let bytes = std::fs::read(path).map_err(|source| IoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let img =
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).map_err(|e| {
            bad(
                path,
                format!("not a PNG this reader accepts ({e}); give a .png or a float32 .npy"),
            )
        })?;
    if (img.width() as usize, img.height() as usize) != (w, h) {
        return Err(bad(
            path,
            format!(
                "{}×{} pixels, the model makes {w}×{h}",
                img.width(),
                img.height()
            ),
        ));
    }
    Ok(img)
}

fn bad(path: &Path, reason: String) -> IoError {
    IoError::Input {
        path: path.to_path_buf(),
        reason,
    }
}
