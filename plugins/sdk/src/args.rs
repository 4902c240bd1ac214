//! Reading `intervention_args` without an allocator: the args arrive as JSON text, and most
//! plugins need a few numbers out of the top-level object.
//!
//! ```ignore
//! let factor = vene_plugin_sdk::args::number(args, "factor")?.unwrap_or(1.0);
//! ```

use crate::Error;

/// The number under the top-level key `key` of a JSON object. `Ok(None)` when the args are
/// `null` (or empty) or have no such key; `Err` when they are not an object or the value is
/// not a number.
pub fn number(args: &str, key: &str) -> Result<Option<f32>, Error> {
    match find(args, key)? {
        None => Ok(None),
        Some(v) => v
            .parse::<f32>()
            .map(Some)
            .map_err(|_| "an intervention argument is not a number"),
    }
}

/// The raw JSON text of the value under the top-level key `key` (`Ok(None)` when absent).
/// Keys are compared as written, without unescaping.
pub fn find<'a>(args: &'a str, key: &str) -> Result<Option<&'a str>, Error> {
    let s = args.trim();
    if s.is_empty() || s == "null" {
        return Ok(None);
    }
    let b = s.as_bytes();
    if b[0] != b'{' {
        return Err("intervention_args must be a JSON object");
    }
    let mut i = 1;
    loop {
        skip_ws(b, &mut i);
        match b.get(i) {
            Some(b'}') => return Ok(None),
            Some(b'"') => {}
            _ => return Err("intervention_args is not valid JSON"),
        }
        let (ks, ke) = string(b, &mut i)?;
        skip_ws(b, &mut i);
        if b.get(i) != Some(&b':') {
            return Err("intervention_args is not valid JSON");
        }
        i += 1;
        skip_ws(b, &mut i);
        let vs = i;
        value(b, &mut i)?;
        if &s[ks..ke] == key {
            return Ok(Some(&s[vs..i]));
        }
        skip_ws(b, &mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(None),
            _ => return Err("intervention_args is not valid JSON"),
        }
    }
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while matches!(b.get(*i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        *i += 1;
    }
}

/// A string starting at `b[*i] == '"'`; returns the byte range of its contents.
fn string(b: &[u8], i: &mut usize) -> Result<(usize, usize), Error> {
    let start = *i + 1;
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => {
                *i = j + 1;
                return Ok((start, j));
            }
            _ => j += 1,
        }
    }
    Err("intervention_args has an unterminated string")
}

/// Skips one JSON value.
fn value(b: &[u8], i: &mut usize) -> Result<(), Error> {
    match b.get(*i) {
        Some(b'"') => string(b, i).map(|_| ()),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            while *i < b.len() {
                match b[*i] {
                    b'"' => {
                        string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            *i += 1;
                            return Ok(());
                        }
                    }
                    _ => {}
                }
                *i += 1;
            }
            Err("intervention_args is not valid JSON")
        }
        Some(_) => {
            let start = *i;
            while *i < b.len()
                && !matches!(b[*i], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            {
                *i += 1;
            }
            if *i == start {
                Err("intervention_args is not valid JSON")
            } else {
                Ok(())
            }
        }
        None => Err("intervention_args is not valid JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let a = r#"{"name": "x, y", "nested": {"factor": 9}, "factor": -2.5e0, "n": [1, 2]}"#;
        assert_eq!(number(a, "factor"), Ok(Some(-2.5)));
        assert_eq!(number(a, "missing"), Ok(None));
        assert!(number(a, "name").is_err());
        assert_eq!(find(a, "n"), Ok(Some("[1, 2]")));
        assert_eq!(number("null", "factor"), Ok(None));
        assert!(number("[1]", "factor").is_err());
        assert!(number("{\"factor\": ", "factor").is_err());
    }
}
