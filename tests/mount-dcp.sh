#!/bin/bash
# mount-dcp.sh - torch Distributed Checkpoint directories as sources.
#
# Fixtures come from tests/dcp_fixtures.py, a writer that follows torch's
# DCP and torch.save sources (torch 2.x is not in Debian); `verify` first
# proves them real: every item loads with Debian's torch.load and the
# .metadata unpickles with stand-in classes. Then, for each of
#   old    tiny-llama, the era before torch 2.3, 2 ranks (dim-0 and dim-1 chunks)
#   new    mixed-dtypes (f64 f32 f16 bf16 i64 ... bool, 0-dim, empty), torch >= 2.4, 3 ranks
#   kf     tiny-llama under KempnerForge's names (layouts/kempnerforge.json renames them)
#   titan  tiny-llama under torchtitan's names, wq/wk rows interleaved (layouts/torchtitan.json
#          permutes them back through the inverse of rope_rows(heads, ...), as torchtitan's to_hf does)
#   pp     tiny-llama in pp0/ and pp1/, 4 ranks each (a TP x FSDP grid)
#   tied   qwen2 (tied embeddings) with lm_head.weight saved as its own copy, as
#          DCP does: hf/ drops it as save_pretrained does; under an untied
#          config.json, or when the head's bytes differ (then README and inspect
#          say so), both are kept
# tests/check_dcp.py compares hf/ and tensors/ with numpy, and hf@bf16/,
# native/, tp-2/, per-layer/, pp-2/ with a mount of the safetensors model the
# fixture was written from. `ckptfs inspect` names the format and the other
# state. Hostile .metadata files are refused with exit 1 and one exact line.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init
"$PYTHON" -c 'import torch' 2>/dev/null || skip "$PYTHON cannot import torch (apt-get install python3-torch)"

FX="$srcdir/tests/dcp_fixtures.py"

LLAMA=$TESTDIR/llama
MIXED=$TESTDIR/mixed
gen_model tiny-llama "$LLAMA"
gen_model mixed-dtypes "$MIXED"

dcp_case() { # dcp_case KIND HF_DIR FORMAT [check_dcp option]
    local kind=$1 hf=$2 format=$3 src=$TESTDIR/$1 mnt=$TESTDIR/mnt-$1 ref=$TESTDIR/ref-$1 refpid out
    shift 3
    note "=== $kind"
    "$PYTHON" "$FX" write "$kind" "$hf" "$src" || fail "dcp_fixtures.py write $kind failed"
    "$PYTHON" "$FX" verify "$hf" "$src" || fail "$kind: the fixture does not load in torch"
    mkdir "$mnt" "$ref"
    mount_ckptfs "$hf" "$ref"
    refpid=$CKPTFS_PID
    mount_ckptfs "$src" "$mnt"
    "$PYTHON" "$srcdir/tests/check_dcp.py" "$hf" "$mnt" "$ref" "$@" || fail "$kind: check_dcp.py failed"
    grep -q "^Format: .*torch DCP" "$mnt/README" || fail "$kind: README does not name the DCP format"
    cp "$mnt/README" "$TESTDIR/$kind-README"
    fusermount3 -u "$mnt"
    wait "$CKPTFS_PID" || fail "$kind: daemon exited with status $?"
    check_log "$CKPTFS_LOG"
    fusermount3 -u "$ref"
    wait "$refpid" || fail "$kind: reference daemon exited with status $?"
    out=$("$CKPTFS" inspect "$src") || fail "inspect $kind failed"
    for want in "format:        $format" "weights under 'model.'" "step=10000" "optimizer: 1 entries (skipped)"; do
        case $out in *"$want"*) ;; *) fail "inspect $kind: no '$want' in:
$out" ;; esac
    done
}

