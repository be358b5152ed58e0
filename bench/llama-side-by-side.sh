#!/usr/bin/env bash
# tquant against llama.cpp on the same weights: a DeepSeek-V2-Lite-shaped checkpoint cut to
# 6 layers (hidden 2048, 64 routed experts of width 1408, 2 shared, top-6, kv_lora_rank 512,
# vocabulary 102400) of generated bf16 weights, 512-token prompt, 64 generated tokens, medians
# of 3, at 1 and 2 threads.
#
#   bench/llama-side-by-side.sh LLAMA_BIN WORK_DIR
#
# LLAMA_BIN holds llama.cpp's llama-quantize and llama-bench (a Release build of the source
# in the llama-cpp-python sdist: cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build
# build). WORK_DIR takes about 14 GB. Run it by hand on an otherwise idle machine; it is not
# part of the tests. llama.cpp's files come from its own llama-quantize, fed a BF16 GGUF that
# tquant writes (`--layout gguf --exclude '*'` keeps every tensor in its own dtype).
set -euo pipefail
LLAMA=${1:?usage: $0 LLAMA_BIN WORK_DIR}
WORK=${2:?usage: $0 LLAMA_BIN WORK_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TQ=$TARGET/release/tquant
mkdir -p "$WORK"

(cd "$ROOT" && cargo build --release --bin tquant &&
    cargo build --release -p tquant-bench --example v2_lite_checkpoint)
HF=$WORK/hf
[ -f "$HF/model.safetensors" ] || "$TARGET/release/examples/v2_lite_checkpoint" "$HF"
TOK=$WORK/tokenizer
mkdir -p "$TOK"
gunzip -c "$ROOT/tests/data/tokenizers/deepseek-v2/tokenizer.json.gz" >"$TOK/tokenizer.json"
cp "$ROOT/tests/data/tokenizers/deepseek-v2/tokenizer_config.json" "$TOK/"

[ -f "$WORK/bf16.gguf" ] ||
    "$TQ" convert "$HF" -o "$WORK/bf16.gguf" --layout gguf --exclude '*' --tokenizer "$TOK"
for t in IQ4_NL Q4_K_M; do
    [ -f "$WORK/$t.gguf" ] || "$LLAMA/llama-quantize" "$WORK/bf16.gguf" "$WORK/$t.gguf" "$t" 2
done
[ -d "$WORK/tquant-default" ] || "$TQ" convert "$HF" -o "$WORK/tquant-default"
[ -d "$WORK/tquant-nf4" ] || "$TQ" convert "$HF" -o "$WORK/tquant-nf4" --format nf4 --block 32

PROMPT=$(seq 1000 1511 | paste -sd, -)
echo "## sizes"
ls -l "$WORK"/IQ4_NL.gguf "$WORK"/Q4_K_M.gguf
du -b -s "$WORK"/tquant-default "$WORK"/tquant-nf4
for threads in 1 2; do
    echo "## llama.cpp, $threads thread(s)"
    "$LLAMA/llama-bench" -m "$WORK/IQ4_NL.gguf" -p 512 -n 64 -t "$threads" -r 3 -o md
    # Q4_K_M's repacked path stops on this model.
    "$LLAMA/llama-bench" -m "$WORK/Q4_K_M.gguf" --repack 0 -p 512 -n 64 -t "$threads" -r 3 -o md
    for model in tquant-default tquant-nf4; do
        for mode in --exact --fast; do
            echo "## $model $mode, $threads thread(s), 3 runs"
            for _ in 1 2 3; do
                "$TQ" run "$WORK/$model" --prompt-tokens "$PROMPT" --max-tokens 64 \
                    --ignore-eos --threads "$threads" $mode 2>&1 >/dev/null | grep -E 'prefill'
            done
        done
    done
done
