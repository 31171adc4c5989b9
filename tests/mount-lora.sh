#!/bin/bash
# mount-lora.sh - LoRA merged into every view (-o lora=, in-checkpoint pairs).
#
# Bases from examples/gen-model.py, adapters from tests/gen_lora.py (PEFT's
# file names and tensor names), and tests/check_lora.py as the oracle:
# numpy's W + s * B @ A in float64, each view within the rounding of one
# fp32 accumulation (1 ulp for 16-bit outputs; see check_lora.py), native/
# and tp-N ranks bit for bit the layout and split of the merged hf/.
#   llama     tiny LLaMA (GQA, bf16) + adapter on q,k,v,o,gate,up,down, r=8,
#             alpha=16, rank_pattern, alpha_pattern, modules_to_save lm_head;
#             adapter/ holds the adapter's files; tp-2 and tp-4
#   stacked   the same plus a second adapter (use_rslora, BF16, ".default."
#             names, lora_embedding_A/B on embed_tokens): -o lora=A,lora=B
#   save-only an adapter holding only modules_to_save (hf/ is not passed through)
#   scale     -o lora_scale=0.5 replaces every s
#   gpt2      GPT-2 (Conv1D [in, out]) + fan_in_fan_out adapter on c_attn,
#             c_fc, c_proj; gpt2-noprefix with PEFT's "transformer." names
#   pairs     a checkpoint with X.main_weight.weight + X.lora_A/B.weight
#             (nanoGPT-LoRA; a Linear and an Embedding) shown merged as X.weight
#   export    `ckptfs export BASE hf@bf16/ OUT -o lora=A` == the mount's hf@bf16/
#   cache     under the default policy, a second mount reads every merged
#             chunk back from the disk tier instead of computing it
#   bad       adapters refused with the exact line naming file, module, problem
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

GEN="$PYTHON $srcdir/tests/gen_lora.py"
check_lora() {
    note "check_lora.py $*"
    "$PYTHON" "$srcdir/tests/check_lora.py" "$@" || fail "check_lora.py $* failed"
}

gen_model tiny-llama "$TESTDIR/llama" >/dev/null
ALL=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
$GEN adapter "$TESTDIR/llama" "$TESTDIR/ad1" --targets $ALL --r 8 --alpha 16 \
    --rank-pattern '{"layers.1.self_attn.q_proj": 4}' --alpha-pattern '{"down_proj": 32}' --save lm_head
$GEN adapter "$TESTDIR/llama" "$TESTDIR/ad2" --targets q_proj,v_proj --r 4 --alpha 4 --rslora \
    --dtype BF16 --adapter-name default --seed 7 --embed model.embed_tokens

note "=== llama"
mkdir "$TESTDIR/m"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/ad1"
check_lora "$TESTDIR/llama" "$TESTDIR/m" --adapter "$TESTDIR/ad1" --tp 2 --tp 4
for f in adapter_config.json adapter_model.safetensors README.md; do
    cmp "$TESTDIR/m/adapter/$f" "$TESTDIR/ad1/$f" || fail "adapter/$f differs from the adapter's file"
done
grep -q "^LoRA: .*ad1 merged into every view" "$TESTDIR/m/README" || fail "README does not name the adapter"
umount_ckptfs
# .ckptfs/stats counts the adapter's file beside the base's: a fresh mount
# reading hf/ once (no disk tier: the mount above filled it) reads every
# tensor of the adapter at least once.
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/ad1,cache_dir=none"
cat "$TESTDIR/m/hf/"*.safetensors >/dev/null
"$PYTHON" - "$TESTDIR/m/.ckptfs/stats" "$TESTDIR/ad1/adapter_model.safetensors" <<'PYEOF' || fail "stats do not count the adapter's bytes"
import json, os, struct, sys
src = json.load(open(sys.argv[1]))["source_bytes_read"]
with open(sys.argv[2], "rb") as f:
    data = os.path.getsize(sys.argv[2]) - 8 - struct.unpack("<Q", f.read(8))[0]
got = src.get("adapter/adapter_model.safetensors")
print("  stats: adapter/adapter_model.safetensors: %s bytes read (its tensors: %d)" % (got, data))
base = sum(v for k, v in src.items() if not k.startswith("adapter"))
sys.exit(0 if got is not None and got >= data and base > 0 else 1)
PYEOF
umount_ckptfs