dcp_case old "$LLAMA" "torch DCP (1 directory, 2 shard files, metadata of torch < 2.3)"
dcp_case new "$MIXED" "torch DCP (1 directory, 3 shard files, metadata of torch >= 2.4)"
dcp_case kf "$LLAMA" "torch DCP (1 directory, 2 shard files, metadata of torch >= 2.4)" --naming kf
grep -q "^Naming: *kempnerforge" "$TESTDIR/kf-README" || fail "kf: README does not say the naming"
dcp_case titan "$LLAMA" "torch DCP (1 directory, 3 shard files, metadata of torch >= 2.4)" --naming titan
grep -q "^Naming: *torchtitan" "$TESTDIR/titan-README" || fail "titan: README does not say the naming"
dcp_case pp "$LLAMA" "torch DCP (2 pipeline stages, 8 shard files, metadata of torch >= 2.4)"

# Tied embeddings: DCP saves lm_head.weight as its own copy; hf/ must be the
# tied model as save_pretrained writes it (check_dcp.py: no lm_head.weight,
# native/ tp-2/ per-layer/ pp-2/ as the safetensors model's), tensors/ keeps it.
QWEN=$TESTDIR/qwen2
gen_model qwen2 "$QWEN"
dcp_case tied "$QWEN" "torch DCP (1 directory, 3 shard files, metadata of torch >= 2.4)"
[ -e "$TESTDIR/tied/config.json" ] && grep -q '"tie_word_embeddings": *true' "$TESTDIR/tied/config.json" ||
    fail "tied: the fixture's config.json does not tie the embeddings"
"$CKPTFS" ls "$TESTDIR/tied" tensors | grep -q "  lm_head\.weight\.npy$" || fail "tied: tensors/ lacks lm_head.weight.npy"
# torchtitan's names: output.weight saved apart from tok_embeddings.weight
"$PYTHON" "$FX" tie "$LLAMA" "$TESTDIR/llama-tied" || fail "dcp_fixtures.py tie failed"
dcp_case titan-tied "$TESTDIR/llama-tied" "torch DCP (1 directory, 3 shard files, metadata of torch >= 2.4)" --naming titan
"$CKPTFS" ls "$TESTDIR/titan-tied" tensors | grep -q "  lm_head\.weight\.npy$" || fail "titan-tied: tensors/ lacks lm_head.weight.npy"

hf_heads() { # hf_heads MNT: prints lm_head.weight's relation to the embedding in MNT/hf/, or "absent"
    "$PYTHON" - "$1/hf" "$srcdir/tests" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np, stlib
ts = stlib.read_dir(sys.argv[1], True)
e, h = ts["model.embed_tokens.weight"].arr, ts.get("lm_head.weight")
print("absent" if h is None else "equal" if h.arr.tobytes() == e.tobytes() else
      "negated" if h.arr.tobytes() == (-e).tobytes() else "other")
PY
}

note "=== the same DCP directory under a config.json that unties the embeddings: both kept"
cp -r "$TESTDIR/tied" "$TESTDIR/untied"
sed -i 's/"tie_word_embeddings": *true/"tie_word_embeddings": false/' "$TESTDIR/untied/config.json"
mkdir "$TESTDIR/mnt-untied"
mount_ckptfs "$TESTDIR/untied" "$TESTDIR/mnt-untied"
got=$(hf_heads "$TESTDIR/mnt-untied") || fail "untied: reading hf/ failed"
[ "$got" = equal ] || fail "untied: hf/lm_head.weight is '$got', expected the embedding's copy"
umount_ckptfs

