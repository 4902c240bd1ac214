//! What a forward consumes and returns.

use crate::error::Result;
use crate::invalid;
use candle_core::{DType, Device, Tensor};

/// A batch for one forward. Token models take `ids` (batch, seq) u32; models without an
/// embedding layer (pyvene's MLP classifier) take `embeds` (batch, seq, dim) f32.
#[derive(Debug, Clone)]
pub struct Input {
    pub ids: Option<Tensor>,
    pub embeds: Option<Tensor>,
    /// (batch, seq), 1 for real tokens, 0 for padding (left or right).
    pub attention_mask: Option<Tensor>,
    /// (batch, seq). When absent they follow Hugging Face's generate: `cumsum(mask) - 1`, with
    /// padded slots set to 1; without a mask, `0..seq`.
    pub position_ids: Option<Tensor>,
}

impl Input {
    pub fn from_ids(ids: Tensor) -> Self {
        Input {
            ids: Some(ids),
            embeds: None,
            attention_mask: None,
            position_ids: None,
        }
    }

    pub fn from_embeds(embeds: Tensor) -> Self {
        Input {
            ids: None,
            embeds: Some(embeds),
            attention_mask: None,
            position_ids: None,
        }
    }

    /// One unpadded sequence.
    pub fn from_tokens(tokens: &[u32], device: &Device) -> Result<Self> {
        Ok(Self::from_ids(Tensor::new(tokens, device)?.unsqueeze(0)?))
    }

    /// Pads rows of different lengths with `pad_id`, on the left or the right, and builds the mask.
    pub fn padded(rows: &[Vec<u32>], pad_id: u32, left: bool, device: &Device) -> Result<Self> {
        if rows.is_empty() || rows.iter().any(|r| r.is_empty()) {
            return Err(invalid!(
                "a batch needs at least one row and every row a token"
            ));
        }
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for r in rows {
            let pad = len - r.len();
            let (ids_row, mask_row): (Vec<u32>, Vec<u32>) = if left {
                (
                    std::iter::repeat_n(pad_id, pad)
                        .chain(r.iter().copied())
                        .collect(),
                    std::iter::repeat_n(0, pad)
                        .chain(std::iter::repeat_n(1, r.len()))
                        .collect(),
                )
            } else {
                (
                    r.iter()
                        .copied()
                        .chain(std::iter::repeat_n(pad_id, pad))
                        .collect(),
                    std::iter::repeat_n(1, r.len())
                        .chain(std::iter::repeat_n(0, pad))
                        .collect(),
                )
            };
            ids.extend(ids_row);
            mask.extend(mask_row);
        }
        Ok(Input {
            ids: Some(Tensor::from_vec(ids, (rows.len(), len), device)?),
            embeds: None,
            attention_mask: Some(Tensor::from_vec(mask, (rows.len(), len), device)?),
            position_ids: None,
        })
    }

    pub fn with_mask(mut self, mask: Tensor) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// (batch, seq) of the batch.
    pub fn batch_seq(&self) -> Result<(usize, usize)> {
        if let Some(ids) = &self.ids {
            let (b, s) = ids
                .dims2()
                .map_err(|_| invalid!("input ids must be (batch, seq), got {:?}", ids.dims()))?;
            return Ok((b, s));
        }
        if let Some(e) = &self.embeds {
            return match e.dims() {
                [b, s, _] => Ok((*b, *s)),
                [b, _] => Ok((*b, 1)),
                d => Err(invalid!(
                    "input embeddings must be (batch, seq, dim), got {d:?}"
                )),
            };
        }
        Err(invalid!("input has neither token ids nor embeddings"))
    }

    /// The mask as f32 (batch, past + seq), checked against the batch shape. With `past`
    /// cached positions the mask covers them too, as in Hugging Face.
    pub(crate) fn mask_f32(&self, past: usize) -> Result<Option<Tensor>> {
        let (b, s) = self.batch_seq()?;
        let s = s + past;
        match &self.attention_mask {
            None => Ok(None),
            Some(m) => {
                if m.dims() != [b, s] {
                    return Err(invalid!(
                        "attention_mask has shape {:?}, but the input is ({b}, {s})",
                        m.dims()
                    ));
                }
                Ok(Some(m.to_dtype(DType::F32)?))
            }
        }
    }

    /// Position ids (batch, seq) as u32, following the rule on `position_ids`; after `past`
    /// cached positions they continue where those stopped.
    pub(crate) fn positions(&self, device: &Device, past: usize) -> Result<Tensor> {
        let (b, s) = self.batch_seq()?;
        if let Some(p) = &self.position_ids {
            if p.dims() != [b, s] {
                return Err(invalid!(
                    "position_ids has shape {:?}, but the input is ({b}, {s})",
                    p.dims()
                ));
            }
            return Ok(p.to_dtype(DType::U32)?);
        }
        match &self.attention_mask {
            None => Ok(Tensor::arange(past as u32, (past + s) as u32, device)?
                .unsqueeze(0)?
                .repeat((b, 1))?),
            Some(m) => {
                if m.dims() != [b, past + s] {
                    return Err(invalid!(
                        "attention_mask has shape {:?}, but the input is ({b}, {})",
                        m.dims(),
                        past + s
                    ));
                }
                let mask: Vec<Vec<u32>> = m.to_dtype(DType::U32)?.to_vec2()?;
                let mut out = Vec::with_capacity(b * s);
                for row in mask {
                    let mut seen = 0u32;
                    for (j, v) in row.into_iter().enumerate() {
                        let p = if v != 0 {
                            seen += 1;
                            seen - 1
                        } else {
                            1
                        };
                        if j >= past {
                            out.push(p);
                        }
                    }
                }
                Ok(Tensor::from_vec(out, (b, s), device)?)
            }
        }
    }

    /// For each row, the index of its last real token (the last position with mask 1).
    pub fn last_positions(&self) -> Result<Vec<usize>> {
        let (b, s) = self.batch_seq()?;
        match &self.attention_mask {
            None => Ok(vec![s - 1; b]),
            Some(m) => {
                let mask: Vec<Vec<u32>> = m.to_dtype(DType::U32)?.to_vec2()?;
                Ok(mask
                    .iter()
                    .map(|row| row.iter().rposition(|&v| v != 0).unwrap_or(s - 1))
                    .collect())
            }
        }
    }
}

/// Which positions get logits. Computing the LM head only where asked saves most of its cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LogitPositions {
    /// Every position: logits (batch, seq, vocab).
    #[default]
    All,
    /// The last real token of each row: (batch, 1, vocab).
    Last,
    /// These positions of every row: (batch, n, vocab).
    At(Vec<usize>),
    /// No LM head at all.
    None,
}

#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    pub logits: LogitPositions,
    /// Stop after this layer's block (no final norm, no head); source runs use it.
    pub stop_after_layer: Option<usize>,
    /// Use only ops with a backward pass (candle's fused softmax and norms have none), so
    /// gradients reach trainable interventions. Slower; training turns it on.
    pub differentiable: bool,
}

#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// (batch, n_positions, vocab) or (batch, classes) for classifiers.
    pub logits: Option<Tensor>,
    /// The final hidden state after the last norm (batch, seq, hidden); for a stopped forward,
    /// the residual stream after `stop_after_layer`.
    pub hidden: Tensor,
}
