//! Intervention sites: the component names pyvene defines, and what a model reports about them.

use crate::error::Result;
use crate::invalid;
use serde::{Deserialize, Serialize};

/// A named place inside a transformer block (or a GRU cell) where activations can be read or
/// replaced. The string forms are exactly pyvene's component names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    BlockInput,
    BlockOutput,
    MlpInput,
    MlpActivation,
    MlpOutput,
    AttentionInput,
    AttentionOutput,
    AttentionValueOutput,
    HeadAttentionValueOutput,
    AttentionWeight,
    QueryOutput,
    KeyOutput,
    ValueOutput,
    HeadQueryOutput,
    HeadKeyOutput,
    HeadValueOutput,
    // pyvene's GRU cell (`GRUCell`): input and output of the cell, the two projections and
    // their reset/update/new thirds, and the three gate activations.
    CellInput,
    CellOutput,
    X2hOutput,
    H2hOutput,
    ResetX2hOutput,
    UpdateX2hOutput,
    NewX2hOutput,
    ResetH2hOutput,
    UpdateH2hOutput,
    NewH2hOutput,
    ResetGateInput,
    UpdateGateInput,
    NewGateInput,
    ResetGateOutput,
    UpdateGateOutput,
    NewGateOutput,
}

impl Component {
    /// The 16 components of a transformer block.
    pub const ALL: [Component; 16] = [
        Component::BlockInput,
        Component::BlockOutput,
        Component::MlpInput,
        Component::MlpActivation,
        Component::MlpOutput,
        Component::AttentionInput,
        Component::AttentionOutput,
        Component::AttentionValueOutput,
        Component::HeadAttentionValueOutput,
        Component::AttentionWeight,
        Component::QueryOutput,
        Component::KeyOutput,
        Component::ValueOutput,
        Component::HeadQueryOutput,
        Component::HeadKeyOutput,
        Component::HeadValueOutput,
    ];

    /// The 16 components of pyvene's GRU cell.
    pub const GRU: [Component; 16] = [
        Component::CellInput,
        Component::CellOutput,
        Component::X2hOutput,
        Component::H2hOutput,
        Component::ResetX2hOutput,
        Component::UpdateX2hOutput,
        Component::NewX2hOutput,
        Component::ResetH2hOutput,
        Component::UpdateH2hOutput,
        Component::NewH2hOutput,
        Component::ResetGateInput,
        Component::UpdateGateInput,
        Component::NewGateInput,
        Component::ResetGateOutput,
        Component::UpdateGateOutput,
        Component::NewGateOutput,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::BlockInput => "block_input",
            Component::BlockOutput => "block_output",
            Component::MlpInput => "mlp_input",
            Component::MlpActivation => "mlp_activation",
            Component::MlpOutput => "mlp_output",
            Component::AttentionInput => "attention_input",
            Component::AttentionOutput => "attention_output",
            Component::AttentionValueOutput => "attention_value_output",
            Component::HeadAttentionValueOutput => "head_attention_value_output",
            Component::AttentionWeight => "attention_weight",
            Component::QueryOutput => "query_output",
            Component::KeyOutput => "key_output",
            Component::ValueOutput => "value_output",
            Component::HeadQueryOutput => "head_query_output",
            Component::HeadKeyOutput => "head_key_output",
            Component::HeadValueOutput => "head_value_output",
            Component::CellInput => "cell_input",
            Component::CellOutput => "cell_output",
            Component::X2hOutput => "x2h_output",
            Component::H2hOutput => "h2h_output",
            Component::ResetX2hOutput => "reset_x2h_output",
            Component::UpdateX2hOutput => "update_x2h_output",
            Component::NewX2hOutput => "new_x2h_output",
            Component::ResetH2hOutput => "reset_h2h_output",
            Component::UpdateH2hOutput => "update_h2h_output",
            Component::NewH2hOutput => "new_h2h_output",
            Component::ResetGateInput => "reset_gate_input",
            Component::UpdateGateInput => "update_gate_input",
            Component::NewGateInput => "new_gate_input",
            Component::ResetGateOutput => "reset_gate_output",
            Component::UpdateGateOutput => "update_gate_output",
            Component::NewGateOutput => "new_gate_output",
        }
    }

    /// Parses a pyvene component name; the error lists every valid name.
    pub fn parse(name: &str) -> Result<Component> {
        Component::ALL
            .iter()
            .chain(Component::GRU.iter())
            .copied()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let names = |cs: &[Component]| -> String {
                    cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                };
                invalid!(
                    "unknown component '{name}'; valid components are: {} (GRU models: {})",
                    names(&Component::ALL),
                    names(&Component::GRU)
                )
            })
    }

    /// A component of pyvene's GRU cell (these take unit "t").
    pub fn is_gru(self) -> bool {
        Component::GRU.contains(&self)
    }

    /// Head components carry one slice per attention head: (batch, heads, seq, head_dim).
    pub fn is_head(self) -> bool {
        matches!(
            self,
            Component::HeadAttentionValueOutput
                | Component::HeadQueryOutput
                | Component::HeadKeyOutput
                | Component::HeadValueOutput
        )
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One hook point: a component in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub layer: usize,
    pub component: Component,
}