note "=== a tied config over a head that differs from the embedding: both kept, and said"
"$PYTHON" "$FX" write tied-differs "$QWEN" "$TESTDIR/differs" || fail "dcp_fixtures.py write tied-differs failed"
mkdir "$TESTDIR/mnt-differs"
mount_ckptfs "$TESTDIR/differs" "$TESTDIR/mnt-differs"
got=$(hf_heads "$TESTDIR/mnt-differs") || fail "differs: reading hf/ failed"
[ "$got" = negated ] || fail "differs: hf/lm_head.weight is '$got', expected the source's own head"
WHY="lm_head.weight differs from model.embed_tokens.weight though config.json ties the embeddings: both kept in hf/"
grep -qF "$WHY" "$TESTDIR/mnt-differs/README" || fail "differs: README does not say why lm_head.weight is kept"
umount_ckptfs
out=$("$CKPTFS" inspect "$TESTDIR/differs") || fail "inspect differs failed"
case $out in *"$WHY"*) ;; *) fail "inspect differs: no '$WHY' in:
$out" ;; esac

note "=== -o config=FILE (a step directory without config.json)"
NOCFG=$TESTDIR/nocfg
mkdir "$NOCFG" "$TESTDIR/mnt-nocfg"
cp -r "$TESTDIR/pp/pp0" "$TESTDIR/pp/pp1" "$NOCFG/"
out=$("$CKPTFS" inspect "$NOCFG") || fail "inspect nocfg failed"
case $out in *"architecture:  unknown"*) ;; *) fail "inspect without a config: $out" ;; esac
mount_ckptfs "$NOCFG" "$TESTDIR/mnt-nocfg" -o "config=$LLAMA/config.json"
"$PYTHON" - "$LLAMA/config.json" "$TESTDIR/mnt-nocfg" <<'PY' || fail "-o config: hf/config.json or native/ wrong"
import json, os, sys
want = json.load(open(sys.argv[1]))
got = json.load(open(os.path.join(sys.argv[2], "hf", "config.json")))
assert got == want, (got, want)
assert os.path.exists(os.path.join(sys.argv[2], "native", "model.safetensors"))
assert os.path.isdir(os.path.join(sys.argv[2], "tp-2"))
PY
umount_ckptfs
expect_mount_refused "ckptfs: $TESTDIR/none.json: No such file or directory" "$NOCFG" -o "config=$TESTDIR/none.json"

note "=== no config.json: what the tensor shapes say is derived, the rest is named"
for kind in kf titan; do
    cp -r "$TESTDIR/$kind" "$TESTDIR/$kind-bare"
    rm "$TESTDIR/$kind-bare/config.json"
done
SHAPES="hidden_size 64 and vocab_size 101 (the embedding), num_hidden_layers 2 (layers with q), intermediate_size 160 (gate rows), tie_word_embeddings false (an output head), model_type llama (no q bias or an o bias too)"
out=$("$CKPTFS" inspect "$TESTDIR/kf-bare") || fail "inspect kf-bare failed"
want="config:        no config.json generated; derived from the tensor shapes (renamed from the kempnerforge naming): $SHAPES; not derivable: num_attention_heads and num_key_value_heads (q has 64 rows = heads x head_dim, k 32; give -o head_dim=N), rope_theta, rms_norm_eps, max_position_embeddings (give -o config=FILE)"
case $out in *"$want"*) ;; *) fail "inspect kf-bare: no '$want' in:
$out" ;; esac
"$CKPTFS" ls "$TESTDIR/kf-bare" hf | grep -q "  config\.json$" && fail "kf-bare: hf/ has a config.json without the heads"
# torchtitan's wq/wk rows cannot be reordered without the heads: refused, not served wrong
expect_mount_refused "ckptfs: $TESTDIR/titan-bare: tensor 'model.layers.0.self_attn.k_proj.weight': the torchtitan naming keeps its rows in the interleaved rotary order of its heads, and no config says how many heads (give -o config=FILE or -o head_dim=N)" "$TESTDIR/titan-bare"
expect_mount_refused "ckptfs: $TESTDIR/titan-bare: head_dim 24 (-o head_dim) does not divide the projections: q has 64 rows, k 32 (heads x head_dim)" "$TESTDIR/titan-bare" -o head_dim=24
expect_mount_refused "ckptfs: -o head_dim=16: $TESTDIR/titan has a config, which says the heads" "$TESTDIR/titan" -o head_dim=16
expect_mount_refused "ckptfs: -o head_dim and -o config: the config says the heads; give one of them" "$TESTDIR/titan-bare" -o head_dim=16 -o "config=$LLAMA/config.json"
expect_mount_refused "ckptfs: -o head_dim=x: not a number of 1 to 65536" "$TESTDIR/titan-bare" -o head_dim=x
for kind in kf titan; do
    out=$("$CKPTFS" inspect -o head_dim=16 "$TESTDIR/$kind-bare") || fail "inspect -o head_dim $kind-bare failed"
    want="config.json derived from the tensor shapes (renamed from the $([ $kind = kf ] && echo kempnerforge || echo torchtitan) naming): $SHAPES, head_dim 16 (-o head_dim), num_attention_heads 4 (q rows / head_dim), num_key_value_heads 2 (k rows / head_dim); not derivable, written as Meta's and torchtitan's defaults: rope_theta 10000, rms_norm_eps 1e-05, max_position_embeddings 2048 (give -o config=FILE for the real ones)"
    case $out in *"config:        $want"*) ;; *) fail "inspect $kind-bare -o head_dim: no '$want' in:
