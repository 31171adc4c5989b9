#!/bin/bash
# mount-lora-torch.sh - LoRA through the torch source: PEFT adapters saved as
# adapter_model.bin, and torch checkpoints that carry their own LoRA pairs.
#
# Fixtures are written by real torch.save (tests/gen_lora_torch.py, Debian's
# python3-torch); the oracle is tests/check_lora.py (numpy's W + s * B @ A
# in float64, 16-bit views within 1 ulp, tp ranks the split of hf/) run on
# the safetensors twin of the adapter, from which the .bin was saved:
#   bin        tiny LLaMA + adapter_model.bin (zip, torch >= 1.6) on
#              q,k,v,o,gate,up,down, r=8, alpha=16, rank/alpha patterns,
#              modules_to_save lm_head: hf/, tp-2, hf@bf16 against numpy
#   stacked    plus a second .bin adapter (bf16, rslora, ".default." names,
#              lora_embedding_A/B on embed_tokens): -o lora=A,lora=B
#   legacy     the first adapter in torch's legacy format
#   twin       the same adapter as .safetensors and .bin: identical bytes in
#              every file of hf/, hf@bf16/ and tp-2/; with both files in the
#              directory, adapter_model.safetensors wins (as in PEFT)
#   hostile    an adapter_model.bin whose pickle calls os.system: refused,
#              naming the adapter file; not a torch file: refused too
#   pairs-bin  a pytorch_model.bin (tiny LLaMA) with X.main_weight.weight +
#              X.lora_A/B.weight under HF names (q_proj, down_proj,
#              embed_tokens), against numpy from its safetensors twin
#   ckpt       nanoGPT-LoRA ckpt.pt (GPT-2, X.main_weight.weight + lora_A/B
#              on c_attn, c_proj and wte, lora_alpha in model_args): hf/ holds
#              (W + s*B@A)^T under HF's Conv1D names
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init
"$PYTHON" -c 'import torch' 2>/dev/null || skip "$PYTHON cannot import torch (apt-get install python3-torch)"

GEN="$PYTHON $srcdir/tests/gen_lora.py"
TGEN="$PYTHON $srcdir/tests/gen_lora_torch.py"
check_lora() {
    note "check_lora.py $*"
    "$PYTHON" "$srcdir/tests/check_lora.py" "$@" || fail "check_lora.py $* failed"
}
# refused DIR 'EXPECTED LINE': `ckptfs inspect -o lora=DIR` fails with it.
refused() {
    local err rc=0
    err=$("$CKPTFS" inspect -o "lora=$1" "$TESTDIR/llama" 2>&1 >/dev/null) || rc=$?
    [ "$rc" -ne 0 ] || fail "$1: accepted"
    [ "$err" = "ckptfs: $2" ] || fail "$1: '$err', expected 'ckptfs: $2'"
    note "  refused: ${err#ckptfs: }"
}

gen_model tiny-llama "$TESTDIR/llama" >/dev/null
ALL=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
$GEN adapter "$TESTDIR/llama" "$TESTDIR/st" --targets $ALL --r 8 --alpha 16 \
    --rank-pattern '{"layers.1.self_attn.q_proj": 4}' --alpha-pattern '{"down_proj": 32}' --save lm_head
$TGEN bin "$TESTDIR/st" "$TESTDIR/bin"
$TGEN bin "$TESTDIR/st" "$TESTDIR/legacy" --legacy
mkdir "$TESTDIR/m"

note "=== bin"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/bin"
check_lora "$TESTDIR/llama" "$TESTDIR/m" --adapter "$TESTDIR/st" --tp 2
cmp "$TESTDIR/m/adapter/adapter_model.bin" "$TESTDIR/bin/adapter_model.bin" || fail "adapter/ does not hold the .bin"
mkdir "$TESTDIR/out-bin"
cp -r "$TESTDIR/m/hf" "$TESTDIR/m/hf@bf16" "$TESTDIR/m/tp-2" "$TESTDIR/out-bin/"
umount_ckptfs
"$CKPTFS" inspect -o "lora=$TESTDIR/bin" "$TESTDIR/llama" | grep -q "^lora: *14 modules merged into every view" ||
    fail "inspect does not count the 14 merged modules of the .bin adapter"

