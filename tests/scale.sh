#!/bin/bash
# scale.sh - views of a checkpoint with 20,000 tensors are right (issue 16.6).
#
# A LLaMA-shaped checkpoint of 20,001 tiny tensors over 8 shards (2,222
# layers, made by bench/gen-many-tensors.py) through the no-mount commands:
# per-layer/ has exactly embed, head, one file per layer and index.json;
# its index maps every source tensor once, to the file of its layer; the
# headers of sampled layer files hold exactly that layer's tensors with
# the source's bytes. hf@bf16/ split with -o shard_size=1M: its index
# maps every tensor to the shard whose header holds it. Timing is the
# benchmark's business (bench/bench-scale.sh), not this test's.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

need_python
need_ckptfs
make_testdir

src=$TESTDIR/src
"$PYTHON" "$srcdir/bench/gen-many-tensors.py" 20000 "$src" >/dev/null || hard_error "gen-many-tensors.py failed"

"$CKPTFS" ls "$src" per-layer >"$TESTDIR/per-layer.ls" || fail "ls per-layer failed"
"$CKPTFS" cat "$src" per-layer/index.json >"$TESTDIR/per-layer.json" || fail "cat per-layer/index.json failed"
for f in embed head layer-000 layer-1234 layer-2221; do
    "$CKPTFS" cat "$src" "per-layer/$f.safetensors" >"$TESTDIR/$f.safetensors" || fail "cat per-layer/$f failed"
done
"$CKPTFS" ls -o shard_size=1M "$src" hf@bf16 >"$TESTDIR/hf.ls" || fail "ls hf@bf16 failed"
mkdir "$TESTDIR/hf"
for f in $(awk '/safetensors/ {print $2}' "$TESTDIR/hf.ls"); do
    "$CKPTFS" cat -o shard_size=1M "$src" "hf@bf16/$f" >"$TESTDIR/hf/$f" || fail "cat hf@bf16/$f failed"
done

"$PYTHON" - "$src" "$TESTDIR" <<'EOF' || fail "the views do not match the source"
import json, os, re, struct, sys

src, out = sys.argv[1], sys.argv[2]

def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n

def data(path, start, entry):
    b, e = entry["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + b)
        return f.read(e - b)

index = json.load(open(os.path.join(src, "model.safetensors.index.json")))["weight_map"]
shards = {}
for name, shard in index.items():
    if shard not in shards:
        shards[shard] = header(os.path.join(src, shard))
assert len(index) >= 20000, len(index)

def group(name):
    m = re.search(r"\.layers\.(\d+)\.", name)
    if m:
        return "layer-%03d" % int(m.group(1))
    return "head" if name in ("model.norm.weight", "lm_head.weight") else "embed"

# per-layer/: the files, then the index against an independent grouping
files = sorted(line.split()[1] for line in open(os.path.join(out, "per-layer.ls")))
layers = sorted({group(n) for n in index})
want = sorted([g + ".safetensors" for g in layers] + ["index.json"])
if files != want:
    sys.exit("per-layer/ lists %d files, expected %d (first differences: %s)" % (
        len(files), len(want), sorted(set(files) ^ set(want))[:5]))
wm = json.load(open(os.path.join(out, "per-layer.json")))["weight_map"]
if sorted(wm) != sorted(index):
    sys.exit("per-layer/index.json lists %d tensors, the source %d" % (len(wm), len(index)))
bad = [n for n in index if wm[n] != group(n) + ".safetensors"]
if bad:
    sys.exit("per-layer/index.json: %s in %s, expected %s" % (bad[0], wm[bad[0]], group(bad[0])))

# sampled files: exactly their group's tensors, bytes from the source
for g in ("embed", "head", "layer-000", "layer-1234", "layer-2221"):
    path = os.path.join(out, g + ".safetensors")
    h, start = header(path)
    names = sorted(n for n in index if group(n) == g)
    if sorted(h) != names:
        sys.exit("%s holds %s, expected %s" % (g, sorted(h)[:4], names[:4]))
    for n in names:
        sh, sstart = shards[index[n]]
        if data(path, start, h[n]) != data(os.path.join(src, index[n]), sstart, sh[n]):
            sys.exit("%s: tensor %s: bytes differ from the source" % (g, n))

# hf@bf16 in shards: every tensor in the shard its index names
hidx = json.load(open(os.path.join(out, "hf", "model.safetensors.index.json")))["weight_map"]
if sorted(hidx) != sorted(index):
    sys.exit("hf@bf16 index lists %d tensors, the source %d" % (len(hidx), len(index)))
held = {}
for f in sorted(set(hidx.values())):
    h, _ = header(os.path.join(out, "hf", f))
    for n in h:
        held[n] = f
nshards = len(set(hidx.values()))
if nshards < 3:
    sys.exit("hf@bf16 with shard_size=1M has %d shards, expected several" % nshards)
bad = [n for n in hidx if held.get(n) != hidx[n]]
if bad:
    sys.exit("hf@bf16 index maps %s to %s, it is in %s" % (bad[0], hidx[bad[0]], held.get(bad[0])))
print("scale: per-layer/ of %d files and hf@bf16 in %d shards match the source" % (len(files), nshards))
EOF
note "per-layer/ and sharded hf@bf16/ of 20,000 tensors match the source"
