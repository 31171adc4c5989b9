#!/bin/bash
# mount-bad.sh - a catalogue of broken sources, one named case each.
#
# Each case generates tiny-llama or gpt2 with examples/gen-model.py, breaks
# one thing on purpose, and runs "$CKPTFS" -f SRC MNT.  The daemon must
#   - exit non-zero within CKPTFS_BAD_TIMEOUT seconds (default 5),
#   - leave nothing mounted,
#   - print exactly one line on stderr, starting with "ckptfs: " and
#     containing (case-insensitively) the offending file's name, the
#     phrase given for the case and any further fragments listed.
# Every case runs; the test fails if any case failed.  CKPTFS_CASES
# selects cases by name.
set -eu

. "${srcdir:-$(dirname "$0")/..}/tests/lib.sh"

need_python
need_ckptfs
make_testdir

MNT=$TESTDIR/mnt
mkdir "$MNT"
GEN=$TESTDIR/gen
npass=0
nfail=0
failed=

# Edit the header of a safetensors file in place: the data area is kept,
# the JSON header is rebuilt (padded to a multiple of 8) from `pairs`, a
# list of [name, info] in file order that CODE may change, or taken from
# `text` if CODE sets it (a str holding the raw JSON; `raw` is the old one).
#   st_edit FILE CODE
st_edit() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import json, struct, sys
path, code = sys.argv[1], sys.argv[2]
with open(path, "rb") as f:
    buf = f.read()
(n,) = struct.unpack("<Q", buf[:8])
raw = buf[8:8 + n].decode("utf-8")
data = buf[8 + n:]
pairs = [list(p) for p in json.loads(raw, object_pairs_hook=lambda p: p)]
pairs = [[k, dict(v)] for k, v in pairs]
env = {"pairs": pairs, "raw": raw, "text": None, "json": json}
exec(code, env)
text = env["text"]
if text is None:
    text = "{" + ",".join(json.dumps(k) + ":" + json.dumps(v, separators=(",", ":"))
                          for k, v in env["pairs"]) + "}"
text = text.encode("utf-8")
text += b" " * ((8 - len(text) % 8) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
EOF
}

# Set the u64 header length of FILE to VALUE, nothing else changed.
set_header_len() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.write(struct.pack("<Q", int(sys.argv[2])))
EOF
}

# Edit a JSON file (index.json) with CODE acting on `j`.
json_edit() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    j = json.load(f)
exec(sys.argv[2], {"j": j})
with open(sys.argv[1], "w") as f:
    f.write(json.dumps(j, indent=2, sort_keys=True) + "\n")
EOF
}

# fresh copy of a generated preset: fresh PRESET NAME -> prints the dir
fresh() {
    local preset=$1 dir=$TESTDIR/$2
    [ -d "$GEN/$preset" ] || gen_model "$preset" "$GEN/$preset" >&2
    cp -r "$GEN/$preset" "$dir"
    printf '%s\n' "$dir"
}

want_case() {
    [ -z "${CKPTFS_CASES:-}" ] && return 0
    case " $CKPTFS_CASES " in *" $1 "*) return 0 ;; esac
    return 1
}

case_fail() {
    printf '%s: FAIL %s: %s\n' "$TEST_NAME" "$1" "$2" >&2
    nfail=$((nfail + 1))
    failed="$failed $1"
}

