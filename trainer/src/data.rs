//! Training data, real and offline: Fashion-MNIST style idx(.gz) files, or a
//! folder of PNG images (resized, composited on white, labels from
//! sub-folder names). Images are stored as `f32` in the data range `[-1, 1]`
//! (`fewstep.data_range` default), converted with `fewstep-core`'s `DataRange`.

use crate::checkpoint::{Checkpoint, Meta};
use anyhow::{Context, Result, bail};
use fewstep_core::format::DataRange;
use flate2::read::GzDecoder;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// An in-memory image dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Channels of every image.
    pub channels: usize,
    /// Height of every image.
    pub height: usize,
    /// Width of every image.
    pub width: usize,
    /// `len * C*H*W` values in `[-1, 1]`, image after image.
    pub images: Vec<f32>,
    /// One label per image (all 0 when the dataset has no classes).
    pub labels: Vec<u32>,
    /// Class names (empty: unlabelled).
    pub class_names: Vec<String>,
    /// Where it came from (recorded in checkpoints and exported models).
    pub source: String,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Number of classes (0: unlabelled).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image `i`'s values.
    pub fn image(&self, i: usize) -> &[f32] {
        let d = self.image_len();
        &self.images[i * d..(i + 1) * d]
    }

    /// Keeps only the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.images.truncate(n * self.image_len());
        }
    }
}

/// How `--data` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// A directory with `train-images-idx3-ubyte[.gz]` (+ labels).
    Idx,
    /// A folder of PNG files (optionally in class sub-folders).
    PngFolder,
}

/// Options for the PNG folder reader (the `--size` and `--channels` flags of
/// the commands that read a dataset).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct PngOptions {
    /// PNG folders: resize to SIZE x SIZE.
    #[arg(long, default_value_t = PngOptions::default().size)]
    pub size: usize,
    /// PNG folders: 1 (grey) or 3 (RGB) channels.
    #[arg(long, default_value_t = PngOptions::default().channels)]
    pub channels: usize,
}

impl Default for PngOptions {
    fn default() -> Self {
        Self {
            size: 32,
            channels: 3,
        }
    }
}

const IDX_IMAGES: &str = "train-images-idx3-ubyte";
const IDX_LABELS: &str = "train-labels-idx1-ubyte";
const IDX_TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const IDX_TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Decides how to read `path`.
pub fn detect(path: &Path) -> Result<DataKind> {
    if !path.exists() {
        bail!("dataset path {} does not exist", path.display());
    }
    if !path.is_dir() {
        bail!(
            "dataset path {} is not a directory (expected a directory with {IDX_IMAGES}.gz, or a folder of PNG images)",
            path.display()
        );
    }
    if find_idx(path, IDX_IMAGES).is_some() {
        return Ok(DataKind::Idx);
    }
    Ok(DataKind::PngFolder)
}

/// Loads `--data PATH`, whichever kind it is.
pub fn load(path: &Path, png: PngOptions) -> Result<Dataset> {
    match detect(path)? {
        DataKind::Idx => load_idx_dir(path),
        DataKind::PngFolder => load_png_folder(path, png),
    }
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let result = if gz {
        GzDecoder::new(BufReader::new(file)).read_to_end(&mut bytes)
    } else {
        BufReader::new(file).read_to_end(&mut bytes)
    };
    result.with_context(|| format!("cannot read {} (corrupt or truncated?)", path.display()))?;
    Ok(bytes)
}

/// Parses an idx file: returns its dimensions and its `u8` payload.
pub fn parse_idx<'a>(bytes: &'a [u8], what: &str) -> Result<(Vec<usize>, &'a [u8])> {
    if bytes.len() < 4 {
        bail!("{what}: too short for an idx header");
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        bail!("{what}: not an idx file (bad magic)");
    }
    if bytes[2] != 0x08 {
        bail!(
            "{what}: idx element type 0x{:02x} is not unsigned byte",
            bytes[2]
        );
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        bail!("{what}: truncated idx header");
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .context("idx dimensions overflow")?;
    let payload = &bytes[header..];
    if payload.len() != count {
        bail!(
            "{what}: idx header promises {count} bytes ({dims:?}) but the file holds {}",
            payload.len()
        );
    }
    Ok((dims, payload))
}

/// The images of one idx file: `n` images of `height × width`, in the data
/// range.
struct IdxImages {
    n: usize,
    height: usize,
    width: usize,
    images: Vec<f32>,
}

/// Reads an idx images file (`[.gz]`): a non-empty 3-d `u8` array.
fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_all(path)?;
    let (dims, pixels) = parse_idx(&bytes, &path.display().to_string())?;
    if dims.len() != 3 {
        bail!(
            "{}: expected a 3-d idx (count, height, width), got {dims:?}",
            path.display()
        );
    }
    let (n, height, width) = (dims[0], dims[1], dims[2]);
    if n == 0 || height == 0 || width == 0 {
        bail!("{}: empty dataset ({dims:?})", path.display());
    }
    let range = DataRange::default();
    Ok(IdxImages {
        n,
        height,
        width,
        images: pixels.iter().map(|&p| range.from_u8(p)).collect(),
    })
}

