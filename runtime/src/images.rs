//! Generation results and their encodings: f32 `[N,C,H,W]`, RGB8, PNG grid,
//! `.npy`.

use std::io::Write;
use std::path::Path;

use fewstep_core::format::{DataRange, ImageShape};

use crate::error::IoError;

/// A batch of generated images in data space, `[N,C,H,W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    data: Vec<f32>,
    batch: usize,
    shape: ImageShape,
    range: DataRange,
    partial: bool,
    steps_done: u32,
}

impl Images {
    pub(crate) fn new(
        data: Vec<f32>,
        batch: usize,
        shape: ImageShape,
        range: DataRange,
        partial: bool,
        steps_done: u32,
    ) -> Self {
        Images {
            data,
            batch,
            shape,
            range,
            partial,
            steps_done,
        }
    }

    /// The values, `[N,C,H,W]` row-major, in data space.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// Takes the values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    /// `N`.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The model's data range (`fewstep.data_range`), how values map to pixels.
    pub fn data_range(&self) -> DataRange {
        self.range
    }
    /// `C,H,W`.
    pub fn shape(&self) -> ImageShape {
        self.shape
    }
    /// `[N, C, H, W]`.
    pub fn dims(&self) -> [usize; 4] {
        [
            self.batch,
            self.shape.channels as usize,
            self.shape.height as usize,
            self.shape.width as usize,
        ]
    }
    /// True when the call was cancelled: the values are then the latest
    /// `x_hat`, the best estimate so far, not a finished sample.
    pub fn is_partial(&self) -> bool {
        self.partial
    }
    /// Network evaluations (steps) completed.
    pub fn steps_done(&self) -> u32 {
        self.steps_done
    }
    /// Image `i`, `[C,H,W]`.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let d = self.data.len() / self.batch.max(1);
        self.data.get(i * d..(i + 1) * d)
    }

    /// Image `i` as interleaved RGB8 (`H*W*3` bytes): pixels by
    /// `DataRange::to_u8`; one channel is expanded to gray RGB; with more
    /// than three channels the first three are used.
    pub fn rgb8(&self, i: usize) -> Option<Vec<u8>> {
        let img = self.image(i)?;
        let c = self.shape.channels as usize;
        let hw = self.shape.height as usize * self.shape.width as usize;
        let mut out = Vec::with_capacity(hw * 3);
        for p in 0..hw {
            for ch in 0..3 {
                let src = if c >= 3 { ch } else { 0 };
                out.push(self.range.to_u8(img[src * hw + p]));
            }
        }
        Some(out)
    }

    /// Every image as RGB8.
    pub fn to_rgb8(&self) -> Vec<Vec<u8>> {
        (0..self.batch).filter_map(|i| self.rgb8(i)).collect()
    }

    /// All images tiled in a near-square grid with a 2-pixel gap, as PNG bytes.
    pub fn png_grid(&self) -> Result<Vec<u8>, IoError> {
        let n = self.batch.max(1);
        let cols = (n as f64).sqrt().ceil() as usize;
        let rows = n.div_ceil(cols);
        let (h, w) = (self.shape.height as usize, self.shape.width as usize);
        let gap = if n > 1 { 2 } else { 0 };
        let gw = cols * w + (cols - 1) * gap;
        let gh = rows * h + (rows - 1) * gap;
        let mut buf = vec![0u8; gw * gh * 3];
        for i in 0..self.batch {
            let Some(px) = self.rgb8(i) else { continue };
            let (r, c) = (i / cols, i % cols);
            for y in 0..h {
                let dst = ((r * (h + gap) + y) * gw + c * (w + gap)) * 3;
                buf[dst..dst + w * 3].copy_from_slice(&px[y * w * 3..(y + 1) * w * 3]);
            }
        }
        let img = image::RgbImage::from_raw(gw as u32, gh as u32, buf)
            .ok_or_else(|| IoError::Png("grid buffer size".into()))?;
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| IoError::Png(e.to_string()))?;
        Ok(bytes)
    }

    /// Writes the PNG grid to a file.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<(), IoError> {
        let bytes = self.png_grid()?;
        write_file(path.as_ref(), &bytes)
    }

    /// Writes the values as a float32 `.npy` of shape `[N,C,H,W]`.
    pub fn save_npy(&self, path: impl AsRef<Path>) -> Result<(), IoError> {
        write_file(path.as_ref(), &npy_bytes(&self.data, &self.dims()))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let io = |source| IoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    Ok(())
}

/// A float32 little-endian `.npy` (format 1.0) of the given shape.
pub fn npy_bytes(data: &[f32], shape: &[usize]) -> Vec<u8> {
    let dims = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let dims = if shape.len() == 1 {
        format!("{dims},")
    } else {
        dims
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads a float32 little-endian C-order `.npy`: `(values, shape)`.
pub fn read_npy(path: impl AsRef<Path>) -> Result<(Vec<f32>, Vec<usize>), IoError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| IoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes).map_err(|reason| IoError::Npy {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses `.npy` bytes (float32, little-endian, C order).
pub fn parse_npy(bytes: &[u8]) -> Result<(Vec<f32>, Vec<usize>), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated .npy header")?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}'"))?;
        let rest = &header[at + name.len() + 2..];
        Some(rest[rest.find(':')? + 1..].trim_start())
    };
    let descr = field("descr").ok_or("no 'descr' in .npy header")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(format!(
            "dtype must be little-endian float32 ('<f4'), header says {}",
            descr.split(',').next().unwrap_or("")
        ));
    }
    let fortran = field("fortran_order").ok_or("no 'fortran_order' in .npy header")?;
    if !fortran.starts_with("False") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape = field("shape").ok_or("no 'shape' in .npy header")?;
    let close = shape.find(')').ok_or("bad shape in .npy header")?;
    let dims: Vec<usize> = shape[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension `{s}`"))
        })
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape too large")?;
    let data = &bytes[start + hlen..];
    if data.len() != count * 4 {
        return Err(format!(
            "data holds {} bytes; shape {:?} needs {}",
            data.len(),
            dims,
            count * 4
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((values, dims))
}
