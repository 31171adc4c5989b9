#!/bin/bash
# mount-change.sh - a source file that changes under a mount gets EIO, never
# a crash and never wrong bytes.
#
# Every read of a view file that is checked here uses O_DIRECT, so that the
# kernel asks the daemon instead of answering from its page cache (ckptfs
# opens files with keep_cache).  Each case has its own source and mount:
#
#   (a) rewrite: gpt2; hf/model.safetensors and a tensors/*.npy are read
#       once; then model.safetensors is rewritten in place (same inode, same
#       size, every data byte flipped) and given a new mtime.  O_DIRECT reads
#       of both view files must fail with EIO ("Input/output error"); the
#       mount keeps answering (ls, README, hf/config.json).
#   (b) truncate: tiny-llama (two shards); the second shard is truncated to
#       half its size.  O_DIRECT reads of hf/ that shard and of a tensor it
#       holds (a computed bf16 -> f32 .npy) fail with EIO; the daemon stays
#       alive (no SIGBUS on the shrunken mapping): ls, README and the
#       untouched first shard and its tensors still read correctly.
#   (c) replace: gpt2; model.safetensors is deleted and a different file of
#       the same size (another seed) is put in its place (a new inode).
#       Every read must give EIO or exactly the old bytes, never the new
#       file's.  Observed: the daemon keeps the old inode open and mapped and
#       checks that inode (unchanged), so the old bytes keep being served,
#       the way a process holding an open file sees it after a replacement.
#       The test reports which it sees and accepts both.
#   (d) race: a llama of 3 layers of 3.5 MiB each in two shards, so that
#       per-layer/layer-001.safetensors is a generated header plus ranges of
#       the second shard and a 1 MiB read of it has several pieces (more
#       than a splice pipe holds).  8 threads read it in 1 MiB O_DIRECT
#       blocks while the second shard is cut to an eighth of its size and
#       put back (bytes and mtime, so reads pass the change check again) 12
#       times, then cut for good.  A read made while the shard was whole
#       must give the right bytes; one that overlapped a cut may give EIO
#       (or torn bytes); after the last cut every read gives EIO; the daemon
#       must live throughout (it used to die of SIGBUS: libfuse copied the
#       reply out of the source mapping after the guarded planning).  Once
#       with the default options, once with -o no_splice.
#
# After each case the mount is unmounted; the daemon must exit 0 with no
# sanitizer report in its log.  CKPTFS_CASES selects cases by name
# (default: rewrite truncate replace race).
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

# dread PATH [LEN]: read PATH (or its first LEN bytes) with O_DIRECT into an
# aligned buffer; prints "OK <bytes> <sha256>" or "ERR <errno name> <message>".
DREAD=$TESTDIR/dread.py
cat >"$DREAD" <<'EOF'
import errno, hashlib, mmap, os, sys
path = sys.argv[1]
try:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
except OSError as e:
    print("OPENERR", errno.errorcode.get(e.errno, e.errno), e.strerror)
    sys.exit(0)
size = os.fstat(fd).st_size
want = int(sys.argv[2]) if len(sys.argv) > 2 else size
chunk = 1 << 17
buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT wants
h = hashlib.sha256()
off = 0
try:
    while off < want:
        n = os.preadv(fd, [buf], off)
        if n == 0:
            break
        n = min(n, want - off)
        h.update(buf[:n])
        off += n
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, e.errno), e.strerror)
    sys.exit(0)
finally:
    os.close(fd)
print("OK", off, h.hexdigest())
EOF

dread() {
    "$PYTHON" "$DREAD" "$@"
}

sha_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# expect_ok WHAT PATH SHA: an O_DIRECT read gives exactly the bytes with SHA.
expect_ok() {
    local what=$1 path=$2 sha=$3 got
    got=$(dread "$path")
    case $got in
    "OK "*" $sha") note "  read ok: $what" ;;
    "OPENERR"*) hard_error "$what: O_DIRECT open of $path refused: $got" ;;
    *) fail "$what: O_DIRECT read of $path: expected the original bytes, got: $got" ;;
    esac
}

# expect_eio WHAT PATH [LEN]: an O_DIRECT read fails with EIO.
expect_eio() {
    local what=$1 path=$2 got
    shift 2
    got=$(dread "$path" "$@")
    case $got in
    "ERR EIO Input/output error") note "  EIO ok: $what" ;;
    *) fail "$what: O_DIRECT read of $path: expected EIO, got: $got" ;;
    esac
}

