#!/bin/bash
# File lists are meant to split (SC2086); S_* are set by eval in load_stats (SC2154).
# shellcheck disable=SC2086,SC2154
# mount-cache.sh - the hot-chunk cache seen through mounts: the disk tier is
# shared by mounts and survives them, bad entries are never served, the size
# bound holds, a cache directory that cannot be written only turns the disk
# tier off, and -o cache=off works.
#
# Sources: tiny-llama (bf16: native@fp32/, hf@fp32/ and tensors/*.npy are
# computed casts) and gpt2 (native/ computes transposes).  The expected bytes
# of every file come from `ckptfs cat -o cache=off`, which never touches the
# cache.  Mounts use cache_policy=always so that every computed chunk goes to
# disk and the counts are deterministic.  Statistics come from
# .ckptfs/stats; re-reads on a mount use O_DIRECT so that they reach the
# daemon instead of the kernel's page cache.
#
#   (a) second mount: tiny-llama mounted with cache_dir=$TESTDIR/c; the files
#       read fully are identical to the expected ones; the writer drains
#       (disk.pending == 0, disk.written == disk.misses == computed_chunks > 0
#       on that mount: with a memory tier nothing is recomputed; the
#       read-ahead asked for source bytes), an O_DIRECT re-read is served by
#       the memory tier (memory.hits grow, nothing computed, no source byte
#       advised: readahead.source_bytes_requested unchanged, its
#       view_bytes_cached grown); after unmount the directory holds exactly
#       one .zst per written chunk and no temp file.  A fresh mount reading
#       the same files computes nothing: disk.hits == number of entries,
#       disk.misses == 0, memory.misses == disk.hits, identical bytes, and
#       its read-ahead asks for no source byte (every chunk has an entry)
#       while readahead.view_bytes_cached > 0.  The
#       same for gpt2 native/ in the same directory (another source's
#       entries are never hits for it: its first mount has disk.hits == 0),
#       unmounted without waiting for the writer: the unmount flushes every
#       pending entry.  `ckptfs cat` with the same options leaves every
#       chunk it computed on disk when it exits: a mount then computes none.
#   (b) corrupt entries between mounts: in $TESTDIR/c a byte in the middle
#       of one entry's zstd frame is flipped, another entry is truncated to
#       half, a third is copied over a fourth of the same raw size (so only
#       the key tells them apart).  The next mounts (default policy) serve
#       identical bytes, bad_entries_deleted == 3 over both sources, nothing
#       else is computed, and each damaged file is gone or holds something
#       else now (rewritten).  After mounts with cache_policy=always the
#       entries are all there again and a last mount finds every one good:
#       no bad entry, nothing computed.
#   (c) two mounts of tiny-llama sharing one fresh cache dir, with a
#       cache_size of 70% of the data, so that entries are evicted by one
#       daemon while the other reads them; A has mem_cache=0 (every read
#       goes to the disk tier), B a 256KiB memory tier (memory evictions
#       under concurrent readers).  B, after A has read everything, gets disk
#       hits for chunks A computed; then 8 threads per mount read random
#       ranges with O_DIRECT for 3 s, every byte compared; no entry is ever
#       found bad (writes are atomic, evictions never expose half files);
#       both saw disk hits and evictions; after both unmount the directory is
#       within the bound with no temp file.  The daemons' peak RSS and the
#       unmount time (pending writes are flushed) are logged.
#   (d) cache_size=100000 (decimal bytes), cache_policy=always: after reading
#       the tiny-llama files (their entries are over twice the bound, as
#       checked from (a)) and unmounting, the directory's total (every file)
#       is <= 100000, some entries are left and the daemon counted disk
#       evictions.
#   (e) a cache_dir below a regular file: the mount works, bytes are right,
#       disk.enabled is false, nothing is written, and the mount log has
#       exactly one "warning: cache directory" line.
#   (f) -o cache=off: stats say cache.state "off"; reads are right, and
#       nothing appears in the default directory.  No cache_dir at all: the
#       entries go to $XDG_CACHE_HOME/ckptfs.
#   (g) a daemon killed (SIGKILL) while its writer is busy (8 readers,
#       mem_cache=0, a bound below the data, cache_level=19): the next mount
#       of the same directory finds no bad entry (entries appear whole or not
#       at all), has disk hits, and bytes are right.  Temp files left behind
#       are reported, not failed.
#   (i) a cache directory others can write (mode 1777, as /tmp): without
#       -o cache_shared the mount's bytes are right, disk.enabled is false,
#       nothing is written and the log has one "writable by group or
#       others" warning.  With -o cache_shared entries are written, each
#       starts "CKPTFSM1", the key file .ckptfs-key-UID is 0600 and 32
#       bytes, and a second cache_shared mount computes nothing (disk hits
#       == entries).
#   (k) -o cache_chunk=64KiB: the bytes are right and stats say
#       cache.chunk 65536.  A 1 MiB mount (the default) of the same
#       directory then hits none of those entries and deletes none
#       (computed_chunks > 0, disk.hits == 0, bad_entries_deleted == 0): the
#       entries lie side by side; a 64 KiB mount after it hits exactly its
#       own (disk.hits == its entries, nothing computed).  cache_chunk=3MiB,
#       32KiB and 32MiB are refused with the exact message.
#   (j) .ckptfs/stats held open (twice, one of them read) while the daemon
#       is told to stop (SIGTERM): no RELEASE ever comes for them, yet the
#       daemon exits 0 with no LeakSanitizer report (the session's end frees
#       the snapshots).
#
# CKPTFS_CASES selects cases (default: a b c d e f g h i j; b needs a's directory).
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