note "=== stacked"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/ad1,lora=$TESTDIR/ad2"
check_lora "$TESTDIR/llama" "$TESTDIR/m" --adapter "$TESTDIR/ad1" --adapter "$TESTDIR/ad2" --tp 2
cmp "$TESTDIR/m/adapter-2/adapter_config.json" "$TESTDIR/ad2/adapter_config.json" || fail "adapter-2/ is not the second adapter"
umount_ckptfs

note "=== save-only"
$GEN adapter "$TESTDIR/llama" "$TESTDIR/ad3" --targets none --save lm_head
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/ad3"
check_lora "$TESTDIR/llama" "$TESTDIR/m" --adapter "$TESTDIR/ad3"
umount_ckptfs

note "=== scale"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/ad2,lora_scale=0.5"
check_lora "$TESTDIR/llama" "$TESTDIR/m" --adapter "$TESTDIR/ad2" --scale 0.5
umount_ckptfs

for preset in gpt2 gpt2-noprefix; do
    note "=== $preset"
    gen_model "$preset" "$TESTDIR/$preset" >/dev/null
    prefix=
    [ "$preset" = gpt2-noprefix ] && prefix=transformer.
    $GEN adapter "$TESTDIR/$preset" "$TESTDIR/ad-$preset" --targets c_attn,c_fc,c_proj --r 4 --alpha 8 \
        --fan-in-fan-out --module-prefix "$prefix"
    mount_ckptfs "$TESTDIR/$preset" "$TESTDIR/m" -o "lora=$TESTDIR/ad-$preset"
    check_lora "$TESTDIR/$preset" "$TESTDIR/m" --adapter "$TESTDIR/ad-$preset" --tp 2
    umount_ckptfs
done

note "=== pairs"
$GEN pairs "$TESTDIR/llama" "$TESTDIR/pairs" --targets q_proj,down_proj --embed model.embed_tokens
mount_ckptfs "$TESTDIR/pairs" "$TESTDIR/m"
check_lora "$TESTDIR/pairs" "$TESTDIR/m" --pairs --tp 2
umount_ckptfs

note "=== export"
"$CKPTFS" export "$TESTDIR/llama" hf@bf16/ "$TESTDIR/merged" -o "lora=$TESTDIR/ad1" >"$TESTDIR/export.log" ||
    fail "export failed: $(cat "$TESTDIR/export.log")"
mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/ad1"
diff -r "$TESTDIR/m/hf@bf16" "$TESTDIR/merged" >/dev/null || fail "export hf@bf16/ differs from the mount"
umount_ckptfs
note "  export hf@bf16/ -o lora= == mount"
"$CKPTFS" inspect -o "lora=$TESTDIR/ad1" "$TESTDIR/llama" | grep -q "^lora: *14 modules merged into every view" ||
    fail "inspect does not count the 14 merged modules"

note "=== cache"
cache_counts() { # disk hits, computed chunks, entries written, once the writer is idle
    # (it names its entries when no chunk came for a moment; 30 s at most)
    "$PYTHON" -c 'import json, sys, time
deadline = time.monotonic() + 30
while True:
    c = json.load(open(sys.argv[1] + "/.ckptfs/stats"))["cache"]
    if c["disk"]["pending"] == 0 or time.monotonic() > deadline:
        break
    time.sleep(0.05)
print(c["disk"]["hits"], c["computed_chunks"], c["disk"]["written"])' "$1"
}
for k in 1 2; do
    # The default policy stores a chunk only when recomputing it is dearer
    # than reading it back, which depends on the build (a sanitizer build
    # merges 5x slower); `always` makes the read-back of merges certain.
    mount_ckptfs "$TESTDIR/llama" "$TESTDIR/m" -o "lora=$TESTDIR/ad1,cache_dir=$TESTDIR/cache,cache_policy=always"
    cat "$TESTDIR/m/hf/"*.safetensors >"$TESTDIR/read-$k"
    read -r hits computed written <<<"$(cache_counts "$TESTDIR/m")"
    note "  mount $k: disk hits $hits, computed chunks $computed, written $written"
    umount_ckptfs
    if [ "$k" = 1 ] && { [ "$computed" -eq 0 ] || [ "$written" -eq 0 ]; }; then
        fail "first mount computed $computed chunks and wrote $written to disk"
    fi
    # 14 merged modules of one chunk each, and lm_head (modules_to_save).
    if [ "$k" = 2 ] && { [ "$hits" -lt 14 ] || [ $((hits + computed)) -ne 15 ]; }; then
        fail "second mount computed $computed chunks, $hits disk hits: the merge was not read back"
    fi