impl Site {
    pub fn new(layer: usize, component: Component) -> Self {
        Site { layer, component }
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "layer {} {}", self.layer, self.component)
    }
}

/// What a model says about one component: the size of the unit pyvene intervenes on, and the
/// shape of the tensor the hook sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteInfo {
    pub component: Component,
    /// pyvene's dimension for this component (hidden size, head size, ...). For
    /// `attention_weight` it is the key length, which depends on the input, so this is
    /// `max_position_embeddings` as in pyvene.
    pub dim: usize,
    /// Number of heads for head components and `attention_weight`, else `None`.
    pub heads: Option<usize>,
    /// Layout the hook sees, e.g. "(batch, seq, 576)" or "(batch, 9, seq, 64)".
    pub shape: String,
    /// Where the tensor comes from, for `vene info`.
    pub meaning: &'static str,
}

/// Shape of a decoder-only transformer, enough to describe all of its sites.
pub struct DecoderShape {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub max_positions: usize,
}

/// The 16 pyvene components of a decoder block with their dimensions and layouts.
pub fn decoder_sites(s: &DecoderShape) -> Vec<SiteInfo> {
    use Component::*;
    let q_width = s.heads * s.head_dim;
    let kv_width = s.kv_heads * s.head_dim;
    let flat = |c, dim, meaning| SiteInfo {
        component: c,
        dim,
        heads: None,
        shape: format!("(batch, seq, {dim})"),
        meaning,
    };
    let head = |c, heads: usize, meaning| SiteInfo {
        component: c,
        dim: s.head_dim,
        heads: Some(heads),
        shape: format!("(batch, {heads}, seq, {})", s.head_dim),
        meaning,
    };
    vec![
        flat(BlockInput, s.hidden, "residual stream entering the block"),
        flat(BlockOutput, s.hidden, "residual stream leaving the block"),
        flat(MlpInput, s.hidden, "normalized input of the MLP"),
        flat(
            MlpActivation,
            s.intermediate,
            "MLP activation (gate activation for gated MLPs)",
        ),
        flat(MlpOutput, s.hidden, "MLP output before the residual add"),
        flat(AttentionInput, s.hidden, "normalized input of attention"),
        flat(
            AttentionOutput,
            s.hidden,
            "attention output after the output projection",
        ),
        flat(
            AttentionValueOutput,
            q_width,
            "merged heads before the output projection",
        ),
        head(
            HeadAttentionValueOutput,
            s.heads,
            "per-head attention values",
        ),
        SiteInfo {
            component: AttentionWeight,
            dim: s.max_positions,
            heads: Some(s.heads),
            shape: format!("(batch, {}, seq, seq)", s.heads),
            meaning: "attention probabilities after softmax",
        },
        flat(QueryOutput, q_width, "query projection (before rotary)"),
        flat(KeyOutput, kv_width, "key projection (before rotary)"),
        flat(ValueOutput, kv_width, "value projection"),
        head(HeadQueryOutput, s.heads, "per-head queries (before rotary)"),
        head(HeadKeyOutput, s.kv_heads, "per-head keys (before rotary)"),
        head(HeadValueOutput, s.kv_heads, "per-head values"),
    ]
}
