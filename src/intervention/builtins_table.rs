//! The built-in intervention types, registered in one table: pyvene's class name, vene's short
//! alias, the constructor and the state-dict names the type reads and writes. `build` looks a
//! name up here, then among the types plugins registered (`"<plugin>/<type>"`).

use super::autoencoder::{AutoencoderIntervention, JumpReluAutoencoderIntervention};
use super::builtin::{CollectIntervention, Op, SwapIntervention};
use super::noise::NoiseIntervention;
use super::pca::PcaRotatedSpaceIntervention;
use super::registry;
use super::rotation::{Rotation, Variant};
use super::sigmoid_mask::SigmoidMaskIntervention;
use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;

/// One built-in type.
pub struct BuiltinType {
    /// pyvene's class name, e.g. `VanillaIntervention`.
    pub class: &'static str,
    /// vene's short name, e.g. `vanilla`.
    pub alias: &'static str,
    pub build: fn(&Spec) -> Result<Box<dyn Intervention>>,
    /// The type's own state-dict names, after the buffers every type has (`SHARED_STATE`).
    pub state: &'static [&'static str],
}

/// Buffers pyvene's base `Intervention` gives every type built with an `embed_dim`, and the
/// constant source (`source_representation`, kept by the intervenable model, see
/// `IntervenableModel::load_state`).
pub const SHARED_STATE: &[&str] = &["embed_dim", "interchange_dim", "source_representation"];

const ROTATE_LAYER: &[&str] = &[
    "rotate_layer.parametrizations.weight.original",
    "rotate_layer.parametrizations.weight.0.base",
    // vene's extension: the effective weight, converted to original + base.
    "rotate_layer.weight",
];

/// Every built-in type, in pyvene's order.
pub const BUILTIN_TYPES: &[BuiltinType] = &[
    BuiltinType {
        class: "VanillaIntervention",
        alias: "vanilla",
        build: |s| Ok(Box::new(SwapIntervention::new(s, Op::Swap)?)),
        state: &[],
    },
    BuiltinType {
        class: "AdditionIntervention",
        alias: "addition",
        build: |s| Ok(Box::new(SwapIntervention::new(s, Op::Add)?)),
        state: &[],
    },
    BuiltinType {
        class: "SubtractionIntervention",
        alias: "subtraction",
        build: |s| Ok(Box::new(SwapIntervention::new(s, Op::Subtract)?)),
        state: &[],
    },
    BuiltinType {
        class: "ZeroIntervention",
        alias: "zero",
        build: |s| Ok(Box::new(SwapIntervention::new(s, Op::Zero)?)),
        state: &[],
    },
    BuiltinType {
        class: "CollectIntervention",
        alias: "collect",
        build: |s| Ok(Box::new(CollectIntervention::new(s)?)),
        state: &[],
    },
    BuiltinType {
        class: "SkipIntervention",
        alias: "skip",
        build: |s| Ok(Box::new(SwapIntervention::new(s, Op::Skip)?)),
        state: &[],
    },
    BuiltinType {
        class: "NoiseIntervention",
        alias: "noise",
        build: |s| Ok(Box::new(NoiseIntervention::new(sized(s)?)?)),
        state: &["noise", "noise_level"],
    },
    BuiltinType {
        class: "SigmoidMaskIntervention",
        alias: "sigmoid_mask",
        build: |s| Ok(Box::new(SigmoidMaskIntervention::new(sized(s)?)?)),
        state: &["mask", "temperature"],
    },
    BuiltinType {
        class: "RotatedSpaceIntervention",
        alias: "rotated_space",
        build: |s| Ok(Box::new(Rotation::new(sized(s)?, Variant::Rotated)?)),
        state: ROTATE_LAYER,
    },
    BuiltinType {
        class: "LowRankRotatedSpaceIntervention",
        alias: "low_rank_rotated_space",
        build: |s| Ok(Box::new(Rotation::new(sized(s)?, Variant::LowRank)?)),
        state: ROTATE_LAYER,
    },
    BuiltinType {
        class: "BoundlessRotatedSpaceIntervention",
        alias: "boundless_rotated_space",
        build: |s| Ok(Box::new(Rotation::new(sized(s)?, Variant::Boundless)?)),
        state: &[
            "rotate_layer.parametrizations.weight.original",
            "rotate_layer.parametrizations.weight.0.base",
            "rotate_layer.weight",
            "intervention_boundaries",
            "temperature",
            "intervention_population",
        ],
    },
    BuiltinType {
        class: "SigmoidMaskRotatedSpaceIntervention",
        alias: "sigmoid_mask_rotated_space",
        build: |s| Ok(Box::new(Rotation::new(sized(s)?, Variant::SigmoidMask)?)),
        state: &[
            "rotate_layer.parametrizations.weight.original",
            "rotate_layer.parametrizations.weight.0.base",
            "rotate_layer.weight",
            "masks",
            "temperature",
        ],
    },
    BuiltinType {
        class: "PCARotatedSpaceIntervention",
        alias: "pca_rotated_space",
        build: |s| Ok(Box::new(PcaRotatedSpaceIntervention::new(sized(s)?)?)),
        state: &["pca_components", "pca_mean", "pca_std"],
    },
    BuiltinType {
        class: "AutoencoderIntervention",
        alias: "autoencoder",
        build: |s| Ok(Box::new(AutoencoderIntervention::new(sized(s)?)?)),
        state: &[
            "autoencoder.encoder.0.weight",
            "autoencoder.encoder.0.bias",
            "autoencoder.decoder.0.weight",
            "autoencoder.decoder.0.bias",
        ],
    },
    BuiltinType {
        class: "JumpReLUAutoencoderIntervention",
        alias: "jump_relu_autoencoder",
        build: |s| Ok(Box::new(JumpReluAutoencoderIntervention::new(sized(s)?)?)),
        state: &["W_enc", "W_dec", "threshold", "b_enc", "b_dec"],
    },
];

/// The parametrised types size their parameters by `embed_dim`.
fn sized<'s, 'a>(spec: &'s Spec<'a>) -> Result<&'s Spec<'a>> {
    if spec.embed_dim == 0 {
        return Err(invalid!("{} needs embed_dim > 0", spec.rep.type_name()));
    }
    Ok(spec)
}

/// The table entry for a class name or alias.
pub fn find(name: &str) -> Option<&'static BuiltinType> {
    BUILTIN_TYPES
        .iter()
        .find(|t| t.class == name || t.alias == name)
}

/// The canonical class name for a type name or alias.
pub fn canonical_type(name: &str) -> Option<&'static str> {
    find(name).map(|t| t.class)
}

/// Every state-dict name a built-in type takes (the shared buffers first), by class name.
pub fn state_names(class: &str) -> Option<Vec<&'static str>> {
    find(class).map(|t| SHARED_STATE.iter().chain(t.state).copied().collect())
}

/// Builds the intervention for a representation: a built-in type (class name or alias) or a
/// plugin-registered `"<plugin>/<type>"`.
pub fn build(spec: &Spec) -> Result<Box<dyn Intervention>> {
    let name = spec.rep.type_name();
    if name == crate::sae::intervention::TYPE_NAME {
        return crate::sae::intervention::build(spec);
    }
    if name.contains('/') {
        return registry::build(name, spec);
    }
    let t = find(name).ok_or_else(|| {
        let names: Vec<&str> = BUILTIN_TYPES.iter().map(|t| t.class).collect();
        invalid!(
            "unknown intervention type '{name}'; built-in types are: {} (or \"<plugin>/<type>\" for plugins)",
            names.join(", ")
        )
    })?;
    (t.build)(spec)
}
