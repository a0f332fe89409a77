//! The fewstep model format, version 1 (`docs/MODEL_FORMAT.md`): metadata key
//! names and parsers for their values. The runtime reads with these, the
//! trainer writes with their `Display` forms, so both agree by construction.

use core::fmt;
use core::str::FromStr;

/// The format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// `fewstep.format` (required): `1`.
pub const KEY_FORMAT: &str = "fewstep.format";
/// `fewstep.prediction` (required): `x`, `eps` or `v`.
pub const KEY_PREDICTION: &str = "fewstep.prediction";
/// `fewstep.schedule` (required).
pub const KEY_SCHEDULE: &str = "fewstep.schedule";
/// `fewstep.student_steps` (required): `T >= 1`, or `0` for a diffusion model.
pub const KEY_STUDENT_STEPS: &str = "fewstep.student_steps";
/// `fewstep.image` (required): `C,H,W`.
pub const KEY_IMAGE: &str = "fewstep.image";
/// `fewstep.num_classes` (optional): `K`, `0`/absent = unconditional.
pub const KEY_NUM_CLASSES: &str = "fewstep.num_classes";
/// `fewstep.data_range` (optional): `lo,hi`, default `-1,1`.
pub const KEY_DATA_RANGE: &str = "fewstep.data_range";
/// `fewstep.addim_xvar` (optional): comma-separated empirical xvar table.
pub const KEY_ADDIM_XVAR: &str = "fewstep.addim_xvar";

/// Graph input holding the noisy sample.
pub const INPUT_Z: &str = "z";
/// Graph input holding the times.
pub const INPUT_T: &str = "t";
/// Optional graph input holding class labels.
pub const INPUT_LABEL: &str = "label";

/// `fewstep.image`: channels, height, width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Channels `C`.
    pub channels: u32,
    /// Height `H`.
    pub height: u32,
    /// Width `W`.
    pub width: u32,
}

impl ImageShape {
    /// `C * H * W` (the `d` of aDDIM), or `None` on overflow.
    pub fn len(&self) -> Option<usize> {
        (self.channels as usize)
            .checked_mul(self.height as usize)?
            .checked_mul(self.width as usize)
    }

    /// True when any dimension is 0 (never true of a parsed shape).
    pub fn is_empty(&self) -> bool {
        self.channels == 0 || self.height == 0 || self.width == 0
    }
}

impl FromStr for ImageShape {
    type Err = ValueError;
    /// `C,H,W`, each an integer >= 1.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let mut it = s.split(',');
        let mut next = || -> Result<u32, ValueError> {
            let part = it.next().ok_or(ValueError::WrongCount)?;
            let v: u32 = part.trim().parse().map_err(|_| ValueError::NotAnInteger)?;
            if v == 0 {
                return Err(ValueError::Zero);
            }
            Ok(v)
        };
        let shape = ImageShape {
            channels: next()?,
            height: next()?,
            width: next()?,
        };
        if it.next().is_some() {
            return Err(ValueError::WrongCount);
        }
        Ok(shape)
    }
}

impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.channels, self.height, self.width)
    }
}

/// `fewstep.data_range`: the data-space interval mapped to pixels 0..255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataRange {
    /// Maps to pixel 0.
    pub lo: f32,
    /// Maps to pixel 255.
    pub hi: f32,
}

impl Default for DataRange {
    fn default() -> Self {
        Self { lo: -1.0, hi: 1.0 }
    }
}

impl DataRange {
    /// `round(255 (clamp(v, lo, hi) - lo) / (hi - lo))`; NaN maps to 0.
    #[inline]
    pub fn to_u8(&self, v: f32) -> u8 {
        if v.is_nan() {
            return 0;
        }
        let unit = (v.clamp(self.lo, self.hi) - self.lo) / (self.hi - self.lo);
        libm::roundf(255.0 * unit) as u8
    }

    /// The data value of pixel `p` (inverse of [`Self::to_u8`] at pixel centres).
    #[inline]
    pub fn from_u8(&self, p: u8) -> f32 {
        self.lo + (self.hi - self.lo) * f32::from(p) / 255.0
    }

    /// Clamps a value into the range (the runtime's optional `x_hat` clipping).
    #[inline]
    pub fn clamp(&self, v: f32) -> f32 {
        v.clamp(self.lo, self.hi)
    }
}

impl FromStr for DataRange {
    type Err = ValueError;
    /// `lo,hi`, finite with `lo < hi`.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let (a, b) = s.split_once(',').ok_or(ValueError::WrongCount)?;
        if b.contains(',') {
            return Err(ValueError::WrongCount);
        }
        let lo: f32 = a.trim().parse().map_err(|_| ValueError::NotANumber)?;
        let hi: f32 = b.trim().parse().map_err(|_| ValueError::NotANumber)?;
        if !lo.is_finite() || !hi.is_finite() || lo >= hi {
            return Err(ValueError::BadRange);
        }
        Ok(DataRange { lo, hi })
    }
}

impl fmt::Display for DataRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.lo, self.hi)
    }
}

/// Parses an unsigned integer value (`fewstep.format`, `student_steps`, `num_classes`).
pub fn parse_u32(s: &str) -> Result<u32, ValueError> {
    s.trim().parse().map_err(|_| ValueError::NotAnInteger)
}

/// The values of a `fewstep.addim_xvar` table, parsed lazily (no allocation).
/// Each must be finite and >= 0. Check [`xvar_table_len`] first to size a buffer.
pub fn parse_xvar_table(s: &str) -> impl Iterator<Item = Result<f32, ValueError>> + '_ {
    s.split(',').map(|part| {
        let v: f32 = part.trim().parse().map_err(|_| ValueError::NotANumber)?;
        if !v.is_finite() || v < 0.0 {
            return Err(ValueError::Negative);
        }
        Ok(v)
    })
}

/// Number of entries in a `fewstep.addim_xvar` table, or an error if any
/// entry is malformed or there are fewer than 2.
pub fn xvar_table_len(s: &str) -> Result<usize, ValueError> {
    let mut n = 0;
    for v in parse_xvar_table(s) {
        v?;
        n += 1;
    }
    if n < 2 {
        return Err(ValueError::WrongCount);
    }
    Ok(n)
}

/// Why a metadata value was rejected (the caller names the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueError {
    /// Wrong number of comma-separated fields.
    WrongCount,
    /// A field is not a non-negative integer.
    NotAnInteger,
    /// A field is not a number.
    NotANumber,
    /// A dimension is 0.
    Zero,
    /// `lo >= hi` or a bound is not finite.
    BadRange,
    /// A table value is negative or not finite.
    Negative,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WrongCount => "wrong number of comma-separated values",
            Self::NotAnInteger => "not a non-negative integer",
            Self::NotANumber => "not a number",
            Self::Zero => "a dimension is 0",
            Self::BadRange => "range must be finite with lo < hi",
            Self::Negative => "values must be finite and >= 0",
        })
    }
}

impl core::error::Error for ValueError {}
