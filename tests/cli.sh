#!/bin/bash
# cli.sh - the no-mount subcommands serve exactly the bytes a mount serves.
#
# For tiny-llama and gpt2: `ckptfs export` of hf/, native/, tensors/ and
# cast views equals the mounted view file for file and byte for byte;
# `ckptfs cat` of a file equals the mounted file; `ls` lists the mount's
# files with their sizes; `inspect --json` describes the source; export
# refuses to overwrite without --force and --verify passes; a bad source
# is refused with one line naming the file.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

for preset in tiny-llama gpt2; do
    note "=== $preset"
    src=$TESTDIR/src-$preset
    mnt=$TESTDIR/mnt-$preset
    gen_model "$preset" "$src"
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    for view in hf native tensors hf@fp32 native@bf16 native@fp16 tensors@bf16; do
        out=$TESTDIR/export-$preset-$view
        "$CKPTFS" export "$src" "$view/" "$out" >"$TESTDIR/export.log" ||
            fail "export $view failed: $(cat "$TESTDIR/export.log")"
        grep -q "^exported " "$TESTDIR/export.log" || fail "export $view: no summary line"
        diff -r "$mnt/$view" "$out" >/dev/null || fail "export of $view differs from the mount"
        [ -z "$(find "$out" -name '*.ckptfs-tmp.*')" ] || fail "export $view left temp files"
        note "  export $view/ == mount $view/"
    done
    # ls: the same names and sizes as the mount
    want=$(cd "$mnt/native@fp32" && stat -c '%s %n' -- * | sort -k2)
    got=$("$CKPTFS" ls "$src" native@fp32 | awk '{print $1, $2}' | sort -k2)
    [ "$got" = "$want" ] || fail "ls native@fp32 gives '$got', the mount '$want'"
    note "  ls native@fp32 == mount"
    f=$(cd "$mnt/tensors" && ls | head -n 1)
    cmp <("$CKPTFS" cat "$src" "tensors/$f") "$mnt/tensors/$f" || fail "cat tensors/$f differs"
    note "  cat tensors/$f == mount"
    "$CKPTFS" inspect --json "$src" | "$PYTHON" -c '
import json, sys
j = json.load(sys.stdin)
assert j["tensors"] > 0 and j["layout"] in ("llama", "gpt2"), j
assert "native" in j["views"] and "hf@bf16" in j["cast_views"], j
' || fail "inspect --json"
    umount_ckptfs
done

# Overwrite protection and --verify.
out=$TESTDIR/export-tiny-llama-hf
if "$CKPTFS" export "$TESTDIR/src-tiny-llama" hf/ "$out" 2>"$TESTDIR/err"; then
    fail "export over existing files succeeded without --force"
fi
grep -q "exists (use --force to overwrite)" "$TESTDIR/err" || fail "no overwrite message: $(cat "$TESTDIR/err")"
"$CKPTFS" export --force --verify "$TESTDIR/src-tiny-llama" hf/ "$out" | grep -q "verified" ||
    fail "export --force --verify"
note "overwrite refused without --force; --force --verify ok"

# Durability: each file's bytes are fsync'ed before its rename, and every
# directory that received a rename or a new entry is fsync'ed after it
# (traced with strace; LeakSanitizer cannot run under ptrace).
if command -v strace >/dev/null 2>&1; then
    out=$TESTDIR/export-durable
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 strace -f -y -o "$TESTDIR/trace" \
        -e trace=fsync,fdatasync,rename,renameat,renameat2 \
        "$CKPTFS" export "$TESTDIR/src-gpt2" hf/ "$out" >/dev/null || fail "export under strace failed"
    "$PYTHON" - "$TESTDIR/trace" "$out" <<'PY' || fail "export does not fsync before and after renaming (above)"
import os, re, sys
lines = open(sys.argv[1]).read().splitlines()
out = sys.argv[2]
synced = []   # (line number, path) of each fsync
renames = []  # (line number, tmp, final)
for i, l in enumerate(lines):
    m = re.search(r'\b(?:fsync|fdatasync)\(\d+<([^>]*)>\) = 0', l)
    if m:
        synced.append((i, m.group(1)))
    m = re.search(r'\brename(?:at2?)?\(.*"([^"]*)", .*"([^"]*)".*\) = 0', l)
    if m:
        renames.append((i, m.group(1), m.group(2)))
bad = []
if not renames:
    bad.append("no rename traced")
for i, tmp, final in renames:
    if not any(j < i and p == tmp for j, p in synced):
        bad.append("%s renamed without an fsync of its bytes first" % final)
    d = os.path.dirname(final)
    if not any(j > i and p == d for j, p in synced):
        bad.append("%s: its directory %s not fsync'ed after the rename" % (final, d))
if not any(p == os.path.dirname(out) for _, p in synced):
    bad.append("%s (a new directory) not made durable in %s" % (out, os.path.dirname(out)))
for b in bad:
    print("cli:   " + b)
sys.exit(1 if bad else 0)
PY
    note "export: fsync of each file before its rename, of each directory after"
else
    note "strace missing: export durability not checked"
fi

# A bad source: one line naming the file, exit 1.
mkdir "$TESTDIR/empty"
rc=0
"$CKPTFS" inspect "$TESTDIR/empty" 2>"$TESTDIR/err" || rc=$?
[ "$rc" -eq 1 ] && [ "$(wc -l <"$TESTDIR/err")" -eq 1 ] && grep -q "^ckptfs: $TESTDIR/empty: no model.safetensors" "$TESTDIR/err" ||
    fail "inspect of an empty dir: rc=$rc, $(cat "$TESTDIR/err")"
note "PASS"