# Remember what the mount shows before a change: remember_root MNT TAG
remember_root() {
    (cd "$1" && LC_ALL=C ls) >"$TESTDIR/ls.$2"
    grep -qx hf "$TESTDIR/ls.$2" && grep -qx tensors "$TESTDIR/ls.$2" ||
        fail "ls $1 lacks hf or tensors: $(tr '\n' ' ' <"$TESTDIR/ls.$2")"
    cp "$1/README" "$TESTDIR/README.$2"
}

# The mount still answers after a change: ls of the root lists what it did
# before, README reads the same, stat works, the daemon lives.
#   expect_alive MNT TAG
expect_alive() {
    local mnt=$1 got
    alive "$CKPTFS_PID" || fail "the daemon died (pid $CKPTFS_PID)"
    got=$(cd "$mnt" && LC_ALL=C ls)
    [ "$got" = "$(cat "$TESTDIR/ls.$2")" ] ||
        fail "ls $mnt gives '$(echo $got)' after the change, '$(echo $(cat "$TESTDIR/ls.$2"))' before"
    [ -s "$mnt/README" ] && cat "$mnt/README" >/dev/null || fail "README unreadable after the change"
    expect_ok "README (O_DIRECT)" "$mnt/README" "$(sha_of "$TESTDIR/README.$2")"
    stat "$mnt/hf" >/dev/null || fail "stat hf failed after the change"
    alive "$CKPTFS_PID" || fail "the daemon died (pid $CKPTFS_PID)"
    note "  mount alive: ls, README, stat"
}