HELPER=$TESTDIR/helper.py
cat >"$HELPER" <<'EOF'
import errno, hashlib, json, mmap, os, random, sys, threading, time

def stats(mnt):
    with open(os.path.join(mnt, ".ckptfs", "stats")) as f:
        return json.load(f)

def get(d, path):
    for k in path.split("."):
        d = d[k]
    return d

def dread(path):
    """The whole file by O_DIRECT reads into an aligned buffer."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 17)
    out = bytearray()
    try:
        while True:
            n = os.preadv(fd, [buf], len(out))
            if n == 0:
                break
            out += buf[:n]
    finally:
        os.close(fd)
    return bytes(out)

cmd = sys.argv[1]
if cmd == "vars":          # vars MNT: the cache counters as shell assignments
    ra = stats(sys.argv[2])["readahead"]
    print("S_ra_source=%d S_ra_cached=%d" % (ra["source_bytes_requested"], ra["view_bytes_cached"]))
    s = stats(sys.argv[2])["cache"]
    if "state" in s:
        print("S_state=%s" % s["state"])
    else:
        m, d = s["memory"], s["disk"]
        print("S_state=on")
        for k in ("hits", "misses", "evictions", "bytes_stored", "bytes_out"):
            print("S_mem_%s=%d S_disk_%s=%d" % (k, m[k], k, d[k]))
        print("S_disk_enabled=%s" % ("true" if d["enabled"] else "false"))
        print("S_written=%d S_bad=%d S_computed=%d S_dedup=%d" % (d["written"], d["bad_entries_deleted"], s["computed_chunks"], d["deduplicated"]))
elif cmd == "drain":       # drain MNT: wait (10 s at most) until the writer is idle, then account for every chunk
    deadline = time.monotonic() + 10
    while True:
        s = stats(sys.argv[2])["cache"]
        d = s["disk"]
        if d["pending"] == 0:
            break
        if time.monotonic() > deadline:
            sys.exit("disk.pending stays at %d" % d["pending"])
        time.sleep(0.05)
    # cache_policy=always: a computed chunk is written, or it is a duplicate
    # of one queued or being written (a recomputation before its entry
    # landed: mem_cache=0, or evicted); never dropped, failed or skipped.
    if d["written"] + d["deduplicated"] != s["computed_chunks"] or d["dropped"] or d["failed"] or d["skipped_by_policy"]:
        sys.exit("disk.written %d + deduplicated %d != computed_chunks %d (dropped %d, failed %d, skipped %d)"
                 % (d["written"], d["deduplicated"], s["computed_chunks"], d["dropped"], d["failed"], d["skipped_by_policy"]))
elif cmd == "dcmp":        # dcmp PATH EXPECTED: O_DIRECT read equals the file
    got, want = dread(sys.argv[2]), open(sys.argv[3], "rb").read()
    if got != want:
        i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        sys.exit("%s: %d bytes, expected %d; first difference at %d" % (sys.argv[2], len(got), len(want), i))
elif cmd == "corrupt":     # corrupt DIR: damage 4 entries, print the 3 damaged paths
    d = sys.argv[2]
    def raw_size(n):
        with open(os.path.join(d, n), "rb") as f:
            return int.from_bytes(f.read(28)[20:28], "little")
    names = [n for n in os.listdir(d) if n.endswith(".zst")]
    # the biggest entries, so that the frame is long and the flip lands well inside it
    names.sort(key=lambda n: (-os.path.getsize(os.path.join(d, n)), n))
    if len(names) < 4:
        sys.exit("only %d entries in %s" % (len(names), d))
    # the flipped one is compressed (its frame's checksum catches a flip; a
    # raw entry, CKPTFSR1, has none by design and is checked by its header,
    # key and exact size), the truncated one the biggest other entry
    def magic(n):
        with open(os.path.join(d, n), "rb") as f:
            return f.read(8)
    zst = [n for n in names if magic(n) == b"CKPTFSC1"]
    if not zst:
        sys.exit("no compressed entry in %s" % d)
    names.remove(zst[0])
    names.insert(0, zst[0])
    flip, trunc = (os.path.join(d, n) for n in names[:2])
    # the copied pair: two other entries of the same chunk index and raw size
    # (tensors of one shape), so that only the key tells them apart
    rest = names[2:]
    pair = next(((a, b) for i, a in enumerate(rest) for b in rest[i + 1:] if raw_size(a) == raw_size(b)),
                (rest[0], rest[1]))
    src, dst = (os.path.join(d, n) for n in pair)
    b = bytearray(open(flip, "rb").read())
    klen = int.from_bytes(b[8:12], "little")
    if b[:8] != b"CKPTFSC1" or b[28 + klen:32 + klen] != b"\x28\xb5\x2f\xfd":
        sys.exit("%s: not a CKPTFSC1 entry with a zstd frame after the key" % flip)
    at = 28 + klen + (len(b) - 28 - klen) // 2
    b[at] ^= 0xFF
    open(flip, "wb").write(b)
    size = os.path.getsize(trunc)
    os.truncate(trunc, size // 2)
    open(dst, "wb").write(open(src, "rb").read())
    print(flip, trunc, dst)
elif cmd == "rand":        # rand SECONDS THREADS SEED MNTFILE EXPECTED [MNTFILE EXPECTED...]
    secs, nthr, seed = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    pairs = [(sys.argv[i], open(sys.argv[i + 1], "rb").read()) for i in range(5, len(sys.argv), 2)]
    errors, counts = [], []
    deadline = time.monotonic() + secs
    def worker(k):
        rnd = random.Random(seed * 1000 + k)
        fds = [os.open(p, os.O_RDONLY | os.O_DIRECT) for p, _ in pairs]
        buf = mmap.mmap(-1, 3 << 20)
        n = nbytes = 0
        try:
            while time.monotonic() < deadline and not errors:
                i = rnd.randrange(len(pairs))
                want = pairs[i][1]
                off = rnd.randrange(len(want))
                size = rnd.choice([1, 7, 4096, 65536, 1 << 20, 3 << 20, rnd.randrange(1, 3 << 20)])
                view = memoryview(buf)[:size]
                try:
                    got = os.preadv(fds[i], [view], off)
                except OSError as e:
                    errors.append("%s at %d+%d: %s" % (pairs[i][0], off, size, e))
                    break
                exp = want[off:off + size]
                if got != len(exp) or buf[:got] != exp:
                    errors.append("%s at %d+%d: %d bytes, %s" % (pairs[i][0], off, size, got,
                                  "wrong bytes" if got == len(exp) else "expected %d" % len(exp)))
                    break
                n += 1
                nbytes += got
        finally:
            for fd in fds:
                os.close(fd)
        counts.append((n, nbytes))
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(nthr)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("%d reads, %d bytes, %d threads" % (sum(c[0] for c in counts), sum(c[1] for c in counts), nthr))
    if errors:
        sys.exit("; ".join(errors))
    if sum(c[0] for c in counts) < nthr:
        sys.exit("too few reads")
else:
    sys.exit("unknown command " + cmd)
EOF

helper() {
    "$PYTHON" "$HELPER" "$@"
}

# load_stats MNT: set S_* from MNT's .ckptfs/stats (S_state, S_mem_hits,
# S_mem_misses, S_mem_evictions, S_mem_bytes_stored, S_disk_hits, S_disk_misses,
# S_disk_evictions, S_disk_bytes_stored, S_disk_bytes_out, S_disk_enabled,
# S_written, S_bad, S_computed; readahead: S_ra_source, S_ra_cached) and log
# the main ones
load_stats() {
    local v
    v=$(helper vars "$1") || fail "cannot read $1/.ckptfs/stats"
    eval "$v"
    [ "$S_state" != on ] ||
        note "  stats: memory hits $S_mem_hits misses $S_mem_misses evictions $S_mem_evictions;" \
            "disk hits $S_disk_hits misses $S_disk_misses written $S_written dedup $S_dedup bad $S_bad evictions $S_disk_evictions;" \
            "computed $S_computed; read-ahead source bytes $S_ra_source, view bytes cached $S_ra_cached"
}

# expect_eq WHAT GOT WANT
expect_eq() {
    [ "$2" = "$3" ] || fail "$1: expected $3, got $2"
}

# expect_cmp WHAT OP GOT BOUND: integer comparison (-gt, -ge, -le, -lt)
expect_cmp() {
    local ok
    case $2 in
    -gt) [ "$3" -gt "$4" ] && ok=1 || ok=0 ;;
    -ge) [ "$3" -ge "$4" ] && ok=1 || ok=0 ;;
    -le) [ "$3" -le "$4" ] && ok=1 || ok=0 ;;
    -lt) [ "$3" -lt "$4" ] && ok=1 || ok=0 ;;
    *) hard_error "expect_cmp: unknown operator $2" ;;
    esac
    [ "$ok" = 1 ] || fail "$1: expected $2 $4, got $3"
}

# drain MNT: wait until the writer is idle (disk.pending == 0), then require
# (cache_policy=always) disk.written + disk.deduplicated == computed_chunks
# and nothing dropped, failed or skipped
drain() {
    helper drain "$1" || fail "$1: the disk writer does not finish"
}

# count_entries DIR: number of *.zst in DIR
count_entries() {
    find "$1" -maxdepth 1 -type f -name '*.zst' | wc -l
}

# count_other DIR: files in DIR that are not *.zst (temp files)
count_other() {
    find "$1" -maxdepth 1 -type f ! -name '*.zst' | wc -l
}

# dir_bytes DIR: total size of every file in DIR
dir_bytes() {
    find "$1" -maxdepth 1 -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}

# read_check MNT REL...: cat each file (a plain read) and compare with the expected bytes
read_check() {
    local mnt=$1 f tag
    shift
    for f in "$@"; do
        tag=$(printf '%s' "$f" | tr '/@' '__')
        cat "$mnt/$f" >"$TESTDIR/got" || fail "cat $mnt/$f failed"
        cmp -s "$TESTDIR/got" "$EXP/$SRCNAME/$tag" ||
            fail "$mnt/$f differs from the expected bytes ($(cmp "$TESTDIR/got" "$EXP/$SRCNAME/$tag" 2>&1 | head -1))"
    done
    note "  $# file(s) identical to the expected bytes"
}

# dread_check MNT REL...: the same with O_DIRECT reads (reach the daemon again)
dread_check() {
    local mnt=$1 f tag
    shift
    for f in "$@"; do
        tag=$(printf '%s' "$f" | tr '/@' '__')
        helper dcmp "$mnt/$f" "$EXP/$SRCNAME/$tag" || fail "O_DIRECT read of $mnt/$f is wrong"
    done
    note "  $# file(s) identical by O_DIRECT reads"
}

# make_expected SRC NAME REL...: ckptfs cat -o cache=off of each file
EXP=$TESTDIR/expected
make_expected() {
    local src=$1 name=$2 f tag
    shift 2
    mkdir -p "$EXP/$name"
    for f in "$@"; do
        tag=$(printf '%s' "$f" | tr '/@' '__')
        "$CKPTFS" cat -o cache=off "$src" "$f" >"$EXP/$name/$tag" || hard_error "ckptfs cat $f failed"
        [ -s "$EXP/$name/$tag" ] || hard_error "ckptfs cat $f is empty"
    done
}

TL=$TESTDIR/src-tl
G2=$TESTDIR/src-g2
gen_model tiny-llama "$TL"
gen_model gpt2 "$G2"
TL_FILES="native@fp32/model.safetensors hf@fp32/model.safetensors
tensors/model.embed_tokens.weight.npy tensors/model.layers.1.mlp.down_proj.weight.npy"
G2_FILES="native/model.safetensors"
make_expected "$TL" tl $TL_FILES
make_expected "$G2" g2 $G2_FILES
# the expectations are not plain copies of the source: the views are computed
cmp -s "$EXP/g2/native_model.safetensors" "$G2/model.safetensors" &&
    hard_error "gpt2 native/ equals the source"
mkdir "$TESTDIR/m1" "$TESTDIR/m2"
ALWAYS=cache_policy=always

# ---- (a) a second mount reads the disk cache ----
case_a() {
    local c=$TESTDIR/c n comp mh ras rac
    note "=== (a) second mount hits the disk cache"
    SRCNAME=tl
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m1" $TL_FILES
    drain "$TESTDIR/m1"
    load_stats "$TESTDIR/m1"
    expect_eq "disk.enabled" "$S_disk_enabled" true
    comp=$S_computed
    expect_cmp "computed_chunks after the first read" -gt "$comp" 0
    expect_eq "disk.misses (first mount)" "$S_disk_misses" "$comp"
    expect_eq "disk.hits (first mount)" "$S_disk_hits" 0
    expect_eq "disk.written (first mount)" "$S_written" "$comp"
    expect_eq "memory.misses (first mount)" "$S_mem_misses" "$comp"
    # computed from the source: the read-ahead asked for it
    expect_cmp "readahead.source_bytes_requested (first mount)" -gt "$S_ra_source" 0
    mh=$S_mem_hits
    ras=$S_ra_source rac=$S_ra_cached
    # a re-read on the same mount: the memory tier, nothing computed, no disk read
    dread_check "$TESTDIR/m1" native@fp32/model.safetensors
    load_stats "$TESTDIR/m1"
    expect_cmp "memory.hits after an O_DIRECT re-read" -gt "$S_mem_hits" "$mh"
    # the memory tier holds every chunk: no source is advised for the re-read
    expect_eq "readahead.source_bytes_requested after the re-read" "$S_ra_source" "$ras"
    expect_cmp "readahead.view_bytes_cached after the re-read" -gt "$S_ra_cached" "$rac"
    expect_eq "computed_chunks after the re-read" "$S_computed" "$comp"
    expect_eq "disk.hits after the re-read" "$S_disk_hits" 0
    umount_ckptfs
    n=$(count_entries "$c")
    expect_eq "entries in $c after unmount" "$n" "$comp"
    expect_eq "temp files left in $c" "$(count_other "$c")" 0
    A_TOTAL=$(dir_bytes "$c")
    note "  $n entries, $A_TOTAL bytes"

    mount_ckptfs "$TL" "$TESTDIR/m2" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m2" $TL_FILES
    load_stats "$TESTDIR/m2"
    expect_eq "disk.hits on the fresh mount" "$S_disk_hits" "$n"
    expect_eq "disk.misses on the fresh mount" "$S_disk_misses" 0
    expect_eq "memory.misses on the fresh mount" "$S_mem_misses" "$n"
    expect_eq "computed_chunks on the fresh mount" "$S_computed" 0
    expect_eq "bad_entries_deleted on the fresh mount" "$S_bad" 0
    expect_cmp "disk.bytes_out on the fresh mount" -gt "$S_disk_bytes_out" 0
    # every file read is computed, every chunk is on disk: the read-ahead
    # asks for no source byte, and says how much it left out
    expect_eq "readahead.source_bytes_requested on the fresh mount" "$S_ra_source" 0
    expect_cmp "readahead.view_bytes_cached on the fresh mount" -gt "$S_ra_cached" 0
    umount_ckptfs
    expect_eq "entries after the second mount" "$(count_entries "$c")" "$n"

    # gpt2 (transposes) in the same directory: its own entries, never the other source's
    SRCNAME=g2
    mount_ckptfs "$G2" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m1" $G2_FILES
    load_stats "$TESTDIR/m1"
    comp=$S_computed
    expect_cmp "gpt2 computed_chunks" -gt "$comp" 0
    expect_eq "gpt2 disk.hits on its first mount" "$S_disk_hits" 0
    # no waiting for the writer here: the unmount must flush what is pending
    umount_ckptfs
    expect_eq "entries after gpt2 (flushed at unmount)" "$(count_entries "$c")" $((n + comp))
    expect_eq "temp files left in $c" "$(count_other "$c")" 0
    mount_ckptfs "$G2" "$TESTDIR/m2" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m2" $G2_FILES
    load_stats "$TESTDIR/m2"
    expect_eq "gpt2 disk.hits on the fresh mount" "$S_disk_hits" "$comp"
    expect_eq "gpt2 computed_chunks on the fresh mount" "$S_computed" 0
    umount_ckptfs

    # `ckptfs cat` fills a cache too, and flushes it before it exits (level 19:
    # slow compression, so entries are still pending when the reading is done)
    SRCNAME=tl
    "$CKPTFS" cat -o "cache_dir=$TESTDIR/c-cat,$ALWAYS,cache_level=19" "$TL" native@fp32/model.safetensors >"$TESTDIR/got" ||
        fail "ckptfs cat with a cache failed"
    cmp -s "$TESTDIR/got" "$EXP/tl/native_fp32_model.safetensors" || fail "ckptfs cat with a cache: wrong bytes"
    n=$(count_entries "$TESTDIR/c-cat")
    expect_cmp "entries written by ckptfs cat" -gt "$n" 0
    expect_eq "temp files left by ckptfs cat" "$(count_other "$TESTDIR/c-cat")" 0
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$TESTDIR/c-cat,$ALWAYS"
    read_check "$TESTDIR/m1" native@fp32/model.safetensors
    load_stats "$TESTDIR/m1"
    expect_eq "disk.hits on entries of ckptfs cat" "$S_disk_hits" "$n"
    expect_eq "computed_chunks after ckptfs cat" "$S_computed" 0
    umount_ckptfs
}

# ---- (b) damaged entries are never served ----
case_b() {
    local c=$TESTDIR/c damaged f i=0 n bad1 bad2
    note "=== (b) corrupt entries between mounts"
    [ -d "$c" ] && [ "$(count_entries "$c")" -ge 4 ] || hard_error "case b needs case a's cache directory"
    n=$(count_entries "$c")
    damaged=$(helper corrupt "$c") || hard_error "could not corrupt entries"
    for f in $damaged; do
        i=$((i + 1))
        cp "$f" "$TESTDIR/damaged.$i"
    done
    note "  damaged (flipped, truncated, overwritten by another entry): $(for f in $damaged; do basename "$f"; done | tr '\n' ' ')"
    # both sources, so that every damaged entry is looked up; the default policy
    SRCNAME=tl
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c"
    read_check "$TESTDIR/m1" $TL_FILES
    load_stats "$TESTDIR/m1"
    bad1=$S_bad
    expect_eq "computed_chunks == bad entries (tiny-llama)" "$S_computed" "$bad1"
    umount_ckptfs
    SRCNAME=g2
    mount_ckptfs "$G2" "$TESTDIR/m1" -o "cache_dir=$c"
    read_check "$TESTDIR/m1" $G2_FILES
    load_stats "$TESTDIR/m1"
    bad2=$S_bad
    expect_eq "computed_chunks == bad entries (gpt2)" "$S_computed" "$bad2"
    umount_ckptfs
    expect_eq "bad_entries_deleted over both sources" $((bad1 + bad2)) 3
    i=0
    for f in $damaged; do
        i=$((i + 1))
        if [ -e "$f" ] && cmp -s "$f" "$TESTDIR/damaged.$i"; then
            fail "damaged entry $(basename "$f") is still there, unchanged"
        fi
    done
    note "  the damaged files are gone or rewritten"
    # computed again and stored where needed (always); then every entry is good
    SRCNAME=tl
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m1" $TL_FILES
    umount_ckptfs
    SRCNAME=g2
    mount_ckptfs "$G2" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m1" $G2_FILES
    umount_ckptfs
    expect_eq "entries after repair" "$(count_entries "$c")" "$n"
    SRCNAME=tl
    mount_ckptfs "$TL" "$TESTDIR/m2" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m2" $TL_FILES
    load_stats "$TESTDIR/m2"
    expect_eq "bad entries after repair" "$S_bad" 0
    expect_eq "computed_chunks after repair" "$S_computed" 0
    umount_ckptfs
}

# hwm PID: peak resident memory of a process in KiB
hwm() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

# ---- (c) two mounts share one directory, 8 readers each ----
case_c() {
    local c=$TESTDIR/c2 bound pa pb la lb ra rb sa=0 sb=0 f tag a_args='' b_args='' ev t0
    note "=== (c) two mounts sharing a cache directory, 8 threads each"
    SRCNAME=tl
    # less than the files need, so that entries come and go while both read
    bound=${A_TOTAL:-280000}
    bound=$((bound * 7 / 10))
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS,mem_cache=0,cache_size=$bound"
    pa=$CKPTFS_PID la=$CKPTFS_LOG
    read_check "$TESTDIR/m1" $TL_FILES
    drain "$TESTDIR/m1"
    mount_ckptfs "$TL" "$TESTDIR/m2" -o "cache_dir=$c,$ALWAYS,mem_cache=256KiB,cache_size=$bound"
    pb=$CKPTFS_PID lb=$CKPTFS_LOG
    read_check "$TESTDIR/m2" $TL_FILES
    load_stats "$TESTDIR/m2"
    expect_cmp "mount B's disk.hits on what A computed" -gt "$S_disk_hits" 0
    for f in $TL_FILES; do
        tag=$(printf '%s' "$f" | tr '/@' '__')
        a_args="$a_args $TESTDIR/m1/$f $EXP/tl/$tag"
        b_args="$b_args $TESTDIR/m2/$f $EXP/tl/$tag"
    done
    helper rand 3 8 1 $a_args >"$TESTDIR/rand.a" 2>&1 &
    ra=$!
    helper rand 3 8 2 $b_args >"$TESTDIR/rand.b" 2>&1 &
    rb=$!
    wait "$ra" || sa=$?
    wait "$rb" || sb=$?
    note "  mount A (mem_cache=0): $(cat "$TESTDIR/rand.a")"
    note "  mount B (mem_cache=256KiB): $(cat "$TESTDIR/rand.b")"
    [ "$sa" -eq 0 ] || fail "random reads on mount A: $(cat "$TESTDIR/rand.a")"
    [ "$sb" -eq 0 ] || fail "random reads on mount B: $(cat "$TESTDIR/rand.b")"
    load_stats "$TESTDIR/m1"
    expect_eq "bad entries on mount A" "$S_bad" 0
    expect_cmp "disk hits on mount A" -gt "$S_disk_hits" 0
    ev=$S_disk_evictions
    load_stats "$TESTDIR/m2"
    expect_eq "bad entries on mount B" "$S_bad" 0
    expect_cmp "disk hits on mount B" -gt "$S_disk_hits" 0
    expect_cmp "memory evictions on mount B" -gt "$S_mem_evictions" 0
    expect_cmp "disk evictions on both mounts" -gt $((ev + S_disk_evictions)) 0
    note "  peak RSS: A $(hwm "$pa") KiB, B $(hwm "$pb") KiB"
    t0=$(date +%s.%N)
    CKPTFS_PID=$pb CKPTFS_LOG=$lb CKPTFS_MNT=$TESTDIR/m2
    umount_ckptfs
    CKPTFS_PID=$pa CKPTFS_LOG=$la CKPTFS_MNT=$TESTDIR/m1
    umount_ckptfs
    note "  both unmounted (pending disk writes flushed) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
    expect_cmp "bytes in $c after both unmounted" -le "$(dir_bytes "$c")" "$bound"
    expect_eq "temp files left in $c" "$(count_other "$c")" 0
}

# ---- (d) a tiny cache_size bounds the directory ----
case_d() {
    local c=$TESTDIR/c3 bound=100000
    note "=== (d) cache_size=$bound"
    SRCNAME=tl
    [ -z "${A_TOTAL:-}" ] || [ "$A_TOTAL" -gt $((2 * bound)) ] ||
        hard_error "the entries of case a ($A_TOTAL bytes) are not over twice the bound: the case would prove nothing"
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS,cache_size=$bound"
    read_check "$TESTDIR/m1" $TL_FILES
    drain "$TESTDIR/m1"
    load_stats "$TESTDIR/m1"
    expect_cmp "disk.evictions" -gt "$S_disk_evictions" 0
    expect_cmp "disk.bytes_stored" -le "$S_disk_bytes_stored" "$bound"
    umount_ckptfs
    expect_cmp "bytes in $c after unmount" -le "$(dir_bytes "$c")" "$bound"
    expect_cmp "entries left in $c" -gt "$(count_entries "$c")" 0
    note "  $(count_entries "$c") entries, $(dir_bytes "$c") bytes"
}

# ---- (e) a cache directory that cannot be made ----
case_e() {
    local c=$TESTDIR/a-file/cache n
    note "=== (e) unusable cache directory"
    SRCNAME=tl
    echo x >"$TESTDIR/a-file"
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m1" $TL_FILES
    dread_check "$TESTDIR/m1" native@fp32/model.safetensors
    load_stats "$TESTDIR/m1"
    expect_eq "disk.enabled" "$S_disk_enabled" false
    expect_eq "disk.written" "$S_written" 0
    expect_cmp "computed_chunks" -gt "$S_computed" 0
    umount_ckptfs
    n=$(grep -c "warning: cache directory" "$CKPTFS_LOG" || true)
    expect_eq "\"warning: cache directory\" lines in the log" "$n" 1
    note "  log: $(grep "warning: cache directory" "$CKPTFS_LOG")"
}

# ---- (f) -o cache=off; the default directory ----
case_f() {
    local x
    note "=== (f) cache=off"
    SRCNAME=tl
    mount_ckptfs "$TL" "$TESTDIR/m1" -o cache=off
    read_check "$TESTDIR/m1" $TL_FILES
    dread_check "$TESTDIR/m1" $TL_FILES
    load_stats "$TESTDIR/m1"
    expect_eq "cache.state" "$S_state" off
    umount_ckptfs
    x=$XDG_CACHE_HOME/ckptfs
    [ ! -e "$x" ] || [ "$(count_entries "$x")" -eq 0 ] || fail "cache=off mount wrote entries to $x"
    note "=== (f) no cache_dir: \$XDG_CACHE_HOME/ckptfs"
    SRCNAME=g2
    mount_ckptfs "$G2" "$TESTDIR/m1" -o "$ALWAYS"
    read_check "$TESTDIR/m1" $G2_FILES
    drain "$TESTDIR/m1"
    load_stats "$TESTDIR/m1"
    expect_eq "disk.enabled" "$S_disk_enabled" true
    umount_ckptfs
    expect_eq "entries in $x" "$(count_entries "$x")" "$S_computed"
}

# ---- (g) a daemon killed while it writes entries ----
case_g() {
    local c=$TESTDIR/c4 pid n t rest p f tag args='' rp
    note "=== (g) kill -9 while the writer is busy"
    SRCNAME=tl
    # no memory tier and a bound below the data: the readers keep the writer
    # busy with entries that are evicted and written again; level 19 makes
    # every write slow
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS,cache_level=19,mem_cache=0,cache_size=${A_TOTAL:-280000}"
    pid=$CKPTFS_PID
    for f in $TL_FILES; do
        tag=$(printf '%s' "$f" | tr '/@' '__')
        args="$args $TESTDIR/m1/$f $EXP/tl/$tag"
    done
    helper rand 5 8 3 $args >"$TESTDIR/rand.g" 2>&1 &
    rp=$!
    sleep 1.5
    load_stats "$TESTDIR/m1"
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    rest=
    for p in $CKPTFS_PIDS; do
        [ "$p" = "$pid" ] || rest="$rest $p"
    done
    CKPTFS_PIDS=$rest
    wait "$rp" 2>/dev/null || true   # its reads fail once the daemon is gone
    fusermount3 -u "$TESTDIR/m1" 2>/dev/null || fusermount3 -uz "$TESTDIR/m1" || fail "cannot unmount the dead mount"
    n=$(count_entries "$c")
    t=$(count_other "$c")
    note "  killed with $S_written of $S_computed chunks written (a moment before): $n entries and $t temp file(s) on disk"
    [ "$S_written" -lt "$S_computed" ] || note "  (the writer had caught up: the kill may have come between writes)"
    # every entry under a final name is whole: none is found bad, bytes are right
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m1" $TL_FILES
    load_stats "$TESTDIR/m1"
    expect_eq "bad entries after the crash" "$S_bad" 0
    # entries written before the kill are whole and used (the kill may also
    # land before the first write: then there is nothing to hit)
    if [ "$n" -gt 0 ]; then
        expect_cmp "disk hits after the crash" -gt "$S_disk_hits" 0
    fi
    umount_ckptfs
    t=$(count_other "$c")
    [ "$t" -eq 0 ] || note "  note: $t temp file(s) of the killed daemon are still in $c after the next mount (not counted in cache_size)"
}

# ---- (h) a daemon that forked into the background still writes its cache ----
# (threads do not survive fork: the disk writer must start after it)
case_h() {
    local c=$TESTDIR/ch pid i n
    note "=== (h) background daemon (no -f): disk entries written, exit after unmount"
    "$CKPTFS" -o "cache_dir=$c,$ALWAYS" "$TL" "$TESTDIR/m2" || fail "background mount failed"
    pid=$(pgrep -f "ckptfs .*$TESTDIR/m2\$" | head -n 1)
    [ -n "$pid" ] || fail "no background daemon for $TESTDIR/m2"
    cmp "$TESTDIR/m2/native@fp32/model.safetensors" "$EXP/tl/native_fp32_model.safetensors" ||
        fail "background daemon: native@fp32 differs"
    fusermount3 -u "$TESTDIR/m2" || fail "cannot unmount the background daemon"
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; fail "background daemon still running 10 s after unmount"; }
    n=$(count_entries "$c")
    expect_cmp "disk entries written by the background daemon" -gt "$n" 0
    note "  background daemon exited; $n entries on disk"
}

# ---- (i) a directory others can write; -o cache_shared ----
case_i() {
    local c=$TESTDIR/shared n f
    note "=== (i) a world-writable cache directory; cache_shared"
    SRCNAME=tl
    mkdir "$c"
    chmod 1777 "$c"
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m1" $TL_FILES
    load_stats "$TESTDIR/m1"
    expect_eq "disk.enabled (mode 1777, no cache_shared)" "$S_disk_enabled" false
    expect_eq "disk.written" "$S_written" 0
    umount_ckptfs
    n=$(grep -c "warning: cache directory $c: writable by group or others" "$CKPTFS_LOG" || true)
    expect_eq "\"writable by group or others\" warnings in the log" "$n" 1
    note "  log: $(grep "warning: cache directory" "$CKPTFS_LOG")"
    expect_eq "entries in $c" "$(count_entries "$c")" 0

    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS,cache_shared"
    read_check "$TESTDIR/m1" $TL_FILES
    drain "$TESTDIR/m1"
    load_stats "$TESTDIR/m1"
    expect_eq "disk.enabled (cache_shared)" "$S_disk_enabled" true
    expect_cmp "disk.written" -gt "$S_written" 0
    umount_ckptfs
    ! grep -q "warning" "$CKPTFS_LOG" || fail "warning with cache_shared: $(grep warning "$CKPTFS_LOG")"
    n=$(count_entries "$c")
    expect_eq "entries in $c" "$n" "$S_written"
    for f in "$c"/*.zst; do
        [ "$(head -c 8 "$f")" = CKPTFSM1 ] || fail "$f does not start CKPTFSM1"
    done
    f=$c/.ckptfs-key-$(id -u)
    expect_eq "key file mode, size, owner" "$(stat -c '%a %s %u' "$f")" "600 32 $(id -u)"

    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS,cache_shared"
    read_check "$TESTDIR/m1" $TL_FILES
    load_stats "$TESTDIR/m1"
    expect_eq "computed_chunks (second cache_shared mount)" "$S_computed" 0
    expect_eq "disk.hits" "$S_disk_hits" "$n"
    umount_ckptfs
    note "  cache_shared: $n signed entries, a second mount computes nothing"
}

# ---- (j) stats open when the daemon stops ----
case_j() {
    local pid rc=0
    note "=== (j) .ckptfs/stats open at the end of the session"
    mount_ckptfs "$TL" "$TESTDIR/m1"
    pid=$CKPTFS_PID
    exec 8<"$TESTDIR/m1/.ckptfs/stats" 9<"$TESTDIR/m1/.ckptfs/stats"
    head -c 10 <&9 >/dev/null
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    CKPTFS_PIDS=${CKPTFS_PIDS// $pid/}
    exec 8<&- 9<&-
    expect_eq "exit status after SIGTERM with stats open" "$rc" 0
    check_log "$CKPTFS_LOG"
    ! is_mounted "$TESTDIR/m1" || fail "$TESTDIR/m1 still mounted after SIGTERM"
    note "  stopped with two stats snapshots open: exit 0, no leak report"
}

# ---- (k) -o cache_chunk: mounts at two chunk sizes share a directory ----
case_k() {
    local c=$TESTDIR/c-chunk n1 n2 bad
    note "=== (k) -o cache_chunk"
    SRCNAME=tl
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS,cache_chunk=64KiB"
    read_check "$TESTDIR/m1" $TL_FILES
    expect_eq "cache.chunk at cache_chunk=64KiB" "$(stat_of "$TESTDIR/m1" cache/chunk)" 65536
    load_stats "$TESTDIR/m1"
    n1=$S_computed
    expect_cmp "computed_chunks at 64 KiB" -gt "$n1" 0
    umount_ckptfs
    expect_eq "entries after the 64 KiB mount" "$(count_entries "$c")" "$n1"
    mount_ckptfs "$TL" "$TESTDIR/m2" -o "cache_dir=$c,$ALWAYS"
    read_check "$TESTDIR/m2" $TL_FILES
    expect_eq "cache.chunk by default" "$(stat_of "$TESTDIR/m2" cache/chunk)" 1048576
    load_stats "$TESTDIR/m2"
    n2=$S_computed
    expect_cmp "computed_chunks at 1 MiB over 64 KiB entries" -gt "$n2" 0
    expect_eq "disk.hits at 1 MiB over 64 KiB entries" "$S_disk_hits" 0
    expect_eq "bad_entries_deleted at 1 MiB over 64 KiB entries" "$S_bad" 0
    umount_ckptfs
    expect_eq "entries of both sizes" "$(count_entries "$c")" $((n1 + n2))
    mount_ckptfs "$TL" "$TESTDIR/m1" -o "cache_dir=$c,$ALWAYS,cache_chunk=64KiB"
    read_check "$TESTDIR/m1" $TL_FILES
    load_stats "$TESTDIR/m1"
    expect_eq "computed_chunks of the second 64 KiB mount" "$S_computed" 0
    expect_eq "disk.hits of the second 64 KiB mount" "$S_disk_hits" "$n1"
    expect_eq "bad_entries_deleted of the second 64 KiB mount" "$S_bad" 0
    umount_ckptfs
    for bad in 3MiB 32KiB 32MiB 1M; do
        expect_mount_refused "ckptfs: -o cache_chunk=$bad: not a power of two from 64KiB to 16MiB" "$TL" \
            -o "cache_dir=$c,cache_chunk=$bad"
    done
}

for c in ${CKPTFS_CASES:-a b c d e f g h i j k}; do
    case $c in
    a | b | c | d | e | f | g | h | i | j | k) "case_$c" ;;
    *) hard_error "unknown case '$c' in CKPTFS_CASES (a b c d e f g h i j k)" ;;
    esac
done
note "PASS"
