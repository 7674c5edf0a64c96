#!/usr/bin/env bash
# The accelerator benchmark: `sftc bench` on a ~1B-parameter Llama-shaped model (Llama 3.2 1B's
# shape: 16 layers, dim 2048, 32/8 heads, ffn 8192, vocab 128,256) in bfloat16 on every local
# GPU/TPU, printing tokens/s, MFU and peak device memory, for each remat setting. One prepared
# script, so that a session lent a GPU machine runs it in one call:
#
#   bash bench/accelerator.sh                 # installs sftc (with jax[cuda12] on NVIDIA) if needed
#   SFTC_BENCH_SMALL=1 bash bench/accelerator.sh   # a 2-layer, dim-256 stand-in: proves the script on a CPU
#
# Options by environment: SFTC_BENCH_BATCH (default 16), SFTC_BENCH_SEQ (2048), SFTC_BENCH_STEPS (10).
# Record the figures in bench/README.md ("Accelerators").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/sftc ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -e .
  if command -v nvidia-smi >/dev/null 2>&1; then .venv/bin/pip install -q "jax[cuda12]==$(.venv/bin/python -c 'import jax; print(jax.__version__)')"; fi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -n "${SFTC_BENCH_SMALL:-}" ]; then
  shape="layers = 2, dim = 256, heads = 4, kv_heads = 2, ffn = 688, vocab = 1024"
  batch="${SFTC_BENCH_BATCH:-4}"; seq="${SFTC_BENCH_SEQ:-128}"; steps="${SFTC_BENCH_STEPS:-3}"
else
  shape="layers = 16, dim = 2048, heads = 32, kv_heads = 8, ffn = 8192, vocab = 128256, rope_theta = 500000, tie_embeddings = on"
  batch="${SFTC_BENCH_BATCH:-16}"; seq="${SFTC_BENCH_SEQ:-2048}"; steps="${SFTC_BENCH_STEPS:-10}"
fi
# `sftc bench` times synthetic tokens; the spec still names a tokenizer and a data file to be checked.
.venv/bin/python - "$work" <<'EOF'
import json, sys
from pathlib import Path
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
work = Path(sys.argv[1])
vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "hello": 4, "world": 5}
tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                        unk_token="<unk>").save_pretrained(str(work / "tok"))
(work / "rows.jsonl").write_text(json.dumps({"prompt": "hello", "completion": "world"}) + "\n")
EOF
for remat in off dots full; do
  cat > "$work/bench.sft" <<EOF
sft "accelerator-bench"
model {
    base      = init llama($shape)
    tokenizer = hf("tok")
    dtype     = bfloat16
}
data rows = jsonl("rows.jsonl")
train {
    steps     = 100
    batch     = $batch
    seq_len   = $seq
    remat     = $remat
    optimizer = adamw(lr = 1e-4, weight_decay = 0.01)
}
output {
    dir = "runs/{name}"
}
EOF
  echo "== remat = $remat, batch $batch x $seq, bfloat16"
  .venv/bin/sftc bench "$work/bench.sft" --steps "$steps" || echo "(remat = $remat did not run: see above)"
done
