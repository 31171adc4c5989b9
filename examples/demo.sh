#!/bin/sh
# demo.sh: the README quick start, end to end.
#
# Usage, from the top of a built tree (as root, or a user who may mount
# FUSE file systems):  sh examples/demo.sh
#
# Generates the small tiny-llama checkpoint (bf16, GQA, two shards) into a
# temporary directory with examples/gen-model.py, mounts it with ckptfs,
# looks around the mount, loads one tensor with numpy and checks it against
# the source, shows its extended attributes, and unmounts. Exits non-zero
# on any failure; the mount and the temporary directory are removed on
# exit in every case.
#
# Environment: CKPTFS (default ./src/ckptfs), PYTHON (default
# /usr/bin/python3, which needs numpy).

set -eu

CKPTFS=${CKPTFS:-./src/ckptfs}
PYTHON=${PYTHON:-/usr/bin/python3}
GEN=$(dirname "$0")/gen-model.py
TENSOR=model.norm.weight

fail() {
	echo "demo: $*" >&2
	exit 1
}

[ -x "$CKPTFS" ] || fail "$CKPTFS: not an executable (build first, or set CKPTFS)"
[ -f "$GEN" ] || fail "$GEN: missing"
[ -c /dev/fuse ] || fail "/dev/fuse is missing: FUSE is not available here"
command -v fusermount3 >/dev/null || fail "fusermount3 not found (install fuse3)"
"$PYTHON" -c 'import numpy' 2>/dev/null || fail "$PYTHON cannot import numpy (set PYTHON)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-demo.XXXXXX")
SRC=$TMP/tiny-llama
MNT=$TMP/mnt

mounted() {
	grep -q " $MNT fuse" /proc/mounts
}

cleanup() {
	status=$?
	cd /
	if mounted; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null || :
	fi
	rm -rf "$TMP"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# show CMD...: print the command as typed, then run it.
show() {
	echo
	echo "\$ $*"
	"$@"
}

echo "# a synthetic tiny-llama checkpoint"
"$PYTHON" "$GEN" tiny-llama "$SRC" >/dev/null
ls -l "$SRC"

mkdir "$MNT"
show "$CKPTFS" "$SRC" "$MNT" || fail "ckptfs failed to mount $SRC"

# ckptfs returns once mounted; wait a little in case of a slow start.
i=0
until mounted; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "$MNT is not mounted after 10 s"
	sleep 0.1
done

cd "$MNT"
show ls
show ls -l hf tensors
show cat README
# computed views: the fused layout, a tensor-parallel shard, a cast
show ls -l native tp-2/rank-0 native@fp32
# llama.cpp's file, in the source dtype and quantised to Q8_0 on read
show ls -l gguf gguf@q8_0

NPY=$MNT/tensors/$TENSOR.npy
echo
echo "\$ $PYTHON -c 'import numpy; print(numpy.load(\"tensors/$TENSOR.npy\", mmap_mode=\"r\"))'"
"$PYTHON" - "$NPY" "$SRC" "$TENSOR" <<'EOF'
import json, os, struct, sys
import numpy as np

npy, src, name = sys.argv[1:]
a = np.load(npy, mmap_mode="r")
print("dtype", a.dtype, "shape", a.shape)
print(np.asarray(a))

# The same tensor straight from the source safetensors, widened by hand.
index = os.path.join(src, "model.safetensors.index.json")
if os.path.exists(index):
    with open(index) as f:
        shard = json.load(f)["weight_map"][name]
else:
    shard = "model.safetensors"
with open(os.path.join(src, shard), "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    info = json.loads(f.read(n))[name]
    begin, end = info["data_offsets"]
    f.seek(8 + n + begin)
    raw = f.read(end - begin)
if info["dtype"] == "BF16":
    want = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
else:
    sys.exit("demo expects a BF16 tensor, got " + info["dtype"])
want = want.reshape(info["shape"])
same = a.dtype == np.dtype("<f4") and a.shape == want.shape and \
    np.array_equal(np.asarray(a).view("<u4"), want.view("<u4"))
print("bit-identical to", shard, "widened from BF16:", same)
sys.exit(0 if same else 1)
EOF

if command -v getfattr >/dev/null; then
	show getfattr -d "tensors/$TENSOR.npy"
else
	echo
	echo "(getfattr not installed; the attributes through python)"
	"$PYTHON" -c 'import os, sys
for k in sorted(os.listxattr(sys.argv[1])):
    print(k + "=\"" + os.getxattr(sys.argv[1], k).decode() + "\"")' "tensors/$TENSOR.npy"
fi

cd /
show fusermount3 -u "$MNT"
i=0
while mounted; do
	i=$((i + 1))
	[ "$i" -le 100 ] || fail "$MNT still mounted after 10 s"
	sleep 0.1
done
echo
echo "demo: ok"
