#!/usr/bin/python3
"""load.py - concurrent random-read load on a ckptfs mount, every byte checked.

usage: load.py MNT SRC [--threads N] [--seconds S] [--views V1,V2,...]
               [--ckptfs PATH] [--cat-opts OPTS] [--files LIST]
               [--expect-dir DIR] [--direct] [--pid PID] [--reopen P]
               [--until-error] [--seed N]

The files under each view (MNT/VIEW, walked recursively; VIEW@DTYPE/ works
though it is not listed) are the files read.  --files LIST instead names the
files, one path relative to MNT a line.  Each file's expected bytes are
written once with `ckptfs cat [-o OPTS] SRC PATH` into --expect-dir (a
temporary directory by default, removed at exit) and mapped; the view file's
st_size must equal the expected length.

Then N threads read for S seconds: a file (a quarter of the picks uniform
over files, the rest weighted by size), a size log-uniform from 1 byte to
2 MiB, an offset uniform over the file or, one read in five, near or past
EOF.  Reads are os.pread; with --direct the files are opened O_DIRECT and
read with os.preadv into a page-aligned mmap buffer, offsets and sizes
rounded to 4096.  Every read must return exactly
min(size, st_size - offset) bytes (0 at or past EOF) equal to the expected
bytes.  Each thread keeps its descriptors open and reopens a file with
probability --reopen (default 0.01) before a read.

Printed at the end (and as one JSON line starting "load.py: result "):
reads, bytes, errors, mismatches, p50/p99 read latency in ms, and with
--pid the daemon's VmHWM and RssAnon from /proc/PID/status.

--until-error: the mode for unmounting under load.  Every thread stops at
its first error (open or read); the run ends when all threads have stopped
or S seconds have passed.  The exit status is 0 when every thread stopped on
an error and no read returned wrong bytes, 1 otherwise; the errors seen are
listed by errno.

Exit status (normal mode): 0 when there was no error and no mismatch, 1
otherwise, 2 on bad usage or setup (a file cannot be listed or its expected
bytes cannot be produced).
"""

import argparse
import collections
import errno
import json
import math
import mmap
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

MAX_READ = 2 << 20
ALIGN = 4096


def die(msg, code=2):
    sys.stderr.write("load.py: %s\n" % msg)
    sys.exit(code)


def parse_args():
    ap = argparse.ArgumentParser(description="random-read load on a ckptfs mount")
    ap.add_argument("mnt")
    ap.add_argument("src")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--views", default="hf,native,tp-4,native@fp32",
                    help="comma-separated views (directories under MNT)")
    ap.add_argument("--ckptfs", default=None,
                    help="the ckptfs binary for `ckptfs cat` (default $CKPTFS or ckptfs)")
    ap.add_argument("--cat-opts", default=None, help="-o options for `ckptfs cat`")
    ap.add_argument("--files", default=None,
                    help="file with one path relative to MNT a line (instead of --views)")
    ap.add_argument("--expect-dir", default=None,
                    help="keep expected bytes here (default: a temporary directory)")
    ap.add_argument("--direct", action="store_true", help="O_DIRECT reads, aligned")
    ap.add_argument("--pid", type=int, default=None, help="the daemon's pid, for its memory")
    ap.add_argument("--reopen", type=float, default=0.01)
    ap.add_argument("--until-error", action="store_true")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    if a.threads < 1 or a.seconds <= 0 or not 0 <= a.reopen <= 1:
        die("--threads >= 1, --seconds > 0, 0 <= --reopen <= 1")
    if a.ckptfs is None:
        a.ckptfs = os.environ.get("CKPTFS") or shutil.which("ckptfs") or "ckptfs"
    if a.seed is None:
        a.seed = int.from_bytes(os.urandom(4), "little")
    return a


def list_files(a):
    if a.files:
        with open(a.files) as f:
            rels = [l.strip().lstrip("/") for l in f if l.strip() and not l.startswith("#")]
    else:
        rels = []
        for view in [v.strip().strip("/") for v in a.views.split(",") if v.strip()]:
            top = os.path.join(a.mnt, view)
            if not os.path.isdir(top):
                die("%s is not a directory of the mount" % top)
            n = 0
            for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: die("walk %s: %s" % (top, e))):
                dirnames.sort()
                for fn in sorted(filenames):
                    rels.append(os.path.relpath(os.path.join(dirpath, fn), a.mnt))
                    n += 1
            if n == 0:
                die("view %s has no files" % view)
    if not rels:
        die("no files to read")
    return rels


class Target:
    __slots__ = ("rel", "path", "size", "exp", "expf")


