#!/bin/bash
# mount-torch.sh - torch checkpoints as sources, with torch.load as the oracle.
#
# Fixtures come from real torch.save (tests/torch_fixtures.py, Debian's
# python3-torch) over models of examples/gen-model.py:
#   gpt2-legacy    legacy-format pytorch_model.bin, tied lm_head sharing the
#                  embedding's storage, attn.bias and 0-dim attn.masked_bias
#   llama-zip      zip pytorch_model.bin, bf16, GQA, one transposed weight,
#                  a tensor at a storage offset
#   llama-sharded  two zip shards + pytorch_model.bin.index.json
#   nanogpt        ckpt.pt with model_args, optimizer, iter_num and
#                  '_orig_mod.' prefixes, no config.json
#   llama2c, meta  llama2.c's ckpt.pt and Meta's consolidated.00.pth +
#                  params.json: Meta's names, wq/wk in the interleaved rotary
#                  order; hf/ must be the original HF model bit for bit
#   meta-mp, meta3-mp  Meta's model-parallel release in 2 files (LLaMA 1/2 and
#                  3 cuts of tok_embeddings): merged, hf/ the original bit for
#                  bit and equal to a numpy run of convert_llama_weights_to_hf
#                  (tests/check_meta_mp.py); shards that do not fit together
#                  are refused with one exact line
# Each is mounted and tests/check_torch.py compares hf/, hf@fp32/ and
# tensors/ with torch.load, and native/, tp-2/ and per-layer/ with a mount
# of the safetensors model it was saved from, byte for byte. `ckptfs
# inspect` and `ckptfs export` run on them too. Bad inputs (a pickle calling
# os.system, a truncated zip, a compressed entry, a lying storage size, a
# truncated legacy storage) are refused with exit 1 and one exact line, and
# the hostile command never runs.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init
"$PYTHON" -c 'import torch' 2>/dev/null || skip "$PYTHON cannot import torch (apt-get install python3-torch)"

fixture() { # fixture KIND HF_DIR OUT
    "$PYTHON" "$srcdir/tests/torch_fixtures.py" "$@" || fail "torch_fixtures.py $* failed"
}

GPT2=$TESTDIR/gpt2
LLAMA=$TESTDIR/llama
gen_model gpt2 "$GPT2"
gen_model tiny-llama "$LLAMA"

# The safetensors originals, mounted once, are the reference for the layouts' views.
mkdir "$TESTDIR/ref-gpt2" "$TESTDIR/ref-llama"
mount_ckptfs "$GPT2" "$TESTDIR/ref-gpt2"
REF_GPT2_PID=$CKPTFS_PID
mount_ckptfs "$LLAMA" "$TESTDIR/ref-llama"
REF_LLAMA_PID=$CKPTFS_PID

torch_case() { # torch_case KIND HF_DIR REF_MNT [check_torch options]
    local kind=$1 hf=$2 ref=$3 src=$TESTDIR/$1 mnt=$TESTDIR/mnt-$1
    shift 3
    note "=== $kind"
    fixture "$kind" "$hf" "$src"
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    "$PYTHON" "$srcdir/tests/check_torch.py" "$src" "$mnt" --ref "$ref" "$@" ||
        fail "$kind: check_torch.py failed"
    grep -q "^Format: *HuggingFace layout, torch" "$mnt/README" || fail "$kind: README does not name the torch format"
    fusermount3 -u "$mnt"
    wait "$CKPTFS_PID" || fail "$kind: daemon exited with status $?"
    check_log "$CKPTFS_LOG"
}

