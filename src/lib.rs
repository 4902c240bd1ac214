//! vene: causal interventions on neural networks, as an embeddable engine.
//!
//! The engine loads real model files into our own architectures ([`model`]), each of which
//! calls a hook at every named intervention site ([`site`]).

pub mod analysis;
pub mod capi;
pub mod causal_model;
pub mod config;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod intervenable;
pub mod intervention;
pub mod knob;
pub mod location;
pub mod model;
pub mod plugin;
pub mod request;
pub mod sae;
pub mod site;
pub mod steering;
pub mod subspace;
pub mod time_steps;
pub mod train;

pub use error::{Error, Result};
pub use model::{
    ForwardOptions, ForwardOutput, HeadKind, Hooks, Input, LoadOptions, LogitPositions, Model,
    ModelInfo, NoHooks,
};
pub use site::{Component, Site, SiteInfo};