# ---- (a) rewritten in place, same size, new mtime ----
case_rewrite() {
    local src mnt npy st_sha npy_sha before after f got
    note "=== (a) rewrite model.safetensors in place"
    src=$TESTDIR/src-a
    mnt=$TESTDIR/mnt-a
    gen_model gpt2 "$src"
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    remember_root "$mnt" a
    npy=$mnt/tensors/transformer.h.0.attn.c_attn.weight.npy
    [ -f "$npy" ] || fail "$npy is missing"
    st_sha=$(sha_of "$src/model.safetensors")
    npy_sha=$(sha_of "$npy")   # read once, through the page cache
    [ "$(sha_of "$mnt/hf/model.safetensors")" = "$st_sha" ] || fail "hf/model.safetensors differs from the source"
    # before the change O_DIRECT reads work: an EIO below is the change's doing
    expect_ok "hf/model.safetensors before the change" "$mnt/hf/model.safetensors" "$st_sha"
    expect_ok "$(basename "$npy") before the change" "$npy" "$npy_sha"

    before=$(stat -c '%i %s %Y' "$src/model.safetensors")
    "$PYTHON" - "$src/model.safetensors" <<'EOF'
import os, struct, sys
p = sys.argv[1]
st = os.stat(p)
with open(p, "r+b") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    f.seek(8 + n)
    data = f.read()
    f.seek(8 + n)
    f.write(bytes(b ^ 0xFF for b in data))  # header intact, every data byte changed
    f.flush()
    os.fsync(f.fileno())
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 7 * 10**9))
EOF
    after=$(stat -c '%i %s %Y' "$src/model.safetensors")
    note "source before: inode size mtime = $before; after: $after"
    [ "${before% *}" = "${after% *}" ] || hard_error "the rewrite changed the inode or the size"
    [ "$before" != "$after" ] || hard_error "the rewrite did not change the mtime"
    [ "$(sha_of "$src/model.safetensors")" != "$st_sha" ] || hard_error "the rewrite changed nothing"

    expect_eio "hf/model.safetensors after the rewrite" "$mnt/hf/model.safetensors"
    expect_eio "hf/model.safetensors, first 4096 bytes" "$mnt/hf/model.safetensors" 4096
    expect_eio "$(basename "$npy") after the rewrite" "$npy"
    for f in "$mnt"/tensors/*.npy; do
        got=$(dread "$f")
        [ "$got" = "ERR EIO Input/output error" ] || fail "$f after the rewrite: expected EIO, got: $got"
    done
    note "  EIO ok: every tensors/*.npy"
    expect_ok "hf/config.json (not changed)" "$mnt/hf/config.json" "$(sha_of "$src/config.json")"
    expect_alive "$mnt" a
    umount_ckptfs
}

# ---- (b) a shard truncated ----
case_truncate() {
    local src mnt shard1 shard2 t1 t2 npy1 npy2 s1_sha npy1_sha npy2_sha size
    note "=== (b) truncate a shard"
    src=$TESTDIR/src-b
    mnt=$TESTDIR/mnt-b
    gen_model tiny-llama "$src"
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    remember_root "$mnt" b
    shard1=model-00001-of-00002.safetensors
    shard2=model-00002-of-00002.safetensors
    [ -f "$src/$shard2" ] || hard_error "tiny-llama has no $shard2"
    # a tensor of each shard, from the index
    read -r t1 t2 < <("$PYTHON" - "$src/model.safetensors.index.json" <<'EOF'
import json, sys
wm = json.load(open(sys.argv[1]))["weight_map"]
print(sorted(k for k, v in wm.items() if v.endswith("00001-of-00002.safetensors"))[0],
      sorted(k for k, v in wm.items() if v.endswith("00002-of-00002.safetensors"))[0])
EOF
    )
    npy1=$mnt/tensors/$t1.npy
    npy2=$mnt/tensors/$t2.npy
    [ -f "$npy1" ] && [ -f "$npy2" ] || fail "tensors/$t1.npy or tensors/$t2.npy is missing"
    s1_sha=$(sha_of "$src/$shard1")
    npy1_sha=$(sha_of "$npy1")
    npy2_sha=$(sha_of "$npy2")
    [ "$(sha_of "$mnt/hf/$shard2")" = "$(sha_of "$src/$shard2")" ] || fail "hf/$shard2 differs from the source"
    expect_ok "hf/$shard2 before the change" "$mnt/hf/$shard2" "$(sha_of "$src/$shard2")"
    expect_ok "tensors/$t2.npy before the change" "$npy2" "$npy2_sha"

    size=$(stat -c %s "$src/$shard2")
    truncate -s $((size / 2)) "$src/$shard2"
    note "truncated $shard2 from $size to $((size / 2)) bytes"
    expect_eio "hf/$shard2 after the truncation" "$mnt/hf/$shard2"
    expect_eio "hf/$shard2, first 4096 bytes" "$mnt/hf/$shard2" 4096
    expect_eio "tensors/$t2.npy (computed bf16 -> f32) after the truncation" "$npy2"
    expect_alive "$mnt" b
    # what does not depend on the truncated shard is still served, and right
    expect_ok "hf/$shard1 (untouched shard)" "$mnt/hf/$shard1" "$s1_sha"
    expect_ok "tensors/$t1.npy (in the untouched shard)" "$npy1" "$npy1_sha"
    # a second round: the daemon did not fall over after the first EIOs
    expect_eio "hf/$shard2 again" "$mnt/hf/$shard2"
    expect_alive "$mnt" b
    umount_ckptfs
}

# ---- (c) deleted and replaced by a different file (new inode) ----
case_replace() {
    local src mnt npy old_sha new_sha npy_old old_ino new_ino
    note "=== (c) replace model.safetensors with another file"
    src=$TESTDIR/src-c
    mnt=$TESTDIR/mnt-c
    gen_model gpt2 "$src"
    gen_model gpt2 "$TESTDIR/other" --seed 7
    cmp -s "$src/model.safetensors" "$TESTDIR/other/model.safetensors" &&
        hard_error "two seeds gave the same model.safetensors"
    [ "$(stat -c %s "$src/model.safetensors")" = "$(stat -c %s "$TESTDIR/other/model.safetensors")" ] ||
        hard_error "the replacement should have the same size"
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    remember_root "$mnt" c
    npy=$mnt/tensors/transformer.h.0.attn.c_attn.weight.npy
    old_sha=$(sha_of "$src/model.safetensors")
    new_sha=$(sha_of "$TESTDIR/other/model.safetensors")
    npy_old=$(sha_of "$npy")
    expect_ok "hf/model.safetensors before the change" "$mnt/hf/model.safetensors" "$old_sha"

    cp "$src/model.safetensors" "$TESTDIR/old.safetensors"
    old_ino=$(stat -c %i "$src/model.safetensors")
    rm "$src/model.safetensors"
    cp "$TESTDIR/other/model.safetensors" "$src/model.safetensors"
    new_ino=$(stat -c %i "$src/model.safetensors")
    note "model.safetensors: inode $old_ino replaced by inode $new_ino"
    [ "$old_ino" != "$new_ino" ] || note "(the file system reused the inode number)"

    # every read must be EIO or the old bytes; the replacement's are recognised
    observed=
    check_replaced() {
        local what=$1 path=$2 old=$3 new=$4 got
        got=$(dread "$path")
        case $got in
        "OK "*" $old") observed="$observed old" ; note "  $what: old bytes" ;;
        "ERR EIO Input/output error") observed="$observed EIO" ; note "  $what: EIO" ;;
        "OK "*" $new") fail "$what: the replacement's bytes were served under the old name" ;;
        *) fail "$what: neither EIO nor the old bytes: $got" ;;
        esac
}
check_replaced "hf/model.safetensors" "$mnt/hf/model.safetensors" "$old_sha" "$new_sha"
check_replaced "$(basename "$npy")" "$npy" "$npy_old" "-"
# reads at odd places must also be old bytes or EIO (never a mix)
if ! "$PYTHON" - "$mnt/hf/model.safetensors" "$TESTDIR/old.safetensors" \
    "$TESTDIR/other/model.safetensors" <<'EOF'
import errno, mmap, os, random, sys
path, old, new = sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 16)
rnd = random.Random(3)
neio = 0
for _ in range(64):
    off = rnd.randrange(0, len(old))
    try:
        n = os.preadv(fd, [buf], off)
    except OSError as e:
        if e.errno != errno.EIO:
            sys.exit("pread at %d: %s" % (off, e))
        neio += 1
        continue
    got = buf[:n]
    if got != old[off:off + n]:
        what = "the replacement's" if got == new[off:off + n] else "unknown"
        sys.exit("pread(%d) at %d returned %d bytes of %s content" % (len(buf), off, n, what))
os.close(fd)
print("mount-change:   odd-place reads: %d of 64 EIO, the rest the old bytes" % neio)
EOF
then
    fail "odd-place reads of hf/model.safetensors after the replacement"
fi
case $observed in
*old*EIO* | *EIO*old*) note "observed after the replacement: a mix of old bytes and EIO" ;;
*old*) note "observed after the replacement: the old bytes (the open, mapped old inode)" ;;
*) note "observed after the replacement: EIO" ;;
esac
expect_alive "$mnt" c
umount_ckptfs
}

# ---- (d) truncated while many threads read ----
RACE=$TESTDIR/race.py
cat >"$RACE" <<'EOF'
import errno, mmap, os, sys, threading, time
# race.py VIEWFILE SHARD COPY: 8 threads read VIEWFILE in 1 MiB O_DIRECT
# blocks while SHARD is cut to an eighth and put back (bytes and mtime, so
# the mount's change check passes again) CYCLES times, then cut for good.
# A read that began and ended while the shard was whole must give COPY's
# bytes; one that overlapped a cut may give EIO or anything (the bytes under
# a read may change), never a dead daemon; after the last cut only EIO.
path, shard, want = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read()
BLOCK, THREADS, CYCLES = 1 << 20, 8, 12
st = os.stat(shard)
with open(shard, "rb") as f:
    whole = f.read()
cut_at = len(whole) // 8
gen = 0          # even: the shard is whole; odd: it is being cut or put back
final = False    # set once the last cut is done
stop = threading.Event()
started = threading.Barrier(THREADS + 1)
results = [None] * THREADS

def reader(k):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT wants
    view, wview = memoryview(buf), memoryview(want)
    good = eio = 0
    off = (k * BLOCK) % len(want)
    off -= off % BLOCK
    started.wait()
    try:
        while not stop.is_set():
            g0, fin = gen, final
            try:
                n = os.preadv(fd, [buf], off)
                err = None
            except OSError as e:
                n, err = 0, e.errno
            stable = g0 == gen and g0 % 2 == 0
            if err == errno.EIO:
                eio += 1
                if stable:
                    results[k] = ("EIO while the shard was whole", good, eio)
                    return
                if fin:
                    results[k] = ("EIO", good, eio)
                    return
            elif err is not None:
                results[k] = ("error " + str(errno.errorcode.get(err, err)), good, eio)
                return
            elif fin:
                results[k] = ("%d bytes read after the last cut" % n, good, eio)
                return
            elif stable and (n == 0 or view[:n] != wview[off:off + n]):
                results[k] = ("wrong bytes: %d at %d" % (n, off), good, eio)
                return
            else:
                good += 1
            off = (off + BLOCK) % len(want)
            off -= off % BLOCK
        results[k] = ("no EIO after the last cut", good, eio)
    finally:
        os.close(fd)

def cut():
    os.truncate(shard, cut_at)  # into layer 1's bytes

threads = [threading.Thread(target=reader, args=(k,)) for k in range(THREADS)]
for t in threads:
    t.start()
started.wait()
for c in range(CYCLES):
    time.sleep(0.05)
    gen += 1
    cut()
    time.sleep(0.05)
    with open(shard, "r+b") as f:
        f.seek(cut_at)
        f.write(whole[cut_at:])
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    gen += 1
time.sleep(0.05)
gen += 1
cut()
final = True
deadline = time.monotonic() + 30
for t in threads:
    t.join(max(0.0, deadline - time.monotonic()))
stop.set()
for t in threads:
    t.join()
print("%d cuts; good reads, EIO per thread: %s" % (CYCLES + 1, " ".join("%d,%d" % r[1:] for r in results)))
bad = [r for r in results if r[0] != "EIO"]
for r in bad:
    print("a thread ended with: %s (%d good reads, %d EIO)" % r)
sys.exit(1 if bad else 0)
EOF

case_race() {
    local orig=$TESTDIR/src-d.orig src=$TESTDIR/src-d mnt=$TESTDIR/mnt-d opts \
        f=per-layer/layer-001.safetensors shard=model-00002-of-00002.safetensors out rc size
    mkdir -p "$orig" "$mnt"
    "$PYTHON" - "$srcdir/examples/gen-model.py" "$orig" <<'EOF'
import importlib.util, os, sys
import numpy as np
spec = importlib.util.spec_from_file_location("gen_model", sys.argv[1])
g = importlib.util.module_from_spec(spec)
spec.loader.exec_module(g)
out = sys.argv[2]
c = g.llama_config(hidden_size=512, num_hidden_layers=3, num_attention_heads=8,
                   num_key_value_heads=4, intermediate_size=640, vocab_size=64,
                   torch_dtype="bfloat16", tie_word_embeddings=False,
                   rms_norm_eps=1e-05, max_position_embeddings=256)
groups = g.llama_tensors(np.random.default_rng(5), c, fast=True)
# embed + layer 0 | layers 1, 2 + norm + lm_head
g.write_sharded(out, [[t for grp in groups[:2] for t in grp], [t for grp in groups[2:] for t in grp]])
g.write_json(os.path.join(out, "config.json"), c)
g.write_passthrough(out, c["vocab_size"], 1, 2)
EOF
    for opts in "" "-o no_splice"; do
        note "=== (d) cut a shard again and again while 8 threads read 1 MiB blocks of $f${opts:+ ($opts)}"
        rm -rf "$src"
        cp -a "$orig" "$src"
        # shellcheck disable=SC2086
        mount_ckptfs "$src" "$mnt" $opts
        remember_root "$mnt" d
        cp "$mnt/$f" "$TESTDIR/layer-001"
        size=$(stat -c %s "$TESTDIR/layer-001")
        [ "$size" -gt $((2 << 20)) ] || hard_error "$f is $size bytes; the test needs more than 2 MiB"
        rc=0
        out=$("$PYTHON" "$RACE" "$mnt/$f" "$src/$shard" "$TESTDIR/layer-001" 2>&1) || rc=$?
        printf '%s\n' "$out" | sed "s/^/$TEST_NAME:   /"
        if ! alive "$CKPTFS_PID"; then
            rc=0
            wait "$CKPTFS_PID" || rc=$?
            fail "the daemon died (status $rc) while $shard was cut under the readers"
        fi
        [ "$rc" -eq 0 ] || fail "readers of $f${opts:+ ($opts)}: not every thread ended on EIO (above)"
        expect_eio "$f after the truncation" "$mnt/$f"
        expect_alive "$mnt" d
        umount_ckptfs
    done
}

for c in ${CKPTFS_CASES:-rewrite truncate replace race}; do
    case $c in
    rewrite | truncate | replace | race) "case_$c" ;;
    *) hard_error "unknown case '$c' in CKPTFS_CASES (rewrite truncate replace race)" ;;
    esac
done
note "PASS"