torch_case gpt2-legacy "$GPT2" "$TESTDIR/ref-gpt2"
# Tied copies: lm_head.weight is in tensors/ but not in hf/.
torch_case llama-zip "$LLAMA" "$TESTDIR/ref-llama"
torch_case llama-sharded "$LLAMA" "$TESTDIR/ref-llama"
torch_case nanogpt "$GPT2" "$TESTDIR/ref-gpt2" --nanogpt
# Meta's naming and rotary row order, converted back to HF's: bit for bit the original.
torch_case llama2c "$LLAMA" "$TESTDIR/ref-llama" --same-as-ref
torch_case meta "$LLAMA" "$TESTDIR/ref-llama" --same-as-ref
# Meta's model-parallel release: the slices merged, bit for bit the original,
# and every hf/ tensor equal to a numpy run of convert_llama_weights_to_hf.
mp_case() { # mp_case KIND LLAMA_VERSION
    torch_case "$1" "$LLAMA" "$TESTDIR/ref-llama" --same-as-ref
    mkdir "$TESTDIR/mnt-$1-np"
    mount_ckptfs "$TESTDIR/$1" "$TESTDIR/mnt-$1-np"
    "$PYTHON" "$srcdir/tests/check_meta_mp.py" "$TESTDIR/$1" "$TESTDIR/mnt-$1-np" "$2" || fail "$1: check_meta_mp.py failed"
    umount_ckptfs
}
mp_case meta-mp 2
mp_case meta3-mp 3
out=$("$CKPTFS" inspect "$TESTDIR/meta-mp") || fail "inspect meta-mp failed"
for want in "format:        torch zip (Meta's model-parallel consolidated.00.pth .. consolidated.01.pth)" \
    "contents:      2 model-parallel shards merged; Meta/llama2.c LLaMA naming"; do
    case $out in *"$want"*) ;; *) fail "inspect meta-mp: no '$want' in:
$out" ;; esac
done

note "=== model-parallel shards that do not fit together"
mp_bad() { # mp_bad NAME PYTHON_EDIT WANT: edit the shards of a copy of meta-mp, expect WANT
    local d=$TESTDIR/mp-$1
    cp -r "$TESTDIR/meta-mp" "$d"
    "$PYTHON" - "$d" <<PY || fail "mp_bad $1: editing the shards failed"
import os, sys, torch
d = sys.argv[1]
s0, s1 = (torch.load(os.path.join(d, "consolidated.%02d.pth" % i)) for i in (0, 1))
$2
torch.save(s0, os.path.join(d, "consolidated.00.pth"))
torch.save(s1, os.path.join(d, "consolidated.01.pth"))
PY
    expect_mount_refused "ckptfs: $3" "$d"
}
mp_bad missing 'del s1["layers.1.ffn_norm.weight"]' \
    "$TESTDIR/mp-missing/consolidated.01.pth: no tensor 'layers.1.ffn_norm.weight', which consolidated.00.pth holds"
mp_bad dtype 's1["norm.weight"] = s1["norm.weight"].float()' \
    "$TESTDIR/mp-dtype/consolidated.01.pth: tensor 'norm.weight' is F32 here and BF16 in consolidated.00.pth"
mp_bad replicated 's1["norm.weight"] = s1["norm.weight"][:32].clone()' \
    "$TESTDIR/mp-replicated/consolidated.01.pth: tensor 'norm.weight' is [32] here and [64] in consolidated.00.pth (a replicated tensor)"
mp_bad offdim 's1["layers.0.attention.wq.weight"] = s1["layers.0.attention.wq.weight"][:, :48].clone()' \
    "$TESTDIR/mp-offdim/consolidated.01.pth: tensor 'layers.0.attention.wq.weight' is [32, 48] here and [32, 64] in consolidated.00.pth off the split dim 0"
mp_bad embed 's0["tok_embeddings.weight"] = s0["tok_embeddings.weight"][:, :24].clone(); s1["tok_embeddings.weight"] = s1["tok_embeddings.weight"][:, :24].clone()' \
    "$TESTDIR/mp-embed/consolidated.00.pth: tensor 'tok_embeddings.weight': [101, 24] in each of 2 shards is a split of neither dim 1 nor dim 0 of a model 64 wide"
mp_bad onedim 's0["norm.weight"] = s0["norm.weight"][:32].clone(); s1["norm.weight"] = s1["norm.weight"][32:].clone(); s0["output.weight"] = s0["output.weight"][0].clone(); s1["output.weight"] = s1["output.weight"][0].clone()' \
    "$TESTDIR/mp-onedim/consolidated.00.pth: tensor 'output.weight' is split across the shards but not 2-D"