/// Reads an idx labels file (`[.gz]`) that must hold one label per image.
fn read_idx_labels(path: &Path, n: usize) -> Result<Vec<u32>> {
    let bytes = read_all(path)?;
    let (dims, payload) = parse_idx(&bytes, &path.display().to_string())?;
    if dims != [n] {
        bail!("{}: {dims:?} labels for {n} images", path.display());
    }
    Ok(payload.iter().map(|&l| u32::from(l)).collect())
}

/// Reads `train-images-idx3-ubyte[.gz]` and, if present,
/// `train-labels-idx1-ubyte[.gz]` from `dir`. Labels found: 10 classes
/// (Fashion-MNIST's names when there are exactly 10).
pub fn load_idx_dir(dir: &Path) -> Result<Dataset> {
    let img_path = find_idx(dir, IDX_IMAGES)
        .with_context(|| format!("no {IDX_IMAGES}[.gz] in {}", dir.display()))?;
    let IdxImages {
        n,
        height,
        width,
        images,
    } = read_idx_images(&img_path)?;
    let (labels, class_names) = match find_idx(dir, IDX_LABELS) {
        Some(lp) => {
            let labels = read_idx_labels(&lp, n)?;
            let k = labels.iter().copied().max().unwrap_or(0) as usize + 1;
            let names = if k == 10 {
                FASHION_MNIST_CLASSES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                (0..k).map(|i| i.to_string()).collect()
            };
            (labels, names)
        }
        None => (vec![0; n], Vec::new()),
    };
    Ok(Dataset {
        channels: 1,
        height,
        width,
        images,
        labels,
        class_names,
        source: format!("idx:{}", dir.display()),
    })
}

/// Reads the `t10k-*` test split of an idx directory whose training split
/// is `train` (as [`load_idx_dir`] read it). `None` when the directory has
/// no `t10k-images` file.
pub fn load_idx_test(dir: &Path, train: &Dataset) -> Result<Option<Dataset>> {
    let Some(img_path) = find_idx(dir, IDX_TEST_IMAGES) else {
        return Ok(None);
    };
    let lbl_path = find_idx(dir, IDX_TEST_LABELS).with_context(|| {
        format!(
            "{} has {} but no {IDX_TEST_LABELS}[.gz]: test images need labels",
            dir.display(),
            img_path.display()
        )
    })?;
    let test = read_idx_images(&img_path)?;
    if test.height != train.height || test.width != train.width {
        bail!(
            "{}: {}x{} images, not {}x{} like the training split",
            img_path.display(),
            test.height,
            test.width,
            train.height,
            train.width
        );
    }
    let labels = read_idx_labels(&lbl_path, test.n)?;
    let k = train.num_classes();
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        bail!(
            "{}: label {bad} but the training split has {k} classes",
            lbl_path.display()
        );
    }
    Ok(Some(Dataset {
        channels: 1,
        height: test.height,
        width: test.width,
        images: test.images,
        labels,
        class_names: train.class_names.clone(),
        source: format!("idx:{} (t10k)", dir.display()),
    }))
}

/// Loads `--data`, keeping the first `limit` images.
pub fn load_data(path: &Path, png: PngOptions, limit: Option<usize>) -> Result<Dataset> {
    let mut data = load(path, png)?;
    if let Some(n) = limit {
        if n == 0 {
            bail!("--limit must be >= 1");
        }
        data.truncate(n);
        data.source = format!("{} (first {} images)", data.source, data.len());
    }
    Ok(data)
}

/// The dataset path a checkpoint was trained on (its `data_source`,
/// `idx:PATH` or `png:PATH`, possibly with a `(first N images)` suffix).
pub fn data_path_of(meta: &Meta) -> Option<PathBuf> {
    let src = meta.data_source.as_str();
    let src = src.split(" (first ").next().unwrap_or(src);
    let path = src
        .strip_prefix("idx:")
        .or_else(|| src.strip_prefix("png:"))
        .unwrap_or(src);
    let path = PathBuf::from(path);
    path.exists().then_some(path)
}

