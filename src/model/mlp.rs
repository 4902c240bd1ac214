//! pyvene's MLP classifier. Stub until the MLP work lands.

use super::{Architecture, ForwardOptions, ForwardOutput, Hooks, Input, ModelInfo};
use crate::error::Result;
use crate::site::SiteInfo;
use candle_nn::VarBuilder;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct MlpConfig {}

pub struct MlpClassifier {}

impl MlpClassifier {
    pub fn load(_cfg: MlpConfig, _vb: VarBuilder) -> Result<Self> {
        Err(crate::config_err!("the MLP classifier is not implemented yet"))
    }
}

impl Architecture for MlpClassifier {
    fn forward(&self, _: &Input, _: &mut dyn Hooks, _: &ForwardOptions) -> Result<ForwardOutput> {
        Err(crate::config_err!("the MLP classifier is not implemented yet"))
    }
    fn sites(&self) -> Vec<SiteInfo> {
        vec![]
    }
    fn info(&self) -> ModelInfo {
        unimplemented!()
    }
}
