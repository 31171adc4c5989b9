#!/bin/bash
# mount-native.sh - the native/ view, native sources and VIEW@DTYPE casts.
#
# For each of tiny-llama, tiny-llama with -o shard_size=100K (native/ in
# shards), qwen2, qwen3, phi3, mixtral, gpt2, gpt2-noprefix (override with
# CKPTFS_NATIVE_PRESETS): generate it with examples/gen-model.py, mount it,
#   - tests/check_native.py: native/ equal to the numpy computation of the
#     layout, bit for bit, file order, index, metadata; hf@/native@/
#     tensors@ fp32, fp16, bf16 equal to the numpy casts; @ names are found
#     by lookup but not listed; bad suffixes are ENOENT;
#   - roundtrip: copy native/* to a new directory, mount that as a source:
#     its native/ is the copy byte for byte and its hf/ holds the original
#     HF tensors bit for bit (names, dtypes, shapes, bytes; GPT-2's
#     attn.bias buffers are dropped), config.json and side files too;
# then mixed-dtypes and cast-edges (no native layout): the @ casts only;
# tiny-llama and gpt2 with -o dtype=fp16: hf/, native/ and tensors/ are the
# fp16 cast; and -o layout=FILE with invalid JSON or an unknown operator:
# the mount is refused with status 1 and one line naming the file.
# Every mount is unmounted and its daemon must exit 0.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

mount_test_init

check_native() {
    note "check_native.py $*"
    "$PYTHON" "$srcdir/tests/check_native.py" "$@" ||
        fail "check_native.py $* failed"
}

# native_case NAME PRESET [MOUNT OPTION...]
native_case() {
    local name=$1 preset=$2 src mnt nat mnt2 extra=
    shift 2
    note "=== $name"
    src=$TESTDIR/src-$preset
    [ -d "$src" ] || gen_model "$preset" "$src"
    mnt=$TESTDIR/mnt-$name
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt" "$@"
    case " $* " in
    *shard_size=100K*)
        extra="--shard-size 100000"
        if [ ! -f "$mnt/native/model.safetensors.index.json" ] ||
            [ ! -f "$mnt/native/model-00001-of-00002.safetensors" ]; then
            fail "$name: native/ is not sharded: $(cd "$mnt/native" && echo *)"
        fi
        ;;
    esac
    # shellcheck disable=SC2086
    check_native $extra "$src" "$mnt"
    nat=$TESTDIR/native-$name
    mkdir "$nat"
    cp "$mnt"/native/* "$nat"/
    umount_ckptfs

    note "roundtrip: $nat ($(cd "$nat" && LC_ALL=C ls | tr '\n' ' '))"
    mnt2=$TESTDIR/mnt-$name-native
    mkdir "$mnt2"
    mount_ckptfs "$nat" "$mnt2"
    grep -q "^Format: *native" "$mnt2/README" ||
        fail "$name: README of the native source does not say Format: native"
    check_native --native-source "$nat" "$src" "$mnt2"
    umount_ckptfs
    note "=== $name: PASS"
}

# cast_case PRESET: a model without a native layout, @ views only
cast_case() {
    local preset=$1 src mnt
    note "=== $preset (casts)"
    src=$TESTDIR/src-$preset
    mnt=$TESTDIR/mnt-$preset
    gen_model "$preset" "$src"
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt"
    [ ! -e "$mnt/native" ] || fail "$preset: native/ offered without a layout"
    check_native "$src" "$mnt"
    umount_ckptfs
    note "=== $preset: PASS"
}

# dtype_case PRESET D: -o dtype=D
dtype_case() {
    local preset=$1 d=$2 src mnt
    note "=== $preset -o dtype=$d"
    src=$TESTDIR/src-$preset
    [ -d "$src" ] || gen_model "$preset" "$src"
    mnt=$TESTDIR/mnt-$preset-dtype-$d
    mkdir "$mnt"
    mount_ckptfs "$src" "$mnt" -o "dtype=$d"
    check_native --dtype "$d" "$src" "$mnt"
    umount_ckptfs
    note "=== $preset -o dtype=$d: PASS"
}

# bad_layout NAME FILE WORD...: mounting with -o layout=FILE must fail with
# status 1 and one stderr line "ckptfs: ...FILE..." holding every WORD
bad_layout() {
    local name=$1 file=$2 mnt err rc=0 w lines
    shift 2
    note "=== bad layout: $name"
    mnt=$TESTDIR/mnt-bad-$name
    err=$TESTDIR/bad-$name.err
    mkdir "$mnt"
    "$CKPTFS" -o "layout=$file" "$TESTDIR/src-tiny-llama" "$mnt" \
        >"$TESTDIR/bad-$name.out" 2>"$err" || rc=$?
    if is_mounted "$mnt"; then
        fusermount3 -u "$mnt" || true
        fail "$name: mounted with a bad layout file"
    fi
    [ "$rc" -eq 1 ] || { cat "$err" >&2; fail "$name: exit status $rc, expected 1"; }
    lines=$(wc -l <"$err")
    [ "$lines" -eq 1 ] || { cat "$err" >&2; fail "$name: $lines lines on stderr, expected 1"; }
    note "  stderr: $(cat "$err")"
    case $(cat "$err") in
    "ckptfs: "*) ;;
    *) fail "$name: stderr does not start with 'ckptfs: '" ;;
    esac
    for w in "$file" "$@"; do
        grep -qF -- "$w" "$err" || fail "$name: stderr does not name '$w'"
    done
    note "=== bad layout: $name: PASS"
}

for c in ${CKPTFS_NATIVE_PRESETS:-tiny-llama tiny-llama-sharded qwen2 qwen3 phi3 mixtral gpt2 gpt2-noprefix}; do
    case $c in
    tiny-llama-sharded) native_case "$c" tiny-llama -o shard_size=100K ;;
    *) native_case "$c" "$c" ;;
    esac
done

cast_case mixed-dtypes
cast_case cast-edges

dtype_case tiny-llama fp16
dtype_case gpt2 fp16

[ -d "$TESTDIR/src-tiny-llama" ] || gen_model tiny-llama "$TESTDIR/src-tiny-llama"
printf '{"name": "broken", "rules": [\n' >"$TESTDIR/bad-json.json"
bad_layout json "$TESTDIR/bad-json.json"
cat >"$TESTDIR/bad-op.json" <<'EOF'
{
  "name": "bad-op",
  "architectures": ["llama"],
  "rules": [
    {"out": "layers.{layer}.attn.q.weight", "expr": "foo(0, model.layers.{layer}.self_attn.q_proj.weight)"},
    {"out": "embed.weight", "expr": "model.embed_tokens.weight"}
  ]
}
EOF
bad_layout operator "$TESTDIR/bad-op.json" "rule 1" "unknown operator"

note "PASS"
