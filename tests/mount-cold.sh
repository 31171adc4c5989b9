#!/bin/bash
# mount-cold.sh - row-parallel partitions read from a cold source (issue 14):
# their strided rows arrive by pread of covering spans, not a page fault per
# row, with the same bytes; on shared storage only the pages the rows touch.
#
# A bf16 LLaMA-shaped checkpoint (hidden 256, intermediate 16384: a tp-4
# down_proj row is 32 KiB, a rank's piece of it 8 KiB, so whole pages of a
# row belong to other ranks) is generated with examples/gen-model.py's own
# builders. Its pages are dropped from the page cache (posix_fadvise
# DONTNEED on the test's own file; checked with mincore, skipped where the
# file system keeps them, e.g. tmpfs), then tp-4/rank-1/ is read:
#  - bytes equal to the same files read with the source cached (copied from
#    the mapping, the path the gather replaces);
#  - with -o read_gap=65536 (for a rotating disk), .ckptfs/stats gather
#    counts pread requests and their bytes, both > 0, and the rows of a
#    tensor come in few large requests: at most 4 per MiB of gathered view
#    bytes + 8 (a request per row would be 128 per MiB here);
#  - with -o read_gap=4095 (the default) the bytes
#    the gathers read are at most the pages the rank's row pieces touch, and
#    the source pages cached after the read (all that was asked of the
#    storage: read-ahead, splice and gathers) at most the pages of rank 1's
#    bytes + 1/16, both counted from the source header with independent
#    code
#    (a down_proj row is 8 pages, a rank's piece 2 of them: reading
#    other ranks' rows would be about twice that).
# Then, the source behind a FUSE file system (ckptfs's own hf/ view), as
# shared storage would be: the same bytes, the row pieces of a page or more
# read with O_DIRECT (gather.direct_bytes), and the bytes pulled from the
# lower file system the pieces' own plus the pages of the rest (+1/16), not
# the pieces' pages. Last, a cold per-layer/layer-001 read caches that
# layer's pages and little more, and the stats name the source's device.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

SRC=$TESTDIR/src
gen_llama_bf16 "$SRC" 41 256 2 4 4 16384 512 || hard_error "generating the model failed"

# cached_pages [drop]: how many pages of the source the page cache holds
# (after dropping them with "drop": the pages a mapping holds stay).
cached_pages() {
    "$PYTHON" - "$SRC/model.safetensors" "${1:-}" <<'PY'
import ctypes, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
if sys.argv[2] == "drop":
    os.fdatasync(fd)  # dirty pages stay cached
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
vec = (ctypes.c_ubyte * pages)()
if addr in (None, ctypes.c_void_p(-1).value) or libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
    print(pages)  # cannot tell: as if nothing was dropped
else:
    print(sum(v & 1 for v in vec))
PY
}