note "=== stacked"
$GEN adapter "$TESTDIR/llama" "$TESTDIR/st2" --targets q_proj,v_proj --r 4 --alpha 4 --rslora \
    --dtype BF16 --adapter-name default --seed 7 --embed model.embed_tokens
$TGEN bin "$TESTDIR/st2" "$TESTDIR/bin2"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/bin,lora=$TESTDIR/bin2"
check_lora "$TESTDIR/llama" "$TESTDIR/m" --adapter "$TESTDIR/st" --adapter "$TESTDIR/st2" --tp 2
umount_ckptfs

note "=== legacy"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/legacy"
diff -r "$TESTDIR/m/hf" "$TESTDIR/out-bin/hf" >/dev/null || fail "legacy .bin: hf/ differs from the zip .bin's"
umount_ckptfs
note "  legacy-format .bin == zip .bin"

note "=== twin"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/st"
for v in hf hf@bf16 tp-2; do
    diff -r "$TESTDIR/m/$v" "$TESTDIR/out-bin/$v" >/dev/null || fail "$v/: the .bin adapter and the .safetensors one differ"
done
umount_ckptfs
note "  hf/, hf@bf16/, tp-2/: .bin adapter == .safetensors adapter, byte for byte"
# Both files: the safetensors one is read. A .bin that would merge something
# else beside it proves it is not.
$GEN adapter "$TESTDIR/llama" "$TESTDIR/other" --targets q_proj --r 2 --alpha 4 --seed 9
mkdir "$TESTDIR/both"
cp "$TESTDIR/st/adapter_config.json" "$TESTDIR/st/adapter_model.safetensors" "$TESTDIR/both/"
$TGEN bin "$TESTDIR/other" "$TESTDIR/other-bin"
cp "$TESTDIR/other-bin/adapter_model.bin" "$TESTDIR/both/"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/both"
diff -r "$TESTDIR/m/hf" "$TESTDIR/out-bin/hf" >/dev/null || fail "with both files, the .bin was merged"
umount_ckptfs
note "  both files: adapter_model.safetensors wins"

note "=== hostile"
$TGEN hostile "$TESTDIR/st" "$TESTDIR/hostile"
refused "$TESTDIR/hostile" "$TESTDIR/hostile/adapter_model.bin: pickle refers to the global 'posix.system', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)"
mkdir "$TESTDIR/junk"
cp "$TESTDIR/st/adapter_config.json" "$TESTDIR/junk/"
printf 'not a pickle' >"$TESTDIR/junk/adapter_model.bin"
refused "$TESTDIR/junk" "$TESTDIR/junk/adapter_model.bin: not a torch.save file (neither a zip nor the legacy pickle format)"
mkdir "$TESTDIR/extra"
cp "$TESTDIR/bin/"* "$TESTDIR/extra/"
"$PYTHON" -c 'import sys, torch; torch.save({"x": torch.zeros(2)}, sys.argv[1])' "$TESTDIR/extra/other.pt"
refused "$TESTDIR/extra" "$TESTDIR/extra: unexpected other.pt beside adapter_model.bin"

note "=== pairs-bin"
$GEN pairs "$TESTDIR/llama" "$TESTDIR/pairs" --targets q_proj,down_proj --embed model.embed_tokens
$TGEN model "$TESTDIR/pairs" "$TESTDIR/pairs-bin"
mount_ckptfs "$TESTDIR/pairs-bin" "$TESTDIR/m"
check_lora "$TESTDIR/pairs" "$TESTDIR/m" --pairs --tp 2
umount_ckptfs

note "=== ckpt"
$TGEN ckpt "$TESTDIR/nanogpt-lora" --r 4 --alpha 8
mount_ckptfs "$TESTDIR/nanogpt-lora" "$TESTDIR/m"
"$PYTHON" "$srcdir/tests/gen_lora_torch.py" check-ckpt "$TESTDIR/nanogpt-lora" "$TESTDIR/m" || fail "ckpt: hf/ is not the merge"
ls "$TESTDIR/m/tensors" | grep -q "main_weight\|lora_[AB]" && fail "ckpt: tensors/ still shows the LoRA parts"
umount_ckptfs
"$CKPTFS" inspect "$TESTDIR/nanogpt-lora" | grep -q "^lora: *5 modules merged into every view" ||
    fail "inspect does not count the 5 pairs of ckpt.pt"
note "PASS"
