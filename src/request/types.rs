//! The typed request every front end runs.

use super::outputs;
use crate::error::Result;
use crate::generate::GenerateOptions;
use crate::intervenable::{IntervenableModel, Request};
use candle_core::Tensor;

/// One run of an intervenable model: what a `vene run` file's body, the C API's JSON and typed
/// entry points and the bindings all become. Parsers check everything they can before a run,
/// naming the field at fault.
///
/// Defaults (leaving a field out, `null`, a zeroed C struct, a Go zero value):
/// - `sources`: none; `unit_locations`: whole tensors (during generation: position 0 of each
///   step's input, as pyvene); `subspaces`: the whole feature axis (or `interchange_dim`);
///   `source_representations`: none; `output_original_output`: false; `logits`: every
///   position.
/// - `generate` absent: one forward pass. Present: greedy decoding of
///   [`crate::generate::DEFAULT_MAX_NEW_TOKENS`] (32) new tokens per row, stopping at the
///   end-of-sequence token (`ignore_eos: true` goes on) or any of `stop_ids`, interventions on
///   every decoding step and not the prompt (`intervene_on_prompt: true`: the prompt only).
///   Sampling (`do_sample: true`, or a C/Go temperature above 0) uses temperature 1.0 unless
///   given, no top-k or top-p filtering unless given, seed [`crate::generate::DEFAULT_SEED`]
///   (0). `top_p` must be in (0, 1], `top_k` at least 1, and both need sampling.
/// - A config with no representations (or no config at all in a `vene run` file) is the plain
///   model: the run equals `Model::forward` and plain generation exactly.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Inputs, unit locations, subspaces, source representations, logit positions and
    /// whether to also run the base without interventions.
    pub forward: Request,
    /// Decode instead of one forward pass.
    pub generate: Option<Generate>,
}

/// The generation part of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generate {
    pub options: GenerateOptions,
    /// Intervene on the prompt only (pyvene's `intervene_on_prompt=True`), instead of on every
    /// decoding step.
    pub intervene_on_prompt: bool,
}

impl RunRequest {
    /// Runs the request and returns its output tensors under their names (see
    /// [`outputs`]), in a stable order.
    pub fn run(&self, iv: &IntervenableModel) -> Result<Vec<(String, Tensor)>> {
        match &self.generate {
            Some(g) => {
                let out = iv.generate(&self.forward, &g.options, g.intervene_on_prompt)?;
                Ok(outputs::generation(out))
            }
            None => Ok(outputs::forward(iv.forward(&self.forward)?)),
        }
    }
}