# rank1_bytes FILE: from FILE's safetensors header, with independent code,
# what tp-4 rank 1 reads (row-parallel o_proj/down_proj: a quarter of each
# row; the other matrices: a quarter of the rows, contiguous; vectors
# whole): the bytes of the pages its row pieces touch, their own bytes,
# the bytes of the pages all its bytes touch; then the bytes of its row
# pieces of a page or more, the bytes of the pages of the rest of its
# bytes, and the bytes of the pages those pieces of a page or more touch.
rank1_bytes() {
    "$PYTHON" - "$1" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    head = json.loads(f.read(n))
base, pg, rank, ranks = 8 + n, 4096, 1, 4
row_pages, all_pages, nbytes = set(), set(), 0
exact, rest, paged = 0, set(), set()
def touch(s, lo, n):
    s.update(range(lo // pg, (lo + n - 1) // pg + 1))
for name, t in head.items():
    if name == "__metadata__":
        continue
    start = base + t["data_offsets"][0]
    size = t["data_offsets"][1] - t["data_offsets"][0]
    if len(t["shape"]) == 1:
        touch(all_pages, start, size)
        touch(rest, start, size)
        continue
    rows, cols = t["shape"]
    row = cols * 2
    if name.endswith(("o_proj.weight", "down_proj.weight")):
        piece = row // ranks
        for r in range(rows):
            lo = start + r * row + rank * piece
            touch(row_pages, lo, piece)
            touch(all_pages, lo, piece)
            nbytes += piece
            if piece >= pg:
                exact += piece
                touch(paged, lo, piece)
            else:
                touch(rest, lo, piece)
    else:  # q, k, v, gate, up, embed, lm_head: a quarter of the rows
        part = size // ranks
        touch(all_pages, start + rank * part, part)
        touch(rest, start + rank * part, part)
print(len(row_pages) * pg, nbytes, len(all_pages) * pg, exact, len(rest) * pg, len(paged) * pg)
PY
}

read -r share_pages share_bytes rank_pages _ < <(rank1_bytes "$SRC/model.safetensors")
[ "$share_bytes" -gt 0 ] || hard_error "no row-parallel tensors in the fixture"

MNT=$TESTDIR/mnt
mkdir "$MNT"

# The reference: the source cached, rows copied from the mapping.
cat "$SRC/model.safetensors" >/dev/null
mount_ckptfs "$SRC" "$MNT" -o cache=off,prefetch=0
mkdir "$TESTDIR/warm"
for f in "$MNT"/tp-4/rank-1/*; do cat "$f" >"$TESTDIR/warm/$(basename "$f")"; done
[ "$(stat_of "$MNT" gather/requests)" = 0 ] || fail "a cached source was read with pread"
umount_ckptfs

# read_gap=65536 runs without the read-ahead (prefetch=0): when its advice
# landed first, the rows were cached before any gather, and whether a
# gather read anything was up to thread timing. read_gap=4095 runs with it,
# as mounted by default: prefetch=0 also leaves the kernel's own read-ahead
# on (it is turned off only for ckptfs's own), which pulls 8 MiB windows of
# other ranks' rows, and the bound below is on all the storage was asked.
for gap in 65536 4095; do
    opts="cache=off,read_gap=$gap"
    [ "$gap" = 4095 ] || opts="$opts,prefetch=0"
    mount_ckptfs "$SRC" "$MNT" -o "$opts"
    left=$(cached_pages drop)
    if [ "$left" -gt 16 ]; then
        umount_ckptfs
        skip "the file system keeps $left pages of the source cached (tmpfs?): no cold read to test"
    fi
    mkdir "$TESTDIR/cold-$gap"
    for f in "$MNT"/tp-4/rank-1/*; do cat "$f" >"$TESTDIR/cold-$gap/$(basename "$f")"; done
    resident=$(($(cached_pages) * 4096))
    requests=$(stat_of "$MNT" gather/requests)
    bytes=$(stat_of "$MNT" gather/source_bytes_read)
    gap_set=$(stat_of "$MNT" readahead/gap)
    note "read_gap=$gap ($gap_set): $requests gather requests, $bytes bytes; rank-1 row pieces $share_bytes bytes on $share_pages bytes of pages; source now cached $resident bytes, rank-1's pages $rank_pages"
    umount_ckptfs
    diff -r "$TESTDIR/warm" "$TESTDIR/cold-$gap" || fail "read_gap=$gap: a cold read changed the bytes"
    [ "$gap_set" = "$gap" ] || fail "-o read_gap=$gap: the stats say the gap is $gap_set"
    case $gap in
    65536)
        [ "$requests" -gt 0 ] && [ "$bytes" -gt 0 ] || fail "read_gap=$gap: the cold read gathered nothing with pread"
        max=$((share_bytes * 4 / 1048576 + 8))
        [ "$requests" -le "$max" ] || fail "$requests gather requests for $share_bytes bytes of rows (at most $max)"
        ;;
    *)
        [ "$bytes" -le "$share_pages" ] ||
            fail "read_gap=$gap: gathers read $bytes bytes, more than the $share_pages bytes of pages the pieces touch"
        # What the storage was asked for in all (read-ahead, splice, gathers):
        # rank 1's pages and little more, not the other ranks' rows.
        [ "$resident" -le $((rank_pages + rank_pages / 16)) ] ||
            fail "read_gap=$gap: $resident source bytes cached after the read, rank 1's pages are $rank_pages (+1/16)"
        ;;
    esac
done

# Shared storage: the source behind a FUSE file system, as a network one
# would be: ckptfs itself (mount A's hf/, the same tensors under a header
# of its own) is the lower file system of mount B. B's strided pieces of
# a page or more (down_proj's 8 KiB of each 32 KiB row, over three pages)
# are read with O_DIRECT, their own bytes: what B pulls from A is rank 1's
# row pieces exactly and the pages of the rest, not the pieces' pages.
LOWER=$TESTDIR/lower
mkdir "$LOWER"
# A reads ahead nothing of its own (readahead=4: its kernel window is a
# page): what B pulls is what B asks for. The kernel's read-ahead on B's
# buffered reads of A, a window past each (sshfs: 128 KiB), depends on
# which of B's threads gets there first, and under load pulled 2-4 MB
# more here, run to run.
mount_ckptfs "$SRC" "$LOWER" -o cache=off,prefetch=0,readahead=4
A_MNT=$CKPTFS_MNT A_PID=$CKPTFS_PID A_LOG=$CKPTFS_LOG
read -r _ _ _ exact_bytes rest_pages paged_bytes < <(rank1_bytes "$LOWER/hf/model.safetensors")
[ "$exact_bytes" -gt 0 ] || hard_error "no row piece of a page or more in the fixture"
mkdir "$TESTDIR/upper"
mount_ckptfs "$LOWER/hf" "$TESTDIR/upper" -o cache=off
B_MNT=$CKPTFS_MNT
before=$(stat_of "$A_MNT" source_bytes_read)
mkdir "$TESTDIR/stacked"
for f in "$B_MNT"/tp-4/rank-1/*; do cat "$f" >"$TESTDIR/stacked/$(basename "$f")"; done
pulled=$(($(stat_of "$A_MNT" source_bytes_read) - before))
direct=$(stat_of "$B_MNT" gather/direct_requests)
direct_bytes=$(stat_of "$B_MNT" gather/direct_bytes)
umount_ckptfs
CKPTFS_MNT=$A_MNT CKPTFS_PID=$A_PID CKPTFS_LOG=$A_LOG
umount_ckptfs
note "stacked: B pulled $pulled bytes from A ($direct direct reads of $direct_bytes bytes); rank 1's pieces of a page or more are $exact_bytes bytes ($paged_bytes of pages), the pages of the rest $rest_pages"
diff -r "$TESTDIR/warm" "$TESTDIR/stacked" || fail "the rank read over a FUSE source changed the bytes"
# (a piece whose pages are cached already, by a neighbour read by pages,
# is copied from them)
# (smaller pieces of a page or more not yet cached, a norm or a piece cut
# at a reply's edge, are read direct too: at most the rank's bytes)
[ "$direct_bytes" -le $((exact_bytes + rest_pages)) ] && [ "$direct_bytes" -ge $((exact_bytes * 3 / 4)) ] ||
    fail "$direct_bytes bytes read direct, rank 1's row pieces of a page or more are $exact_bytes"
[ "$pulled" -le $((exact_bytes + rest_pages + rest_pages / 16)) ] ||
    fail "B pulled $pulled bytes from A: more than the pieces' $exact_bytes bytes + the rest's pages $rest_pages (+1/16)"

# Random access: one layer's file of per-layer/ from a cold source brings
# that layer's pages into the page cache and little more (the read-ahead's
# window opens only after 2 MiB read in sequence and stops at the end of
# the file; the kernel's own read-ahead is off on a block device), so a
# loader hopping between layers does not pull the model. From the header:
# the pages of layer 1's tensors.
read -r layer_bytes layer_pages < <("$PYTHON" - "$SRC/model.safetensors" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    head = json.loads(f.read(n))
base, pg, pages, nbytes = 8 + n, 4096, set(), 0
for name, t in head.items():
    if ".layers.1." not in name:
        continue
    lo, hi = (base + o for o in t["data_offsets"])
    pages.update(range(lo // pg, (hi - 1) // pg + 1))
    nbytes += hi - lo
print(nbytes, len(pages) * pg)
PY
)
[ "$layer_bytes" -gt 0 ] || hard_error "no layer 1 in the fixture"
mount_ckptfs "$SRC" "$MNT" -o cache=off
cached_pages drop >/dev/null
cat "$MNT/per-layer/layer-001.safetensors" >"$TESTDIR/layer-001.safetensors"
resident=$(($(cached_pages) * 4096))
sourced=$(stat_of "$MNT" source_bytes_read)
# The policy of each source device is in the stats: here one, the source's.
devices=$("$PYTHON" -c 'import json,sys
print(" ".join(d["device"] for d in json.load(open(sys.argv[1]))["readahead"]["devices"]))' "$MNT/.ckptfs/stats")
umount_ckptfs
note "per-layer/layer-001: sourced $sourced bytes, layer 1 is $layer_bytes bytes on $layer_pages bytes of pages; source now cached $resident bytes; devices $devices"
[ "$sourced" = "$layer_bytes" ] || fail "per-layer/layer-001 took $sourced source bytes, layer 1 has $layer_bytes"
[ "$resident" -ge "$layer_bytes" ] || fail "only $resident source bytes cached after reading layer 1's $layer_bytes"
[ "$resident" -le $((layer_pages + layer_pages / 16)) ] ||
    fail "$resident source bytes cached after reading layer 1, its pages are $layer_pages (+1/16)"
[ "$devices" = "$(stat -c '%Hd:%Ld' "$SRC/model.safetensors")" ] ||
    fail "the stats' read-ahead devices are '$devices', the source is on $(stat -c '%Hd:%Ld' "$SRC/model.safetensors")"
note PASS