$out" ;; esac
    # the tensors are those of the mount with the real config.json (checked against numpy above)
    mkdir "$TESTDIR/mnt-$kind-bare" "$TESTDIR/mnt-$kind-full"
    mount_ckptfs "$TESTDIR/$kind" "$TESTDIR/mnt-$kind-full"
    fullpid=$CKPTFS_PID
    mount_ckptfs "$TESTDIR/$kind-bare" "$TESTDIR/mnt-$kind-bare" -o head_dim=16
    grep -qF "Config:        $want" "$TESTDIR/mnt-$kind-bare/README" || fail "$kind-bare: README does not say where the config came from"
    cmp "$TESTDIR/mnt-$kind-full/hf/model.safetensors" "$TESTDIR/mnt-$kind-bare/hf/model.safetensors" ||
        fail "$kind-bare: hf/model.safetensors differs from the one under the real config.json"
    "$PYTHON" - "$LLAMA/config.json" "$TESTDIR/mnt-$kind-bare/hf/config.json" <<'PY' || fail "$kind-bare: hf/config.json wrong"
import json, sys
real, got = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for k in ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings", "torch_dtype", "hidden_act", "rms_norm_eps",
          "rope_theta"):
    assert got[k] == real[k], (k, got[k], real[k])
assert got["max_position_embeddings"] == 2048, got
PY
    umount_ckptfs
    fusermount3 -u "$TESTDIR/mnt-$kind-full"
    wait "$fullpid" || fail "$kind-full: daemon exited with status $?"
done

note "=== older torchtitan: a complex64 freqs_cis buffer, skipped; its width is the head_dim"
dcp_case titan-freqs "$LLAMA" "torch DCP (1 directory, 3 shard files, metadata of torch >= 2.4)" --naming titan
cp -r "$TESTDIR/titan-freqs" "$TESTDIR/titan-freqs-bare"
rm "$TESTDIR/titan-freqs-bare/config.json"
out=$("$CKPTFS" inspect "$TESTDIR/titan-freqs-bare") || fail "inspect titan-freqs-bare failed"
for want in "other state: step=10000, model.freqs_cis (complex64 tensor, skipped)" \
    "config:        config.json derived from the tensor shapes (renamed from the torchtitan naming): $SHAPES, head_dim 16 (2 x the columns of the freqs_cis buffer), num_attention_heads 4 (q rows / head_dim), num_key_value_heads 2"; do
    case $out in *"$want"*) ;; *) fail "inspect titan-freqs-bare: no '$want' in:
