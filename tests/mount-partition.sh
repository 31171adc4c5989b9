#!/bin/bash
# mount-partition.sh - the partition views per-layer/, tp-N/rank-K/,
# pp-N/stage-K/, their casts, and .ckptfs/stats.
#
# For llama-gqa8 (8 heads, 2 KV heads: tp-2, tp-4 and tp-8 valid, the KV
# heads replicated for 4 and 8; tp-3 not), qwen2-oddvocab (biases, tied, vocab
# 101: zero-padded vocab shards), qwen3 (per-head q/k norms, replicated;
# heads * head_dim != hidden), gpt2 and mixtral (override with
# CKPTFS_PARTITION_PRESETS): generate it with examples/gen-model.py, mount it
# and run tests/check_partition.py, which computes every layer file, rank
# shard and pipeline stage from the HF source with numpy and compares them
# bit for bit (see its docstring); then llama-gqa8 once more with
# -o tp=hf,per_layer=native (HF names in tp-N and pp-N, native names in
# per-layer/).  Stats: a fresh mount of llama-gqa8, tp-4/rank-2/
# model.safetensors read with O_DIRECT, then .ckptfs/stats must show that the
# rank read no more of the source than its share (partitioned/4 + its KV head
# + replicated tensors) and that views["tp-4"] is the file's size.
# Every case runs even when an earlier one fails; the test fails at the end
# naming the cases that did.  Every mount is unmounted and its daemon must
# exit 0.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

FAILED=

check_partition() {
    note "check_partition.py $*"
    "$PYTHON" "$srcdir/tests/check_partition.py" "$@"
}

src_of() {
    local src=$TESTDIR/src-$1
    [ -d "$src" ] || gen_model "$1" "$src" >&2
    printf '%s\n' "$src"
}

# partition_case NAME PRESET [CHECK OPTION...] [-- MOUNT OPTION...]
partition_case() {
    local name=$1 preset=$2 src mnt copts=() mopts=()
    shift 2
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        copts+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    mopts=("$@")
    note "=== $name"
    src=$(src_of "$preset")
    mnt=$TESTDIR/mnt-$name
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt" ${mopts[@]+"${mopts[@]}"}
    if [ "$preset" = llama-gqa8 ]; then
        # the issue's cases, spelled out
        for n in 2 4 8; do
            [ -d "$mnt/tp-$n/rank-$((n - 1))" ] ||
                { note "FAIL: $name: tp-$n/rank-$((n - 1)) missing"; FAILED="$FAILED $name"; }
        done
        if [ -e "$mnt/tp-3" ] || [ -e "$mnt/tp-3/rank-0" ]; then
            note "FAIL: $name: tp-3 exists"
            FAILED="$FAILED $name"
        fi
    fi
    if check_partition ${copts[@]+"${copts[@]}"} "$src" "$mnt"; then
        note "=== $name: PASS"
    else
        note "=== $name: FAIL"
        FAILED="$FAILED $name"
    fi
    umount_ckptfs
}

for p in ${CKPTFS_PARTITION_PRESETS:-llama-gqa8 qwen2-oddvocab qwen3 gpt2 mixtral}; do
    partition_case "$p" "$p"
done
partition_case llama-gqa8-hf llama-gqa8 --tp-hf --per-layer-native -- \
    -o tp=hf,per_layer=native

# Stats: a fresh mount, nothing read before tp-4/rank-2.
note "=== stats"
src=$(src_of llama-gqa8)
mnt=$TESTDIR/mnt-stats
mkdir "$mnt"
mount_ckptfs "$src" "$mnt"
if check_partition --stats 4 2 "$src" "$mnt"; then
    note "=== stats: PASS"
else
    note "=== stats: FAIL"
    FAILED="$FAILED stats"
fi
umount_ckptfs

[ -z "$FAILED" ] || fail "failed cases:$FAILED"
note "PASS"