# run_bad CASE SRC FRAGMENT...: mount must be refused as described above.
run_bad() {
    local name=$1 src=$2 err out pid rc deadline mounted=no frag line nlines
    shift 2
    err=$TESTDIR/$name.stderr
    out=$TESTDIR/$name.stdout
    "$CKPTFS" -f "$src" "$MNT" >"$out" 2>"$err" &
    pid=$!
    CKPTFS_PIDS="$CKPTFS_PIDS $pid"
    deadline=$(($(date +%s) + ${CKPTFS_BAD_TIMEOUT:-5}))
    while alive "$pid"; do
        if is_mounted "$MNT"; then
            mounted=yes
            break
        fi
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.05
    done
    if is_mounted "$MNT"; then
        mounted=yes
        fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
    fi
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.05; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        if [ "$mounted" = yes ]; then
            case_fail "$name" "mounted a bad source: $(head -c 300 "$err")"
        else
            case_fail "$name" "still running after ${CKPTFS_BAD_TIMEOUT:-5}s: $(head -c 300 "$err")"
        fi
        return 0
    fi
    rc=0
    wait "$pid" || rc=$?
    if [ "$mounted" = yes ]; then
        case_fail "$name" "was mounted (exit $rc): $(head -c 300 "$err")"
        return 0
    fi
    if is_mounted "$MNT"; then
        case_fail "$name" "something is mounted on $MNT afterwards"
        return 0
    fi
    if [ "$rc" -eq 0 ]; then
        case_fail "$name" "exit status 0"
        return 0
    fi
    nlines=$(grep -c '' "$err" || true)
    line=$(head -n 1 "$err")
    if [ "$nlines" -ne 1 ]; then
        case_fail "$name" "exit $rc, $nlines lines on stderr, expected 1:
$(head -n 20 "$err")"
        return 0
    fi
    case $line in
    "ckptfs: "*) ;;
    *) case_fail "$name" "stderr does not start with 'ckptfs: ': $line"
       return 0 ;;
    esac
    for frag in "$@"; do
        if ! printf '%s\n' "$line" | grep -qiF -- "$frag"; then
            case_fail "$name" "stderr lacks '$frag': $line"
            return 0
        fi
    done
    printf '%s: PASS %s (exit %d): %s\n' "$TEST_NAME" "$name" "$rc" "$line"
    npass=$((npass + 1))
}

LLAMA_S1=model-00001-of-00002.safetensors
LLAMA_S2=model-00002-of-00002.safetensors
GPT2_ST=model.safetensors

# ---- cases -------------------------------------------------------------

if want_case empty-dir; then
    d=$TESTDIR/empty-dir
    mkdir "$d"
    run_bad empty-dir "$d" empty-dir "no model.safetensors"
fi

if want_case text-only-dir; then
    d=$TESTDIR/text-only-dir
    mkdir "$d"
    echo "just some notes" >"$d/notes.txt"
    run_bad text-only-dir "$d" text-only-dir "no model.safetensors"
fi

if want_case missing-source; then
    run_bad missing-source "$TESTDIR/does-not-exist" does-not-exist \
        "No such file or directory"
fi

if want_case truncated-shard; then
    d=$(fresh tiny-llama truncated-shard)
    truncate -s -100 "$d/$LLAMA_S2"
    run_bad truncated-shard "$d" "$LLAMA_S2" "end of file"
fi

if want_case header-len-past-eof; then
    d=$(fresh gpt2 header-len-past-eof)
    set_header_len "$d/$GPT2_ST" "$(stat -c %s "$d/$GPT2_ST")"
    run_bad header-len-past-eof "$d" "$GPT2_ST" "header length"
fi

if want_case header-len-huge; then
    # the file is made (sparsely) long enough that only the limit is broken
    d=$(fresh gpt2 header-len-huge)
    set_header_len "$d/$GPT2_ST" 100000008
    truncate -s 100001000 "$d/$GPT2_ST"
    run_bad header-len-huge "$d" "$GPT2_ST" "exceeds"
fi

if want_case header-bad-json; then
    d=$(fresh gpt2 header-bad-json)
    # drop the closing brace: same length, padded with a space
    st_edit "$d/$GPT2_ST" 'text = raw.rstrip(" ")[:-1]'
    run_bad header-bad-json "$d" "$GPT2_ST" "invalid JSON"
fi

if want_case unknown-dtype; then
    d=$(fresh gpt2 unknown-dtype)
    st_edit "$d/$GPT2_ST" '
for k, v in pairs:
    if k == "transformer.wte.weight":
        v["dtype"] = "F9"'
    run_bad unknown-dtype "$d" "$GPT2_ST" "unknown dtype" "F9"
fi

if want_case shape-span-mismatch; then
    d=$(fresh gpt2 shape-span-mismatch)
    st_edit "$d/$GPT2_ST" '
for k, v in pairs:
    if k == "transformer.wte.weight":
        assert v["shape"] == [67, 48]
        v["shape"] = [67, 47]'
    run_bad shape-span-mismatch "$d" "$GPT2_ST" "does not match" \
        "transformer.wte.weight"