done
cmp "$TESTDIR/read-1" "$TESTDIR/read-2" || fail "the merge read back from disk differs"

note "=== bad adapters"
# bad NAME 'EXPECTED LINE' [gen_lora adapter options...]: an adapter made
# from tiny-llama, edited by $EDIT_CFG (python on dict `c`) and $EDIT_ST
# (python on dict `t` of name -> (dtype, array)), must be refused with the line.
bad() {
    local name=$1 want=$2 d=$TESTDIR/bad-$1 err rc
    shift 2
    $GEN adapter "$TESTDIR/llama" "$d" --targets q_proj,v_proj --r 8 "$@"
    "$PYTHON" - "$d" "${EDIT_CFG:-}" "${EDIT_ST:-}" <<'EOF'
import json, os, sys
sys.path.insert(0, os.environ["srcdir"] + "/tests")
import gen_lora, stlib
d, ecfg, est = sys.argv[1:4]
p = os.path.join(d, "adapter_config.json")
c = json.load(open(p))
exec(ecfg, {"c": c})
json.dump(c, open(p, "w"))
if est:
    q = os.path.join(d, "adapter_model.safetensors")
    _, ts = stlib.parse_safetensors(q, stlib.read_file(q), False)
    t = {n: (x.dtype, x.arr.reshape(x.shape)) for n, x, _, _ in ts}
    exec(est, {"t": t})
    gen_lora.write_st(q, [(n, dt, a) for n, (dt, a) in sorted(t.items())])
EOF
    EDIT_CFG= EDIT_ST=
    rc=0
    err=$("$CKPTFS" inspect -o "lora=$d" "$TESTDIR/llama" 2>&1 >/dev/null) || rc=$?
    [ "$rc" -ne 0 ] || fail "bad $name: accepted"
    case "$err" in
    *"$d/$want"*) note "  $name: refused: ${err#ckptfs: }" ;;
    *) fail "bad $name: '$err', expected '$d/$want'" ;;
    esac
}
Q=model.layers.0.self_attn.q_proj
EDIT_CFG='c["r"] = 0'
bad r0 "adapter_config.json: r is 0: a LoRA rank must be at least 1"
EDIT_CFG='c["use_dora"] = True'
bad dora "adapter_config.json: use_dora: DoRA adapters are not supported (their magnitude vector rescales W)"
EDIT_CFG='c["peft_type"] = "IA3"'
bad ia3 "adapter_config.json: peft_type 'IA3' is not supported: only LORA adapters merge into weights"
EDIT_CFG='c["bias"] = "all"'
bad bias "adapter_config.json: bias 'all' is not supported: only \"none\" (trained biases are not merged)"
EDIT_CFG='c["rank_pattern"] = {"q_proj": 2.5}'
bad pattern "adapter_config.json: rank_pattern['q_proj'] is not an integer rank 1..65536"
EDIT_ST='t["base_model.model.model.layers.9.mlp.up_proj.lora_A.weight"] = t.pop("base_model.model.'$Q'.lora_A.weight"); t["base_model.model.model.layers.9.mlp.up_proj.lora_B.weight"] = t.pop("base_model.model.'$Q'.lora_B.weight")'
bad missing "adapter_model.safetensors: module 'model.layers.9.mlp.up_proj': the base model has no tensor 'model.layers.9.mlp.up_proj.weight'"
EDIT_ST='dt, a = t["base_model.model.'$Q'.lora_B.weight"]; t["base_model.model.'$Q'.lora_B.weight"] = (dt, a[:32])'
bad shape "adapter_model.safetensors: module '$Q': lora_B [32, 8] and lora_A [8, 64] make a [32, 64] delta but the base weight '$Q.weight' is [64, 64]"
EDIT_ST='dt, a = t["base_model.model.'$Q'.lora_A.weight"]; t["base_model.model.'$Q'.lora_A.weight"] = (dt, a[:4])'
bad rank "adapter_model.safetensors: module '$Q': lora_A [4, 64] and lora_B [64, 8] do not have rank r=8"
V=model.layers.0.self_attn.v_proj
# target_modules as PEFT matches it: a list entry is the name or a dotted
# suffix of it; a string is a regex the whole name must match (fullmatch).
EDIT_CFG='c["target_modules"] = ["q_proj"]'
bad targets "adapter_model.safetensors: module '$V' does not match target_modules of $TESTDIR/bad-targets/adapter_config.json"
EDIT_CFG='c["target_modules"] = "q_proj|v_proj"'
bad target-regex "adapter_model.safetensors: module '$Q' does not match target_modules of $TESTDIR/bad-target-regex/adapter_config.json"
EDIT_CFG='c["target_modules"] = r"model\.layers\.\d+\.self_attn\.(?=q)._proj"'
bad target-lookahead "adapter_config.json: target_modules regex 'model\.layers\.\d+\.self_attn\.(?=q)._proj' has a (? group other than (?:, which ckptfs cannot match as Python does"
# ... and those PEFT would have applied are accepted
for tm in '"model\\.layers\\.\\d+\\.self_attn\\.(?:q|v)_proj"' \
    '["self_attn.q_proj", "model.layers.0.self_attn.v_proj", "layers.1.self_attn.v_proj"]' '"all-linear"'; do
    rm -rf "$TESTDIR/ok-targets"
    cp -r "$TESTDIR/bad-targets" "$TESTDIR/ok-targets"
    "$PYTHON" -c 'import json, sys
