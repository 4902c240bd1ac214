//! Readers of JSON values shared by the request and config parsers. Each takes the field's
//! name so every error says where the bad value is. This module depends on nothing above it.

use crate::error::Result;
use crate::invalid;
use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

/// A field's value, treating `null` as absent.
pub fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The first key outside `known` (with `comments`, keys starting with `_` are comments).
pub fn check_keys<'a>(
    obj: &'a Map<String, Value>,
    known: &[&str],
    comments: bool,
) -> Option<&'a str> {
    obj.keys()
        .map(String::as_str)
        .find(|k| (!comments || !k.starts_with('_')) && !known.contains(k))
}

/// A non-negative integer.
pub fn uint(v: &Value, field: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| invalid!("{field} must be a non-negative integer, got {v}"))
}

/// A finite number.
pub fn float(v: &Value, field: &str) -> Result<f64> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| invalid!("{field} must be a number, got {v}"))
}

/// `true` or `false`.
pub fn flag(v: &Value, field: &str) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| invalid!("{field} must be true or false, got {v}"))
}

/// A string.
pub fn string<'a>(v: &'a Value, field: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| invalid!("{field} must be a string, got {v}"))
}

/// A list of token ids (non-negative integers that fit 32 bits).
pub fn ids(v: &Value, field: &str) -> Result<Vec<u32>> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid!("{field} must be a list of token ids, got {v}"))?;
    list.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| invalid!("{field}[{i}] must be a token id (0 to 2^32-1), got {x}"))
        })
        .collect()
}

/// A non-empty rectangular list of rows of non-negative 32-bit integers.
pub fn int_rows(v: &Value, field: &str) -> Result<Vec<Vec<u32>>> {
    let rows = v
        .as_array()
        .ok_or_else(|| invalid!("{field} must be a list of rows, got {v}"))?;
    let rows: Vec<Vec<u32>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.as_array()
                .and_then(|r| {
                    r.iter()
                        .map(|x| x.as_u64().and_then(|t| u32::try_from(t).ok()))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| invalid!("{field}[{i}] must be a list of non-negative integers"))
        })
        .collect::<Result<_>>()?;
    if rows.is_empty()
        || rows
            .iter()
            .any(|r| r.len() != rows[0].len() || r.is_empty())
    {
        return Err(invalid!("{field} must be a non-empty rectangular list of rows (pad them and give an attention_mask)"));
    }
    Ok(rows)
}

/// A nested JSON number array as an f32 tensor.
pub fn tensor_from_json(v: &Value, device: &Device) -> Result<Tensor> {
    fn walk(
        v: &Value,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<f32>,
    ) -> std::result::Result<(), String> {
        if depth > 8 {
            return Err("nested deeper than 8 levels".into());
        }
        match v {
            Value::Number(n) => {
                if depth != shape.len() {
                    return Err("ragged nesting".into());
                }
                out.push(n.as_f64().unwrap_or(0.0) as f32);
                Ok(())
            }
            Value::Array(a) => {
                if depth == shape.len() {
                    if !out.is_empty() {
                        return Err("ragged nesting".into());
                    }
                    shape.push(a.len());
                } else if depth > shape.len() || shape[depth] != a.len() {
                    return Err(format!(
                        "ragged array: lengths {} and {}",
                        shape.get(depth).copied().unwrap_or(0),
                        a.len()
                    ));
                }
                a.iter().try_for_each(|x| walk(x, depth + 1, shape, out))
            }
            other => Err(format!("expected numbers, got {other}")),
        }
    }
    let mut shape = Vec::new();
    let mut data = Vec::new();
    walk(v, 0, &mut shape, &mut data).map_err(|e| invalid!("{e}"))?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(invalid!("ragged nesting"));
    }
    Ok(Tensor::from_vec(data, shape, device)?)
}