fi

# A 1-d F32 tensor followed by another in data order grows (overlap) or
# shrinks (gap) by one element, shape and span kept consistent, so that
# the tiling is the only thing broken.
RESIZE='
ts = sorted((p for p in pairs if p[0] != "__metadata__"),
            key=lambda p: p[1]["data_offsets"][0])
a = next(p for p in ts[:-1] if p[1]["dtype"] == "F32" and len(p[1]["shape"]) == 1)
a[1]["shape"][0] += DELTA
a[1]["data_offsets"][1] += 4 * DELTA'

if want_case overlap; then
    d=$(fresh gpt2 overlap)
    st_edit "$d/$GPT2_ST" "DELTA = 1
$RESIZE"
    run_bad overlap "$d" "$GPT2_ST" "overlap"
fi

if want_case gap; then
    d=$(fresh gpt2 gap)
    st_edit "$d/$GPT2_ST" "DELTA = -1
$RESIZE"
    run_bad gap "$d" "$GPT2_ST" "gap"
fi

if want_case duplicate-name; then
    # two [48] F32 tensors; the second takes the first one's name, so the
    # raw JSON has the same key twice and the offsets still tile
    d=$(fresh gpt2 duplicate-name)
    st_edit "$d/$GPT2_ST" '
for p in pairs:
    if p[0] == "transformer.h.0.ln_1.bias":
        p[0] = "transformer.h.0.ln_1.weight"'
    run_bad duplicate-name "$d" "$GPT2_ST" "duplicate" \
        "transformer.h.0.ln_1.weight"
fi

if want_case index-missing-shard; then
    d=$(fresh tiny-llama index-missing-shard)
    rm "$d/$LLAMA_S2"
    run_bad index-missing-shard "$d" "$LLAMA_S2" "No such file or directory"
fi

if want_case index-tensor-not-in-shard; then
    d=$(fresh tiny-llama index-tensor-not-in-shard)
    json_edit "$d/model.safetensors.index.json" \
        "j['weight_map']['model.layers.0.mlp.extra_proj.weight'] = '$LLAMA_S1'"
    run_bad index-tensor-not-in-shard "$d" "$LLAMA_S1" "not in" \
        "model.layers.0.mlp.extra_proj.weight"
fi

if want_case shard-tensor-not-listed; then
    # total_size is lowered too, so that only the listing is wrong
    d=$(fresh tiny-llama shard-tensor-not-listed)
    json_edit "$d/model.safetensors.index.json" "
del j['weight_map']['model.layers.1.mlp.down_proj.weight']
j['metadata']['total_size'] -= 64 * 160 * 2"
    run_bad shard-tensor-not-listed "$d" "$LLAMA_S2" "not listed" \
        "model.layers.1.mlp.down_proj.weight"
fi

if want_case config-bad-json; then
    d=$(fresh tiny-llama config-bad-json)
    printf '{"model_type": "llama", "hidden_size": 64,\n' >"$d/config.json"
    run_bad config-bad-json "$d" "config.json" "invalid JSON"
fi

if want_case symlink-outside; then
    d=$(fresh gpt2 symlink-outside)
    mkdir "$TESTDIR/elsewhere"
    mv "$d/$GPT2_ST" "$TESTDIR/elsewhere/$GPT2_ST"
    ln -s "$TESTDIR/elsewhere/$GPT2_ST" "$d/$GPT2_ST"
    run_bad symlink-outside "$d" "$GPT2_ST" "outside"
fi

if want_case symlink-outside-relative; then
    d=$(fresh tiny-llama symlink-outside-relative)
    mkdir "$TESTDIR/elsewhere-rel"
    mv "$d/$LLAMA_S1" "$TESTDIR/elsewhere-rel/$LLAMA_S1"
    ln -s "../elsewhere-rel/$LLAMA_S1" "$d/$LLAMA_S1"
    run_bad symlink-outside-relative "$d" "$LLAMA_S1" "outside"
fi

note "$npass passed, $nfail failed${failed:+:$failed}"
if [ "$nfail" -ne 0 ] || [ "$npass" -eq 0 ]; then
    exit 1
fi
note "PASS"