p = sys.argv[1] + "/adapter_config.json"
c = json.load(open(p))
c["target_modules"] = json.loads(sys.argv[2])
json.dump(c, open(p, "w"))' "$TESTDIR/ok-targets" "$tm"
    "$CKPTFS" inspect -o "lora=$TESTDIR/ok-targets" "$TESTDIR/llama" | grep -q "^lora: *4 modules merged into every view" ||
        fail "target_modules $tm: not accepted"
    note "  target_modules $tm: accepted"
done
EDIT_ST='del t["base_model.model.'$Q'.lora_B.weight"]'
bad unpaired "adapter_model.safetensors: module '$Q': lora_A without lora_B"
EDIT_ST='dt, a = t["base_model.model.'$Q'.lora_A.weight"]; t["base_model.model.'$Q'.lora_magnitude_vector"] = (dt, a[0])'
bad magnitude "adapter_model.safetensors: tensor 'base_model.model.$Q.lora_magnitude_vector': DoRA magnitude vectors are not supported"
EDIT_ST='dt, a = t["base_model.model.'$Q'.lora_A.weight"]; t["base_model.model.model.norm.weight"] = (dt, a[0])'
bad stray "adapter_model.safetensors: tensor 'base_model.model.model.norm.weight' is neither a LoRA pair nor one of modules_to_save"
# A .bin adapter goes through the torch reader (tests/mount-lora-torch.sh);
# one that is not a torch.save file is refused by name.
mkdir "$TESTDIR/bad-bin"
cp "$TESTDIR/ad1/adapter_config.json" "$TESTDIR/bad-bin/"
: >"$TESTDIR/bad-bin/adapter_model.bin"
err=$("$CKPTFS" inspect -o "lora=$TESTDIR/bad-bin" "$TESTDIR/llama" 2>&1 >/dev/null) && fail "bad bin: accepted"
case "$err" in
"ckptfs: $TESTDIR/bad-bin/adapter_model.bin: not a torch.save file (neither a zip nor the legacy pickle format)") note "  bin: refused: ${err#ckptfs: }" ;;
*) fail "bad bin: '$err'" ;;
esac
# The daemon refuses before mounting: status 1, the same line, nothing mounted.
rc=0
"$CKPTFS" -f -o "lora=$TESTDIR/bad-dora" "$TESTDIR/llama" "$TESTDIR/m" >"$TESTDIR/daemon.out" 2>"$TESTDIR/daemon.err" || rc=$?
[ "$rc" -eq 1 ] || fail "daemon with a DoRA adapter exited $rc, expected 1"
grep -qF "use_dora: DoRA adapters are not supported" "$TESTDIR/daemon.err" || fail "daemon: $(cat "$TESTDIR/daemon.err")"
is_mounted "$TESTDIR/m" && fail "a refused adapter left a mount"
note "  daemon: exit 1, one line, no mount"
note "PASS"
