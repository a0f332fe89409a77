//! Loading a model straight from a file, or from a region of one (an
//! Android asset's file descriptor, a model appended to a bundle), without
//! holding the file's bytes in memory: the protobuf decoder pulls 64 KiB
//! windows, so the peak while loading is the decoded model plus tract's
//! copy of it, not the file's bytes on top (measured in
//! `docs/PERFORMANCE.md`, "Loading").

use std::fs::File;
use std::io;

use prost::Message;
use prost::bytes::Buf;
use tract_onnx::pb;

use crate::error::LoadError;

/// Bytes read per window.
const WINDOW: usize = 64 << 10;

/// `[offset, end)` of a file as a [`Buf`], read window by window with
/// positional reads (the file's cursor, which the caller may share, is not
/// moved on Unix). A read error cannot be returned through `Buf`: it is kept,
/// the window is zero-filled, and [`decode_region`] reports the error instead
/// of whatever the decoder made of the zeros.
struct Region<'a> {
    file: &'a File,
    /// File offset of the byte after the current window.
    next: u64,
    end: u64,
    window: Vec<u8>,
    pos: usize,
    failed: Option<io::Error>,
}

impl Region<'_> {
    fn refill(&mut self) {
        let n = (self.end - self.next).min(WINDOW as u64) as usize;
        self.window.clear();
        self.window.resize(n, 0);
        self.pos = 0;
        if n == 0 {
            return;
        }
        if self.failed.is_none()
            && let Err(e) = read_exact_at(self.file, &mut self.window, self.next)
        {
            self.window.fill(0);
            self.failed = Some(e);
        }
        self.next += n as u64;
    }
}

impl Buf for Region<'_> {
    fn remaining(&self) -> usize {
        let unread = usize::try_from(self.end - self.next).unwrap_or(usize::MAX);
        unread.saturating_add(self.window.len() - self.pos)
    }

    fn chunk(&self) -> &[u8] {
        &self.window[self.pos..]
    }

    fn advance(&mut self, mut cnt: usize) {
        loop {
            let here = self.window.len() - self.pos;
            if cnt < here {
                self.pos += cnt;
                return;
            }
            cnt -= here;
            self.refill();
            if self.window.is_empty() {
                return;
            }
        }
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// Where a region lies in its file: `len` bytes from `offset` (`None`: to
/// the end), checked against the file's size when it is a regular file.
fn region_bounds(file: &File, offset: u64, len: Option<u64>) -> io::Result<u64> {
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::other("it is a directory"));
    }
    let size = meta.is_file().then_some(meta.len());
    let end = match (len, size) {
        (Some(len), _) => offset
            .checked_add(len)
            .ok_or_else(|| io::Error::other("offset + length overflows"))?,
        (None, Some(size)) => size,
        // Reading a FIFO or a device "to the end" might never end.
        (None, None) => {
            return Err(io::Error::other(
                "not a regular file: give the length to read",
            ));
        }
    };
    if let Some(size) = size
        && offset > size
    {
        return Err(io::Error::other(format!(
            "offset {offset} is past the end of the file ({size} bytes)"
        )));
    }
    if let Some(size) = size
        && end > size
    {
        return Err(io::Error::other(format!(
            "the region ends at byte {end} but the file has {size} bytes"
        )));
    }
    Ok(end)
}

/// Decodes `[offset, offset + len)` of `file` (`len` `None`: to its end).
pub(crate) fn decode_region(
    file: &File,
    offset: u64,
    len: Option<u64>,
) -> Result<pb::ModelProto, RegionError> {
    let end = region_bounds(file, offset, len).map_err(RegionError::Io)?;
    if end == offset {
        return Err(RegionError::Load(LoadError::Decode("empty input".into())));
    }
    let mut region = Region {
        file,
        next: offset,
        end,
        window: Vec::with_capacity(WINDOW.min((end - offset) as usize)),
        pos: 0,
        failed: None,
    };
    region.refill();
    let decoded = pb::ModelProto::decode(&mut region);
    if let Some(e) = region.failed {
        return Err(RegionError::Io(e));
    }
    decoded.map_err(|e| RegionError::Load(LoadError::Decode(e.to_string())))
}

/// A region that could not be read (the caller knows which file it names)
/// or did not decode.
pub(crate) enum RegionError {
    Io(io::Error),
    Load(LoadError),
}
