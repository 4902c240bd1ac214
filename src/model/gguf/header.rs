//! Reading a GGUF file's header safely: the magic bytes, a zero alignment (which would make
//! candle's reader divide by zero), and every tensor's data lying inside the file, all checked
//! before anything is read.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo};
use std::io::{Cursor, Read};
use std::path::Path;

/// Reads the header (metadata and tensor table) of a GGUF file, checking the magic bytes and
/// that every tensor's data lies inside the file. Returns the parsed content and the mapping.
pub fn read_header(path: &Path) -> Result<(Content, memmap2::Mmap)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let len = file.metadata().map_err(|e| Error::file(path, e))?.len();
    let mut magic = [0u8; 4];
    if len < 8 || file.read_exact(&mut magic).is_err() {
        return Err(Error::file(
            path,
            format!("not a GGUF file: only {len} bytes, too short for a GGUF header"),
        ));
    }
    if &magic != b"GGUF" {
        return Err(Error::file(
            path,
            format!("not a GGUF file: it starts with {magic:02x?}, not the magic bytes 'GGUF'"),
        ));
    }
    // SAFETY: read-only mapping; we do not modify the file while it is mapped.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::file(path, e))?;
    if zero_alignment(&mmap) {
        return Err(Error::file(
            path,
            "corrupt GGUF header: general.alignment is 0",
        ));
    }
    let content = Content::read(&mut Cursor::new(&mmap[..]))
        .map_err(|e| Error::file(path, format!("corrupt or truncated GGUF header: {e}")))?;
    let data_start = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let (start, size) = tensor_extent(info, data_start).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "corrupt GGUF header: tensor '{name}' has an impossible shape {:?} for {:?}",
                    info.shape.dims(),
                    info.ggml_dtype
                ),
            )
        })?;
        if start.checked_add(size).is_none_or(|end| end > len) {
            return Err(Error::file(
                path,
                format!(
                    "truncated GGUF file: tensor '{name}' needs bytes {start}..{} but the file has \
                     {len} bytes",
                    start.saturating_add(size)
                ),
            ));
        }
    }
    Ok((content, mmap))
}

/// Whether the metadata sets `general.alignment` to 0 (candle's reader would divide by zero).
/// Walks the key/value section; on anything malformed it answers `false` and leaves the error
/// to the real reader.
fn zero_alignment(bytes: &[u8]) -> bool {
    struct Walk<'a> {
        b: &'a [u8],
        at: usize,
        wide: bool,
    }
    impl Walk<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let end = self.at.checked_add(n)?;
            let s = self.b.get(self.at..end)?;
            self.at = end;
            Some(s)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn len(&mut self) -> Option<usize> {
            if self.wide {
                usize::try_from(u64::from_le_bytes(self.take(8)?.try_into().ok()?)).ok()
            } else {
                Some(self.u32()? as usize)
            }
        }
        fn string(&mut self) -> Option<&[u8]> {
            let n = self.len()?;
            self.take(n)
        }
        /// Skips one value of type `t`, returning it as an integer when it is one.
        fn value(&mut self, t: u32, depth: usize) -> Option<Option<i128>> {
            let int = |s: &[u8], signed: bool| -> i128 {
                let mut v = [0u8; 16];
                v[..s.len()].copy_from_slice(s);
                let u = u128::from_le_bytes(v);
                let bits = 8 * s.len() as u32;
                if signed && s.last().is_some_and(|&x| x & 0x80 != 0) {
                    (u as i128) - (1i128 << bits)
                } else {
                    u as i128
                }
            };
            Some(match t {
                0 | 1 | 7 => Some(int(self.take(1)?, t == 1)),
                2 | 3 => Some(int(self.take(2)?, t == 3)),
                4 | 5 => Some(int(self.take(4)?, t == 5)),
                10 | 11 => Some(int(self.take(8)?, t == 11)),
                6 => self.take(4).map(|_| None)?,
                12 => self.take(8).map(|_| None)?,
                8 => self.string().map(|_| None)?,
                9 if depth < 8 => {
                    let et = self.u32()?;
                    let n = self.len()?;
                    for _ in 0..n {
                        self.value(et, depth + 1)?;
                    }
                    None
                }
                _ => return None,
            })
        }
    }
    fn scan(w: &mut Walk) -> Option<bool> {
        w.wide = w.u32()? >= 2;
        let _tensors = w.len()?;
        let kvs = w.len()?;
        for _ in 0..kvs {
            let is_align = w.string()? == b"general.alignment";
            let t = w.u32()?;
            let v = w.value(t, 0)?;
            if is_align {
                return Some(v == Some(0));
            }
        }
        Some(false)
    }
    let mut w = Walk {
        b: bytes,
        at: 4,
        wide: true,
    };
    scan(&mut w).unwrap_or(false)
}

/// Where a tensor's data starts and how many bytes it takes, or `None` when its shape overflows
/// or does not fill whole blocks of its type.
fn tensor_extent(info: &TensorInfo, data_start: u64) -> Option<(u64, u64)> {
    let elems = info
        .shape
        .dims()
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let block = info.ggml_dtype.block_size();
    if block == 0 || !elems.is_multiple_of(block) {
        return None;
    }
    let bytes = (elems / block).checked_mul(info.ggml_dtype.type_size())? as u64;
    Some((data_start.checked_add(info.offset)?, bytes))
}