$out" ;; esac
done
mkdir "$TESTDIR/mnt-tf" "$TESTDIR/mnt-tf-bare"
mount_ckptfs "$TESTDIR/titan-freqs" "$TESTDIR/mnt-tf"
tfpid=$CKPTFS_PID
mount_ckptfs "$TESTDIR/titan-freqs-bare" "$TESTDIR/mnt-tf-bare"
cmp "$TESTDIR/mnt-tf/hf/model.safetensors" "$TESTDIR/mnt-tf-bare/hf/model.safetensors" ||
    fail "titan-freqs-bare: hf/model.safetensors differs from the one under the real config.json"
umount_ckptfs
fusermount3 -u "$TESTDIR/mnt-tf"
wait "$tfpid" || fail "titan-freqs: daemon exited with status $?"

note "=== stages that overlap, a stage directory without .metadata"
mkdir -p "$TESTDIR/dup" "$TESTDIR/emptypp/pp0"
cp -r "$TESTDIR/old" "$TESTDIR/dup/pp0"
cp -r "$TESTDIR/old" "$TESTDIR/dup/pp1"
expect_mount_refused "ckptfs: $TESTDIR/dup/pp1/__0_0.distcp: duplicate tensor name 'lm_head.weight' (also in $TESTDIR/dup/pp0/__0_0.distcp)" "$TESTDIR/dup"
mkdir -p "$TESTDIR/gap"
cp -r "$TESTDIR/pp/pp0" "$TESTDIR/gap/pp0"
cp -r "$TESTDIR/pp/pp1" "$TESTDIR/gap/pp2"
expect_mount_refused "ckptfs: $TESTDIR/gap/pp2: pipeline stage directories must be numbered pp0, pp1, ... without a gap (pp1/ is missing)" "$TESTDIR/gap"
expect_mount_refused "ckptfs: $TESTDIR/emptypp: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or *.pt/*.pth/*.ckpt (not a checkpoint)" "$TESTDIR/emptypp"

note "=== a .distcp with optimizer state only is not passed through"
cp -r "$TESTDIR/old" "$TESTDIR/extra"
echo "optimizer state" >"$TESTDIR/extra/__7_0.distcp"
out=$("$CKPTFS" ls "$TESTDIR/extra" hf) || fail "ls extra hf failed"
case $out in *distcp*|*.metadata*) fail "hf/ passes a shard through: $out" ;; esac
case $out in *tokenizer.json*) ;; *) fail "hf/ lacks the side files: $out" ;; esac

note "=== hostile .metadata"
hostile() { # hostile CASE WANT
    "$PYTHON" "$FX" hostile "$1" "$LLAMA" "$TESTDIR/h-$1" || fail "dcp_fixtures.py hostile $1 failed"
    expect_mount_refused "ckptfs: $TESTDIR/h-$1/$2" "$TESTDIR/h-$1"
}
E="'model.model.embed_tokens.weight'"
hostile global ".metadata: pickle refers to the global 'posix.system', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)"
[ ! -e "$TESTDIR/h-global/pwned" ] || fail "the hostile pickle's command ran"
hostile overlap ".metadata: $E: chunks 0 and 1 overlap"
hostile hole ".metadata: $E: a hole: no chunk covers [91, 0]"
hostile past-end ".metadata: $E: chunk 1 runs past dim 0 (51 + 60 > 101)"
hostile escape ".metadata: $E chunk 1: relative_path '../__1_0.distcp' is not a file of the checkpoint directory"
"$PYTHON" "$FX" hostile short-shard "$LLAMA" "$TESTDIR/h-short-shard" || fail "dcp_fixtures.py hostile short-shard failed"
len=$(stat -c %s "$TESTDIR/h-short-shard/__1_0.distcp")
expect_mount_refused "ckptfs: $TESTDIR/h-short-shard/__1_0.distcp: $E chunk 1: item at 7705+1056281 runs past the end of the file ($len bytes)" "$TESTDIR/h-short-shard"
