//! Dispatch for the parametrised built-ins (noise, sigmoid masks, rotations, PCA, autoencoders).

use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;

pub fn build(canonical: &str, _spec: &Spec) -> Result<Box<dyn Intervention>> {
    Err(invalid!("{canonical} is not implemented yet"))
}