/// `--data`, or else the teacher's dataset.
pub fn resolve_data(arg: Option<&Path>, teacher: &Checkpoint, what: &str) -> Result<PathBuf> {
    match arg {
        Some(p) => Ok(p.to_path_buf()),
        None => data_path_of(&teacher.meta).with_context(|| {
            format!(
                "{what}: the teacher was trained on {:?}, which is not a path here: pass --data",
                teacher.meta.data_source
            )
        }),
    }
}

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a folder of PNGs. PNGs directly inside `dir` are unlabelled; if
/// instead `dir` has sub-folders holding PNGs, each sub-folder is a class
/// (sorted by name). Images are composited on white and resized (area
/// average) to `size × size`.
pub fn load_png_folder(dir: &Path, opts: PngOptions) -> Result<Dataset> {
    if opts.channels != 1 && opts.channels != 3 {
        bail!("PNG channels must be 1 or 3, not {}", opts.channels);
    }
    if opts.size == 0 {
        bail!("PNG size must be >= 1");
    }
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    let mut class_names = Vec::new();
    let top = png_files(dir)?;
    if !top.is_empty() {
        files.extend(top.into_iter().map(|p| (p, 0)));
    } else {
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for sub in subdirs {
            let pngs = png_files(&sub)?;
            if pngs.is_empty() {
                continue;
            }
            let label = class_names.len() as u32;
            class_names.push(
                sub.file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            files.extend(pngs.into_iter().map(|p| (p, label)));
        }
    }
    if files.is_empty() {
        bail!(
            "{} holds no PNG images (and no idx files): nothing to train on",
            dir.display()
        );
    }
    let d = opts.channels * opts.size * opts.size;
    let mut images = Vec::with_capacity(files.len() * d);
    let mut labels = Vec::with_capacity(files.len());
    let range = DataRange::default();
    for (path, label) in &files {
        let rgb = read_png_on_white(path)?;
        let resized = resize_area(&rgb.pixels, rgb.width, rgb.height, opts.size);
        for c in 0..opts.channels {
            for p in resized.chunks_exact(3) {
                let v = if opts.channels == 3 {
                    p[c]
                } else {
                    // ITU-R BT.601 luma.
                    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
                };
                images.push(range.lo + (range.hi - range.lo) * v / 255.0);
            }
        }
        labels.push(*label);
    }
    Ok(Dataset {
        channels: opts.channels,
        height: opts.size,
        width: opts.size,
        images,
        labels,
        class_names,
        source: format!("png:{}", dir.display()),
    })
}

/// An RGB image with values in 0..=255 as `f32`.
struct Rgb {
    width: usize,
    height: usize,
    pixels: Vec<f32>,
}

/// Decodes a PNG of any colour type and composites it on white.
fn read_png_on_white(path: &Path) -> Result<Rgb> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{}: not a valid PNG", path.display()))?;
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("{}: corrupt PNG data", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    if w == 0 || h == 0 {
        bail!("{}: empty image", path.display());
    }
    let bytes = &buf[..info.buffer_size()];
    let (n, has_alpha, grey) = match info.color_type {
        png::ColorType::Grayscale => (1, false, true),
        png::ColorType::GrayscaleAlpha => (2, true, true),
        png::ColorType::Rgb => (3, false, false),
        png::ColorType::Rgba => (4, true, false),
        png::ColorType::Indexed => bail!("{}: palette not expanded", path.display()),
    };
    let mut pixels = Vec::with_capacity(w * h * 3);
    for p in bytes.chunks_exact(n) {
        let a = if has_alpha {
            f32::from(p[n - 1]) / 255.0
        } else {
            1.0
        };
        for c in 0..3 {
            let v = f32::from(if grey { p[0] } else { p[c] });
            pixels.push(a * v + (1.0 - a) * 255.0);
        }
    }
    Ok(Rgb {
        width: w,
        height: h,
        pixels,
    })
}

/// Resizes an RGB image to `size × size` by area averaging (each output pixel
/// is the mean of the input area it covers, with fractional edge weights).
fn resize_area(src: &[f32], w: usize, h: usize, size: usize) -> Vec<f32> {
    let mut out = vec![0f32; size * size * 3];
    let sx = w as f64 / size as f64;
    let sy = h as f64 / size as f64;
    for oy in 0..size {
        let (y0, y1) = (oy as f64 * sy, (oy + 1) as f64 * sy);
        for ox in 0..size {
            let (x0, x1) = (ox as f64 * sx, (ox + 1) as f64 * sx);
            let mut acc = [0f64; 3];
            let mut total = 0f64;
            let mut y = y0.floor() as usize;
            while (y as f64) < y1 && y < h {
                let wy = (y1.min(y as f64 + 1.0) - y0.max(y as f64)).max(0.0);
                let mut x = x0.floor() as usize;
                while (x as f64) < x1 && x < w {
                    let wx = (x1.min(x as f64 + 1.0) - x0.max(x as f64)).max(0.0);
                    let wgt = wx * wy;
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += wgt * f64::from(src[(y * w + x) * 3 + c]);
                    }
                    total += wgt;
                    x += 1;
                }
                y += 1;
            }
            for c in 0..3 {
                out[(oy * size + ox) * 3 + c] = if total > 0.0 {
                    (acc[c] / total) as f32
                } else {
                    255.0
                };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn write_gz(path: &Path, bytes: &[u8]) {
        let mut enc = GzEncoder::new(File::create(path).unwrap(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    }

    fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reads_idx_gz_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 2 * 3).map(|i| (i * 20) as u8).collect();
        write_gz(
            &dir.path().join(format!("{IDX_IMAGES}.gz")),
            &idx(&[2, 2, 3], &pixels),
        );
        write_gz(
            &dir.path().join(format!("{IDX_LABELS}.gz")),
            &idx(&[2], &[3, 9]),
        );
        assert_eq!(detect(dir.path()).unwrap(), DataKind::Idx);
        let ds = load(dir.path(), PngOptions::default()).unwrap();
        assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (2, 1, 2, 3));
        assert_eq!(ds.labels, vec![3, 9]);
        assert_eq!(ds.num_classes(), 10);
        assert_eq!(ds.images[0], -1.0);
        assert!((ds.images[11] - DataRange::default().from_u8(220)).abs() < 1e-7);
    }

    #[test]
    fn rejects_truncated_and_corrupt_idx() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(format!("{IDX_IMAGES}.gz"));
        write_gz(&p, &idx(&[2, 2, 2], &[1, 2, 3]));
        let err = load(dir.path(), PngOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("promises 8 bytes"), "{err:#}");
        std::fs::write(&p, b"this is not gzip").unwrap();
        let err = load(dir.path(), PngOptions::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("corrupt or truncated"),
            "{err:#}"
        );
    }

    #[test]
    fn missing_and_empty_paths_are_errors() {
        let err = load(Path::new("/nonexistent/fewstep"), PngOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"));
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), PngOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("no PNG images"), "{err:#}");
    }

    fn write_png(path: &Path, w: u32, h: u32, rgba: &[u8]) {
        let file = File::create(path).unwrap();
        let mut enc = png::Encoder::new(file, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(rgba).unwrap();
    }

    #[test]
    fn png_folder_with_classes_composites_on_white_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        for class in ["b_cats", "a_dogs"] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
        }
        // 4x4 fully transparent -> white; 4x4 opaque red.
        write_png(&dir.path().join("b_cats/x.png"), 4, 4, &[0u8; 64]);
        let red: Vec<u8> = (0..16).flat_map(|_| [255u8, 0, 0, 255]).collect();
        write_png(&dir.path().join("a_dogs/y.png"), 4, 4, &red);
        let ds = load(
            dir.path(),
            PngOptions {
                size: 2,
                channels: 3,
            },
        )
        .unwrap();
        assert_eq!(ds.class_names, vec!["a_dogs", "b_cats"]);
        assert_eq!(ds.labels, vec![0, 1]);
        assert_eq!((ds.channels, ds.height, ds.width), (3, 2, 2));
        // Red image, channel-major: R plane = 1, G and B planes = -1.
        assert!(ds.image(0)[..4].iter().all(|&v| v == 1.0));
        assert!(ds.image(0)[4..].iter().all(|&v| v == -1.0));
        // Transparent image on white.
        assert!(ds.image(1).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn corrupt_png_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.png"), b"\x89PNG garbage").unwrap();
        let err = load(dir.path(), PngOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("bad.png"), "{err:#}");
    }

    #[test]
    fn area_resize_averages() {
        // 2x1 image black|white -> 1x1 grey.
        let src = [0.0, 0.0, 0.0, 255.0, 255.0, 255.0];
        let out = resize_area(&src, 2, 1, 1);
        assert_eq!(out, vec![127.5; 3]);
    }
}