cp -r "$TESTDIR/meta-mp" "$TESTDIR/mp-gap"
cp "$TESTDIR/mp-gap/consolidated.01.pth" "$TESTDIR/mp-gap/consolidated.03.pth"
expect_mount_refused "ckptfs: $TESTDIR/mp-gap/consolidated.03.pth: model-parallel shards must be numbered consolidated.00.pth, 01, ... without a gap (consolidated.02.pth is missing)" "$TESTDIR/mp-gap"
# rank 01 missing: 00 alone before the gap must not be merged with 02 as if whole
mkdir "$TESTDIR/mp-hole"
cp "$TESTDIR/meta-mp/params.json" "$TESTDIR/meta-mp/consolidated.00.pth" "$TESTDIR/mp-hole/"
cp "$TESTDIR/meta-mp/consolidated.01.pth" "$TESTDIR/mp-hole/consolidated.02.pth"
expect_mount_refused "ckptfs: $TESTDIR/mp-hole/consolidated.02.pth: model-parallel shards must be numbered consolidated.00.pth, 01, ... without a gap (consolidated.01.pth is missing)" "$TESTDIR/mp-hole"

note "=== inspect and export"
out=$("$CKPTFS" inspect "$TESTDIR/nanogpt") || fail "inspect nanogpt failed"
for want in "format:        torch zip (ckpt.pt)" "weights under 'model'" "optimizer (skipped" "iter_num=5000" \
    "nanoGPT: GPT-2 config.json generated from model_args"; do
    case $out in *"$want"*) ;; *) fail "inspect nanogpt: no '$want' in:
$out" ;; esac
done
out=$("$CKPTFS" inspect "$TESTDIR/gpt2-legacy") || fail "inspect gpt2-legacy failed"
case $out in *"format:        torch legacy (pytorch_model.bin)"*) ;; *) fail "inspect gpt2-legacy: $out" ;; esac
out=$("$CKPTFS" inspect "$TESTDIR/meta") || fail "inspect meta failed"
case $out in *"format:        torch zip (consolidated.00.pth)"*"Meta/llama2.c LLaMA naming"*) ;; *) fail "inspect meta: $out" ;; esac
# Safetensors and .bin side by side: the safetensors are served, as loaders do.
mkdir "$TESTDIR/both"
cp "$LLAMA"/* "$TESTDIR/llama-zip/pytorch_model.bin" "$TESTDIR/both/"
out=$("$CKPTFS" inspect "$TESTDIR/both") || fail "inspect both failed"
case $out in *"format:        safetensors, 2 files + model.safetensors.index.json"*) ;; *) fail "inspect both: $out" ;; esac
# A Trainer's side files (their pickles hold other globals) are not taken for weights.
fixture hostile "$LLAMA" "$TESTDIR/hostile"
mkdir "$TESTDIR/trainer-dir"
cp "$TESTDIR/nanogpt/ckpt.pt" "$TESTDIR/trainer-dir/"
cp "$TESTDIR/hostile/pytorch_model.bin" "$TESTDIR/trainer-dir/training_args.bin"
out=$("$CKPTFS" inspect "$TESTDIR/trainer-dir") || fail "inspect trainer-dir failed"
case $out in *"format:        torch zip (ckpt.pt)"*) ;; *) fail "inspect trainer-dir: $out" ;; esac
"$CKPTFS" export "$TESTDIR/llama-zip" hf "$TESTDIR/export-hf" >/dev/null || fail "export llama-zip hf failed"
"$PYTHON" - "$TESTDIR/export-hf" "$TESTDIR/llama-zip" <<'PY' || fail "export llama-zip: hf differs from torch.load"
import os, sys
sys.path.insert(0, os.environ["srcdir"] + "/tests")
import check_torch
tensors, dups = check_torch.load_source(sys.argv[2])
got = check_torch.read_hf(sys.argv[1])
assert sorted(got) == sorted(k for k, _ in tensors if k not in dups), sorted(got)
for k, v in tensors:
    check_torch.expect_tensor("export", k, got[k], v)
PY

fusermount3 -u "$TESTDIR/ref-gpt2"
fusermount3 -u "$TESTDIR/ref-llama"
wait "$REF_GPT2_PID" "$REF_LLAMA_PID" || fail "reference daemon exited with status $?"

note "=== bad inputs"
expect_mount_refused "ckptfs: $TESTDIR/hostile/pytorch_model.bin: pickle refers to the global 'posix.system', which is not allowed (ckptfs reads tensors and plain data only and never runs code from a checkpoint)" "$TESTDIR/hostile"
[ ! -e "$TESTDIR/hostile/pwned" ] || fail "the hostile pickle's command ran"

B=$TESTDIR/bad
mkdir -p "$B/trunc" "$B/deflate" "$B/lying" "$B/legacy-trunc"
BIN=$TESTDIR/llama-zip/pytorch_model.bin
head -c $(($(stat -c %s "$BIN") / 2)) "$BIN" >"$B/trunc/pytorch_model.bin"
expect_mount_refused "ckptfs: $B/trunc/pytorch_model.bin: no zip end-of-central-directory record (truncated zip?)" "$B/trunc"
"$PYTHON" - "$BIN" "$B/deflate/pytorch_model.bin" <<'PY'
import sys, zipfile
src = zipfile.ZipFile(sys.argv[1])
with zipfile.ZipFile(sys.argv[2], "w") as dst:
    for i in src.infolist():
        dst.writestr(i.filename, src.read(i.filename),
                     compress_type=zipfile.ZIP_DEFLATED if i.filename.endswith("data.pkl") else zipfile.ZIP_STORED)
PY
expect_mount_refused "ckptfs: $B/deflate/pytorch_model.bin: 'pytorch_model/data.pkl' is compressed (method 8); only stored entries can be mapped" "$B/deflate"
# A legacy file whose first storage claims one element more than it stores,
# and one cut short; the script prints the two expected messages.
LEG=$TESTDIR/gpt2-legacy/pytorch_model.bin
"$PYTHON" - "$LEG" "$B/lying/pytorch_model.bin" "$B/legacy-trunc/pytorch_model.bin" >"$B/want" <<'PY' ||
import io, pickle, struct, sys
data = open(sys.argv[1], "rb").read()

class G:
    def __init__(self, m, n):
        self.name = n
    def __call__(self, *a):
        return OD() if self.name == "OrderedDict" else ("call", a)

class OD(dict):
    pass

class U(pickle.Unpickler):
    def find_class(self, m, n):
        return G(m, n)
    def persistent_load(self, pid):
        return pid

f = io.BytesIO(data)
objs = [U(f).load() for _ in range(4)]
keys = U(f).load()
pos = f.tell()
esize = {}
def walk(o, depth=0):
    if isinstance(o, tuple) and len(o) >= 5 and o[0] == "storage":
        esize[o[2]] = {"FloatStorage": 4, "ByteStorage": 1, "BoolStorage": 1}[o[1].name]
    elif isinstance(o, (tuple, list)):
        for x in o:
            walk(x)
    elif isinstance(o, dict):
        for x in o.values():
            walk(x)
walk(objs[3])
n0 = struct.unpack("<Q", data[pos:pos + 8])[0]
open(sys.argv[2], "wb").write(data[:pos] + struct.pack("<Q", n0 + 1) + data[pos + 8:])
print("%s: storage '%s' declares %d elements, but the file stores %d" % (sys.argv[2], keys[0], n0, n0 + 1))
# Cut through the middle of the largest storage: torch orders legacy
# storages by key, which is a memory address, so the last one may be a
# few bytes only and a cut from the end could land in its count instead.
spans = []
for k in keys:
    n = struct.unpack("<Q", data[pos:pos + 8])[0] * esize[k]
    spans.append((n, pos + 8, k))
    pos += 8 + n
n, at, k = max(spans, key=lambda s: s[0])
open(sys.argv[3], "wb").write(data[:at + n // 2])
print("%s: storage '%s': %d bytes at %d run past the end of the file (truncated?)" % (sys.argv[3], k, n, at))
PY
    fail "making the bad legacy files failed"
expect_mount_refused "ckptfs: $(sed -n 1p "$B/want")" "$B/lying"
expect_mount_refused "ckptfs: $(sed -n 2p "$B/want")" "$B/legacy-trunc"
note "PASS"