def prepare(a, rels, expdir):
    """Write each file's expected bytes with ckptfs cat; map them."""
    targets = []
    for i, rel in enumerate(rels):
        t = Target()
        t.rel = rel
        t.path = os.path.join(a.mnt, rel)
        out = os.path.join(expdir, "%05d.%s" % (i, rel.replace("/", "_")[-80:]))
        if not os.path.exists(out) or os.path.getsize(out) == 0:
            cmd = [a.ckptfs, "cat"] + (["-o", a.cat_opts] if a.cat_opts else []) + [a.src, rel]
            with open(out + ".tmp", "wb") as f:
                p = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE)
            if p.returncode != 0:
                die("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                         p.stderr.decode(errors="replace").strip()))
            os.rename(out + ".tmp", out)
        try:
            st = os.stat(t.path)
        except OSError as e:
            die("stat %s: %s" % (t.path, e))
        t.size = st.st_size
        elen = os.path.getsize(out)
        if elen != t.size:
            die("%s: st_size %d, but `ckptfs cat` gives %d bytes" % (rel, t.size, elen), 1)
        t.expf = open(out, "rb")
        t.exp = mmap.mmap(t.expf.fileno(), 0, access=mmap.ACCESS_READ) if elen else b""
        targets.append(t)
    return targets


def daemon_mem(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[k] = int(v.split()[0])  # kB
    except OSError:
        pass
    return out


class Stats:
    def __init__(self):
        self.reads = 0
        self.bytes = 0
        self.errors = 0
        self.mismatches = 0
        self.lat = []
        self.errnos = collections.Counter()
        self.msgs = []
        self.stopped_on_error = False


def note_err(st, msg, en=None):
    st.errors += 1
    st.errnos[errno.errorcode.get(en, str(en)) if en is not None else "short"] += 1
    if len(st.msgs) < 5:
        st.msgs.append(msg)


def worker(a, targets, weights, deadline, seed, st, stop_evt):
    rnd = random.Random(seed)
    flags = os.O_RDONLY | (os.O_DIRECT if a.direct else 0)
    fds = {}
    buf = mmap.mmap(-1, MAX_READ) if a.direct else None
    mv = memoryview(buf) if a.direct else None
    lat = st.lat
    nfiles = len(targets)
    logmax = math.log(MAX_READ)
    try:
        while time.monotonic() < deadline and not stop_evt.is_set():
            if rnd.random() < 0.25:
                i = rnd.randrange(nfiles)
            else:
                i = rnd.choices(range(nfiles), cum_weights=weights)[0]
            t = targets[i]
            size = min(MAX_READ, int(math.exp(rnd.uniform(0, logmax))))
            r = rnd.random()
            if r < 0.02:
                off = t.size + rnd.randrange(0, 3 * ALIGN)  # at or past EOF
            elif r < 0.2:
                off = max(0, t.size - rnd.randrange(0, size + 2 * ALIGN))  # near EOF
            else:
                off = rnd.randrange(0, max(1, t.size))
            if a.direct:
                off -= off % ALIGN
                size = min(MAX_READ, (size + ALIGN - 1) // ALIGN * ALIGN)
            want = max(0, min(size, t.size - off))
            fd = fds.get(i)
            if fd is not None and rnd.random() < a.reopen:
                os.close(fd)
                del fds[i]
                fd = None
            if fd is None:
                try:
                    fd = os.open(t.path, flags)
                except OSError as e:
                    note_err(st, "open %s: %s" % (t.rel, e), e.errno)
                    if a.until_error:
                        st.stopped_on_error = True
                        return
                    continue
                fds[i] = fd
            t0 = time.perf_counter()
            try:
                if a.direct:
                    n = os.preadv(fd, [mv[:size]], off)
                    got = mv[:n]
                else:
                    got = os.pread(fd, size, off)
                    n = len(got)
            except OSError as e:
                lat.append(time.perf_counter() - t0)
                note_err(st, "pread(%s, %d, %d): %s" % (t.rel, size, off, e), e.errno)
                if a.until_error:
                    st.stopped_on_error = True
                    return
                continue
            lat.append(time.perf_counter() - t0)
            st.reads += 1
            st.bytes += n
            if n != want:
                if a.until_error and n < want:
                    # a read cut short by the unmount: an error, not wrong bytes
                    note_err(st, "pread(%s, %d, %d): %d bytes, expected %d" % (t.rel, size, off, n, want))
                    st.stopped_on_error = True
                    return
                st.mismatches += 1
                if len(st.msgs) < 5:
                    st.msgs.append("pread(%s, %d, %d) returned %d bytes, expected %d (st_size %d)"
                                   % (t.rel, size, off, n, want, t.size))
                continue
            if n and got != t.exp[off:off + n]:
                st.mismatches += 1
                if len(st.msgs) < 5:
                    exp = t.exp[off:off + n]
                    first = next(k for k in range(n) if got[k] != exp[k])
                    st.msgs.append("pread(%s, %d, %d): wrong bytes, first at file offset %d "
                                   "(got %02x, expected %02x)"
                                   % (t.rel, size, off, off + first, got[first], exp[first]))
    finally:
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        # buf and its views are freed with the thread (closing them here
        # would fail while a slice is still referenced)


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(math.ceil(p / 100.0 * len(sorted_vals))) - 1))
    return sorted_vals[k]


def main():
    a = parse_args()
    say = (lambda *x: None) if a.quiet else (lambda s: print("load.py: " + s, flush=True))
    rels = list_files(a)
    own_expdir = a.expect_dir is None
    expdir = tempfile.mkdtemp(prefix="ckptfs-load.") if own_expdir else a.expect_dir
    os.makedirs(expdir, exist_ok=True)
    try:
        t0 = time.monotonic()
        targets = prepare(a, rels, expdir)
        total = sum(t.size for t in targets)
        say("%d files, %d bytes, expected bytes from `%s cat` in %.1f s"
            % (len(targets), total, a.ckptfs, time.monotonic() - t0))
        cum, acc = [], 0
        for t in targets:
            acc += max(1, t.size)
            cum.append(acc)
        say("%d threads, %.1f s, %s reads, seed %d%s"
            % (a.threads, a.seconds, "O_DIRECT" if a.direct else "buffered", a.seed,
               ", until the first error per thread" if a.until_error else ""))
        if a.pid:
            m = daemon_mem(a.pid)
            if m:
                say("daemon before: VmHWM %d kB, RssAnon %d kB" % (m.get("VmHWM", -1), m.get("RssAnon", -1)))
        stats = [Stats() for _ in range(a.threads)]
        stop_evt = threading.Event()
        start = time.monotonic()
        deadline = start + a.seconds
        ths = [threading.Thread(target=worker, daemon=True,
                                args=(a, targets, cum, deadline, a.seed * 1000003 + k, stats[k], stop_evt))
               for k in range(a.threads)]
        for th in ths:
            th.start()
        # a read that hangs past the deadline is reported, not waited for forever
        hung = 0
        for th in ths:
            th.join(max(0.0, deadline + 30 - time.monotonic()))
            if th.is_alive():
                hung += 1
        stop_evt.set()
        elapsed = time.monotonic() - start
        lat = sorted(x for s in stats for x in s.lat)
        reads = sum(s.reads for s in stats)
        nbytes = sum(s.bytes for s in stats)
        errors = sum(s.errors for s in stats)
        mism = sum(s.mismatches for s in stats)
        errnos = collections.Counter()
        for s in stats:
            errnos.update(s.errnos)
        res = {
            "files": len(targets), "threads": a.threads, "seconds": round(elapsed, 2),
            "direct": a.direct, "reads": reads, "bytes": nbytes,
            "MB_per_s": round(nbytes / elapsed / 1e6, 1) if elapsed > 0 else 0,
            "errors": errors, "mismatches": mism, "hung_threads": hung,
            "p50_ms": round(pct(lat, 50) * 1e3, 3), "p99_ms": round(pct(lat, 99) * 1e3, 3),
            "max_ms": round(lat[-1] * 1e3, 3) if lat else None,
            "errnos": dict(errnos),
        }
        if a.until_error:
            res["threads_stopped_on_error"] = sum(1 for s in stats if s.stopped_on_error)
        if a.pid:
            m = daemon_mem(a.pid)
            res["daemon_VmHWM_kB"] = m.get("VmHWM")
            res["daemon_RssAnon_kB"] = m.get("RssAnon")
        say("reads %d, bytes %d (%.1f MB/s), errors %d, mismatches %d"
            % (reads, nbytes, res["MB_per_s"], errors, mism))
        say("read latency p50 %.3f ms, p99 %.3f ms, max %.3f ms"
            % (res["p50_ms"], res["p99_ms"], res["max_ms"] or float("nan")))
        if a.pid:
            if res["daemon_VmHWM_kB"] is not None:
                say("daemon (pid %d): VmHWM %d kB (%.1f MiB), RssAnon %d kB (%.1f MiB)"
                    % (a.pid, res["daemon_VmHWM_kB"], res["daemon_VmHWM_kB"] / 1024.0,
                       res["daemon_RssAnon_kB"], res["daemon_RssAnon_kB"] / 1024.0))
            else:
                say("daemon (pid %d): gone, no memory figures" % a.pid)
        if errnos:
            say("errors by errno: %s" % ", ".join("%s %d" % kv for kv in sorted(errnos.items())))
        shown = 0
        for s in stats:
            for msg in s.msgs:
                if shown < 10:
                    say("  " + msg)
                    shown += 1
        if hung:
            say("%d thread(s) still inside a read 30 s after the deadline" % hung)
        print("load.py: result " + json.dumps(res, sort_keys=True), flush=True)
        if a.until_error:
            ok = mism == 0 and hung == 0 and res["threads_stopped_on_error"] == a.threads
        else:
            ok = errors == 0 and mism == 0 and hung == 0 and reads > 0
        return (0 if ok else 1), hung
    finally:
        if own_expdir:
            shutil.rmtree(expdir, ignore_errors=True)


if __name__ == "__main__":
    rc, hung = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if hung:
        os._exit(1)  # threads stuck in a read cannot be joined: do not wait for them
    sys.exit(rc)
