#!/bin/bash
# mount-prefetch.sh - tensor-aware read-ahead (issue 14): it changes no byte,
# .ckptfs/stats counts it, and reading one layer reads about that layer.
#
# A LLaMA-shaped bf16 checkpoint of ~20 MB (hidden 512, 4 layers: files well
# past the 2 MiB a sequence must reach before a window opens) is generated
# with examples/gen-model.py's own builders. hf/, native/, hf@fp16/,
# tp-4/rank-1/ (row-parallel o/down: strided rows) and pp-2/stage-1/ are read
# through a mount with -o prefetch=0 and one with the default window; the
# bytes must be equal, and hf/ equal to the source. The second mount's
# stats must show read-ahead (view bytes ahead and source bytes asked for,
# > 0), bytes used <= bytes ahead, and the first none. A fresh mount then
# reads per-layer/layer-002.safetensors: the source bytes read
# (source_bytes_read, summed over files) must be that layer's tensor bytes
# exactly (counted from the source headers with independent code), and the
# source bytes asked for ahead at most 10% + 256 KiB more.
# Last, the reply path: hf/ read in 1 MiB O_DIRECT requests (the kernel's
# largest, unless the daemon asked for smaller ones to fit its splice pipe)
# must hand at least 90% of its source bytes to the kernel as file ranges
# (bytes_spliced), and none with -o no_splice.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

SRC=$TESTDIR/src
gen_llama_bf16 "$SRC" 14 512 4 8 2 1024 1000 || hard_error "generating the model failed"

VIEWS="hf native hf@fp16 tp-4/rank-1 pp-2/stage-1"

