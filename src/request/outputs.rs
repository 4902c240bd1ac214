//! The names of a run's output tensors: the one place `vene run` files, the C API's results
//! and the bindings get them from.

use crate::intervenable::{Generation, Outcome};
use candle_core::Tensor;

/// Logits of the run with interventions: (batch, positions, vocab).
pub const INTERVENED_LOGITS: &str = "intervened.logits";
/// The final hidden state of the run with interventions: (batch, seq, hidden).
pub const INTERVENED_HIDDEN: &str = "intervened.last_hidden_state";
/// Logits of the base run without interventions (with `output_original_output`).
pub const ORIGINAL_LOGITS: &str = "original.logits";
/// Prompt and new ids, (batch, prompt + new), as i64.
pub const GENERATED_IDS: &str = "generated.ids";
/// The same generation without interventions (with `output_original_output`).
pub const ORIGINAL_GENERATED_IDS: &str = "original.generated.ids";

/// The name of collect intervention `i`'s output (in representation order).
pub fn collected(i: usize) -> String {
    format!("collected.{i}")
}

/// A forward pass's outputs: original.logits, intervened.logits,
/// intervened.last_hidden_state, collected.N.
pub fn forward(out: Outcome) -> Vec<(String, Tensor)> {
    let mut v = Vec::new();
    if let Some(l) = out.original.and_then(|o| o.logits) {
        v.push((ORIGINAL_LOGITS.to_string(), l));
    }
    if let Some(l) = out.intervened.logits {
        v.push((INTERVENED_LOGITS.to_string(), l));
    }
    v.push((INTERVENED_HIDDEN.to_string(), out.intervened.hidden));
    push_collected(&mut v, out.collected);
    v
}

/// A generation's outputs: generated.ids, original.generated.ids, collected.N.
pub fn generation(out: Generation) -> Vec<(String, Tensor)> {
    let mut v = vec![(GENERATED_IDS.to_string(), out.ids)];
    if let Some(o) = out.original_ids {
        v.push((ORIGINAL_GENERATED_IDS.to_string(), o));
    }
    push_collected(&mut v, out.collected);
    v
}

fn push_collected(v: &mut Vec<(String, Tensor)>, collected: Vec<Tensor>) {
    v.extend(
        collected
            .into_iter()
            .enumerate()
            .map(|(i, c)| (self::collected(i), c)),
    );
}
