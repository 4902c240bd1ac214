//! NumPy `.npy` arrays and `.npz` archives (a zip of `.npy` files), read without Python:
//! little-endian f32 / f64 / f16 arrays in C or Fortran order, as Gemma Scope publishes them.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Parses one `.npy` file's bytes into an f32 tensor; `what` names it in errors.
pub fn parse_npy(bytes: &[u8], what: &str, device: &Device) -> Result<Tensor> {
    let bad = |msg: String| Error::Invalid(format!("{what}: {msg}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy array (no \\x93NUMPY magic)".into()));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad(format!(".npy format version {major} is not supported"))),
    };
    let header = bytes
        .get(start..start + len)
        .ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text".into()))?;
    let descr = header_value(header, "descr").ok_or_else(|| bad("header has no 'descr'".into()))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = header_value(header, "fortran_order")
        .ok_or_else(|| bad("header has no 'fortran_order'".into()))?
        .starts_with("True");
    let shape = header_value(header, "shape").ok_or_else(|| bad("header has no 'shape'".into()))?;
    let shape: Vec<usize> = shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad(format!("bad shape entry '{s}'"))))
        .collect::<Result<_>>()?;
    let n: usize = shape.iter().product();
    let data = &bytes[start + len..];
    let values: Vec<f32> = match descr {
        "<f4" | "=f4" => chunks(data, 4, n, what)?
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "<f8" | "=f8" => chunks(data, 8, n, what)?
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        "<f2" | "=f2" => chunks(data, 2, n, what)?
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(bad(format!(
                "dtype '{other}' is not supported (vene reads little-endian f2, f4, f8)"
            )))
        }
    };
    if fortran && shape.len() > 1 {
        // Fortran order is the transpose of the reversed shape in C order.
        let rev: Vec<usize> = shape.iter().rev().copied().collect();
        let t = Tensor::from_vec(values, rev, device)?;
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        return Ok(t.permute(perm)?.contiguous()?);
    }
    Ok(Tensor::from_vec(values, shape, device)?)
}

fn chunks<'a>(
    data: &'a [u8],
    size: usize,
    n: usize,
    what: &str,
) -> Result<std::slice::ChunksExact<'a, u8>> {
    if data.len() < n * size {
        return Err(Error::Invalid(format!(
            "{what}: truncated data ({} bytes for {n} values of {size} bytes)",
            data.len()
        )));
    }
    Ok(data[..n * size].chunks_exact(size))
}

/// The text of `'key': value` in a .npy header dict (value up to the next top-level comma).
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Every array of an `.npz` archive, by name without `.npy`.
pub fn read_npz(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| Error::file(path, format!("not a .npz (zip) archive: {e}")))?;
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| Error::file(path, format!("entry {i}: {e}")))?;
        let name = entry.name().to_string();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| Error::file(path, format!("{name}: {e}")))?;
        let what = format!("{}: {name}", path.display());
        out.insert(key.to_string(), parse_npy(&bytes, &what, device)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn reads_c_and_fortran_order() {
        let vals: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let c = parse_npy(&npy("<f4", false, "(2, 3)", &vals), "t", &Device::Cpu).unwrap();
        assert_eq!(
            c.to_vec2::<f32>().unwrap(),
            vec![vec![1., 2., 3.], vec![4., 5., 6.]]
        );
        let f = parse_npy(&npy("<f4", true, "(2, 3)", &vals), "t", &Device::Cpu).unwrap();
        assert_eq!(
            f.to_vec2::<f32>().unwrap(),
            vec![vec![1., 3., 5.], vec![2., 4., 6.]]
        );
        let v = parse_npy(&npy("<f4", false, "(6,)", &vals), "t", &Device::Cpu).unwrap();
        assert_eq!(v.dims(), &[6]);
        let e = parse_npy(&npy("<i8", false, "(6,)", &vals), "t", &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("<i8"), "{e}");
        let e = parse_npy(&npy("<f4", false, "(4, 3)", &vals), "t", &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