copy_views() { # copy_views MNT DEST: every file of VIEWS, read with cat
    local v f
    for v in $VIEWS; do
        mkdir -p "$2/$v"
        for f in "$1/$v"/*; do
            [ -f "$f" ] || continue
            cat "$f" >"$2/$v/$(basename "$f")" || fail "reading $f failed"
        done
    done
}

MNT=$TESTDIR/mnt
mkdir "$MNT"

mount_ckptfs "$SRC" "$MNT" -o cache=off,prefetch=0
copy_views "$MNT" "$TESTDIR/off"
[ "$(stat_of "$MNT" readahead/source_bytes_requested)" = 0 ] || fail "prefetch=0 still asked for read-ahead"
[ "$(stat_of "$MNT" readahead/view_bytes_ahead)" = 0 ] || fail "prefetch=0 still read ahead"
umount_ckptfs

mount_ckptfs "$SRC" "$MNT" -o cache=off
copy_views "$MNT" "$TESTDIR/on"
asked=$(stat_of "$MNT" readahead/source_bytes_requested)
ahead=$(stat_of "$MNT" readahead/view_bytes_ahead)
used=$(stat_of "$MNT" readahead/view_bytes_used)
note "read-ahead: source bytes asked $asked, view bytes ahead $ahead, used $used"
[ "$asked" -gt 0 ] || fail "no source bytes asked for ahead"
[ "$ahead" -gt 0 ] || fail "no view bytes read ahead"
[ "$used" -gt 0 ] || fail "no read-ahead counted as used"
[ "$used" -le "$ahead" ] || fail "more read-ahead used ($used) than read ahead ($ahead)"
umount_ckptfs

diff -r "$TESTDIR/off" "$TESTDIR/on" || fail "read-ahead changed bytes"
n=0
for f in "$SRC"/*.safetensors; do
    cmp "$f" "$TESTDIR/on/hf/$(basename "$f")" || fail "hf/$(basename "$f") differs from the source"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || hard_error "no source shards generated"
note "views equal with and without read-ahead; hf/ equal to the source"

# One layer through a fresh mount.
layer_bytes=$("$PYTHON" - "$SRC" <<'PY'
import json, struct, sys, glob
total = 0
for path in glob.glob(sys.argv[1] + "/*.safetensors"):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    for name, t in head.items():
        if name.startswith("model.layers.2."):
            total += t["data_offsets"][1] - t["data_offsets"][0]
print(total)
PY
)
mount_ckptfs "$SRC" "$MNT" -o cache=off
cat "$MNT/per-layer/layer-002.safetensors" >/dev/null || fail "reading layer-002 failed"
read_src=$(stat_of "$MNT" source_bytes_read)
asked=$(stat_of "$MNT" readahead/source_bytes_requested)
note "layer-002: tensor bytes $layer_bytes, source bytes read $read_src, asked for ahead $asked"
[ "$read_src" = "$layer_bytes" ] || fail "layer-002 read $read_src source bytes, its tensors are $layer_bytes"
[ "$asked" -le $((layer_bytes + layer_bytes / 10 + 262144)) ] ||
    fail "layer-002 asked for $asked source bytes ahead, more than its $layer_bytes + 10% + 256 KiB"
umount_ckptfs

# The reply path: large reads of a passthrough file are spliced, not copied.
hf_file=$(cd "$SRC" && LC_ALL=C ls ./*.safetensors | head -n 1)
hf_file=${hf_file#./}
# A third mount runs without CAP_SYS_RESOURCE (as an unprivileged user
# does): the pipe cannot grow past fs.pipe-max-size, and ckptfs must ask
# the kernel for reads that fit it.
for opts in "cache=off" "cache=off,no_splice" "cache=off,nocap"; do
    CKPTFS_WRAP=
    if [ "$opts" = "cache=off,nocap" ]; then
        if ! command -v setpriv >/dev/null || ! setpriv --bounding-set=-sys_resource true 2>/dev/null; then
            note "setpriv cannot drop CAP_SYS_RESOURCE here: the unprivileged pipe case is left out"
            continue
        fi
        CKPTFS_WRAP="setpriv --bounding-set=-sys_resource --inh-caps=-sys_resource"
        opts=cache=off
    fi
    mount_ckptfs "$SRC" "$MNT" -o "$opts"
    dd if="$MNT/hf/$hf_file" of="$TESTDIR/direct.out" bs=1M iflag=direct status=none ||
        fail "O_DIRECT read of hf/$hf_file failed"
    cmp "$SRC/$hf_file" "$TESTDIR/direct.out" || fail "O_DIRECT read of hf/$hf_file differs from the source"
    sourced=$(stat_of "$MNT" bytes_from_source)
    spliced=$(stat_of "$MNT" bytes_spliced)
    note "-o $opts: hf/$hf_file in 1 MiB reads: $sourced bytes from the source, $spliced spliced"
    [ "$sourced" -gt 1048576 ] || hard_error "hf/$hf_file has only $sourced source bytes"
    pipe=$(stat_of "$MNT" reply/pipe_size)
    max_read=$(stat_of "$MNT" reply/max_read)
    note "  pipe $pipe bytes, max_read $max_read"
    # a 1 MiB reply needs its header and a page per piece beside it
    case $opts in
    *no_splice) ;;
    *) if [ "$max_read" = 0 ]; then
           [ "$pipe" -gt 1048576 ] || fail "a $pipe-byte pipe holds no 1 MiB reply, yet no max_read was asked"
       elif [ "$max_read" -ge 1048576 ] || [ "$max_read" -ge "$pipe" ]; then
           fail "max_read $max_read does not fit the $pipe-byte pipe below 1 MiB"
       fi ;;
    esac
    if [ -n "$CKPTFS_WRAP" ] && [ "$pipe" -gt "$(cat /proc/sys/fs/pipe-max-size)" ]; then
        fail "without CAP_SYS_RESOURCE the pipe grew to $pipe bytes, past fs.pipe-max-size"
    fi
    case $opts in
    *no_splice) [ "$spliced" = 0 ] || fail "-o no_splice still spliced $spliced bytes" ;;
    *) [ $((spliced * 10)) -ge $((sourced * 9)) ] ||
        fail "only $spliced of $sourced source bytes spliced: large replies were copied" ;;
    esac
    umount_ckptfs
done
CKPTFS_WRAP=
note PASS
