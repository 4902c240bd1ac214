#!/usr/bin/env bash
# End to end on SmolLM2-135M-Instruct (the default model, `vene fetch`): train a standard SAE
# (ReLU, L1) on the residual stream after block 15 over the repository's own prose with vene's
# training code, report held-out explained variance / L0 / dead features, list the features of
# a prompt (table + PNG), steer generation with the most active feature of " Paris", and rank
# features by their ablation effect on the logit of " Paris".
#
#   tests/bench/sae_smollm2.sh            # defaults: 1024 features, 1500 steps of 256 tokens
#   STEPS=300 D_SAE=512 tests/bench/sae_smollm2.sh   # a quicker run
# Outputs go to $OUT (default /tmp/vene-sae-smollm2): sae/ (SAELens folder), train.txt,
# features.txt, features.png, steer.txt, ablate.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENE=${VENE:-./target/release/vene}
OUT=${OUT:-/tmp/vene-sae-smollm2}
STEPS=${STEPS:-1500}
D_SAE=${D_SAE:-1024}
L1=${L1:-5}
HOOK=${HOOK:-blocks.15.hook_resid_post}
mkdir -p "$OUT"
[ -x "$VENE" ] || cargo build --release --bin vene

echo "== train ($D_SAE features, $STEPS steps, l1 $L1, at $HOOK)"
"$VENE" sae train --hook "$HOOK" --text README.md --text plugins/README.md \
  --text tests/bench/RESULTS.md --text tests/bench/TRAIN.md --text tests/bench/LLAMACPP.md \
  --d-sae "$D_SAE" --steps "$STEPS" --batch 256 --l1 "$L1" --out "$OUT/sae" | tee "$OUT/train.txt"

echo "== inspect"
"$VENE" sae inspect "$OUT/sae" --check

PROMPT="The capital of France is Paris, and the capital of Italy is Rome."
echo "== features: $PROMPT"
"$VENE" sae features "$OUT/sae" --prompt "$PROMPT" --top 5 --png "$OUT/features.png" | tee "$OUT/features.txt"

# The most active feature on the token " Paris", and 10x its activation as the coefficient.
read -r FEATURE ACT < <("$VENE" sae features "$OUT/sae" --prompt "$PROMPT" --top 1 --json |
  jq -r '.tokens[] | select(.token == " Paris") | .features[0] | "\(.[0]) \(.[1])"')
COEFF=$(python3 -c "print(round(10 * $ACT, 2))")
echo "== steer with feature $FEATURE (activation $ACT on \" Paris\"), coeff $COEFF"
"$VENE" sae steer "$OUT/sae" --feature "$FEATURE" --coeff "$COEFF" --chat \
  --prompt "Tell me about your weekend." --max-new-tokens 40 | tee "$OUT/steer.txt"

echo "== ablation effects on the logit of \" Paris\""
"$VENE" sae ablate "$OUT/sae" --prompt "The capital of France is" --target " Paris" \
  --rows 12 | tee "$OUT/ablate.txt"
