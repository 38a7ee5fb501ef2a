"""``python -m bench mount``: the mounted tree side by side with its references, in one run.

Three file systems serve the same data: the mcpfs mount (``mcpfs mount``, its own
``MCPFS_HOME`` in the work folder), a minimal pyfuse3 passthrough (``bench/passthrough.py``, a
child process) over a local folder, and that local folder directly. kubo 0.22 (``bench/kubo.py``)
is the reference for ``cp`` into /mfs. Rows (each the median of ``runs`` runs, goals of issue 3):

- open + read 1 byte + close, warm: per-op median of a tight Python loop (goal <= 100 us);
- ``ls -l`` of a 10,000-entry directory, warm (goal <= 0.2 s), and ``ls -f`` (names only: no
  stat, no xattr requests);
- creating 1,000 small files (1 KiB, open/write/close in Python) (goal >= 1,000 files/s);
- daemon RSS growth per cached entry over an ``ls -l`` of a 100,000-entry directory
  (VmRSS from /proc/<pid>/status before and after; goal <= 1 KiB);
- sequential read of a 1 GiB /mfs file, cold (page cache dropped) and warm (caches filled
  side by side: ``fill_cache_interleaved``) (goal: mcpfs >= 70%
  of the passthrough);
- ``cp`` of 1 GiB into /mfs vs kubo's AddFile of the same size (goal: ratio >= 1.0).

The data is put into the mcpfs repo with the IPFS core before mounting (import of the 1 GiB
file, directories built with ``build_directory``, linked into MFS with ``mfs.cp``), so only the
measured operation goes through the mount. Everything is unmounted and every child process is
ended at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .common import MiB, Result, evict, make_source
from .kubo import IMPL as KUBO, KuboProcess
from .passthrough import PassthroughProcess

MCPFS = "mcpfs mount"
PASS = "pyfuse3 passthrough"
PASS_NK = "passthrough keep_cache=0"
DIRECT = "direct (local fs)"

READ_BUF = MiB  # bytes per read() in the sequential read
SMALL_SIZE = 1024  # bytes per created small file
LS_GOAL_S = 0.2
CREATE_GOAL = 1000.0
ORC_GOAL_US = 100.0
RSS_GOAL_B = 1024.0
READ_RATIO_GOAL = 0.70
CP_RATIO_GOAL = 1.0
MOUNT_TIMEOUT = 600  # seconds for any single command against the mount


@dataclass
class Sizes:
    file_mib: int = 1024
    ls_entries: int = 10_000
    creates: int = 1000
    orc_ops: int = 2000
    rss_entries: int = 100_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(file_mib=64, ls_entries=2000, creates=200, orc_ops=500, rss_entries=20_000)


@dataclass
class Row(Result):
    """A Result whose headline value has a unit, a goal and a verdict."""

    unit: str = "s"  # "MB/s", "s", "files/s", "us/op", "B/entry"
    goal: str = ""
    verdict: str = ""  # "pass", "FAIL" or "" (a reference row)

    @property
    def value(self) -> float | None:
        if not self.samples:
            return None
        return {"MB/s": self.mbps, "files/s": self.ops_per_s, "us/op": self.median * 1e6,
                "s": self.median, "B/entry": self.median}[self.unit]

    def judge(self, ok: bool | None, detail: str = "") -> None:
        if ok is not None and self.samples:
            self.verdict = "pass" if ok else "FAIL"
        if detail:
            self.note = "; ".join(x for x in (detail, self.note) if x)

    def to_json(self) -> dict:
        out = super().to_json()
        if self.unit == "B/entry":  # samples are bytes per entry, not seconds
            out["samples_bytes_per_entry"] = out.pop("samples_s")
            out.pop("median_s")
        out.update(unit=self.unit, value=self.value, goal=self.goal, verdict=self.verdict)
        return out


def table(rows: list[Row]) -> str:
    head = ("bench", "impl", "params", "median", "goal", "pass", "runs", "note")
    lines = [head]
    for r in rows:
        v = r.value
        if v is None:
            val = "-"
        else:
            val = f"{v:.3f} {r.unit}" if r.unit == "s" else f"{v:,.0f} {r.unit}" if v >= 100 \
                else f"{v:.1f} {r.unit}"
        lines.append((r.bench, r.impl, r.params, val, r.goal, r.verdict, str(len(r.samples)),
                      r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in (3, 6) else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells + [line[-1]]).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 10)
    return "\n".join(out)


# ---------------------------------------------------------------- helpers
def drop_caches(fallback: Callable[[], Iterator[Path]]) -> str:
    """Empty the page cache: ``echo 3 > /proc/sys/vm/drop_caches`` as root, else
    posix_fadvise(DONTNEED) on the files ``fallback()`` yields. Returns the method used."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return "drop_caches"
    except OSError:
        evict(fallback())
        return "fadvise"


def fill_cache_interleaved(paths: list[Path], size: int, chunk: int = 16 * MiB) -> None:
    """Read ``paths`` into the page cache side by side, ``chunk`` of each in turn.

    Why: on this kind of VM, the page cache filled first after the cache was emptied is
    ~40% slower to read warm than one filled after it, whichever file system filled it
    (the same 4 KiB pages either way; measured both ways round in one run: mcpfs first
    8.4 vs passthrough 14.4 GB/s, passthrough first 7.7 vs mcpfs 12.9). Filling them one
    after another made the warm rows measure the order. Filled in turn, the two read at
    the same speed."""
    fds = [os.open(path, os.O_RDONLY) for path in paths]
    buf = bytearray(chunk)
    try:
        for offset in range(0, size, chunk):
            for fd in fds:
                os.preadv(fd, [buf], offset)
    finally:
        for fd in fds:
            os.close(fd)


def status_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{name} missing from /proc/{pid}/status")


def read_file(path: Path, expect: int, digest=None) -> float:
    """Sequential read in READ_BUF pieces; seconds. ``digest`` (hashlib) is fed if given."""
    buf = bytearray(READ_BUF)
    view = memoryview(buf)
    n = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while True:
            got = fh.readinto(buf)
            if not got:
                break
            if digest is not None:
                digest.update(view[:got])
            n += got
    secs = time.perf_counter() - start
    if n != expect:
        raise AssertionError(f"{path}: read {n} bytes, expected {expect}")
    return secs


def open_read_close(path: Path, ops: int, warmup: int = 200) -> float:
    """Per-op median (seconds) of open + read(1) + close, after ``warmup`` untimed ops."""
    p = os.fsencode(path)
    for _ in range(warmup):
        fd = os.open(p, os.O_RDONLY)
        os.read(fd, 1)
        os.close(fd)
    times = [0] * ops
    clock = time.perf_counter_ns
    for i in range(ops):
        t = clock()
        fd = os.open(p, os.O_RDONLY)
        os.read(fd, 1)
        os.close(fd)
        times[i] = clock() - t
    return statistics.median(times) / 1e9


def create_files(folder: Path, count: int) -> float:
    payload = b"x" * SMALL_SIZE
    start = time.perf_counter()
    for i in range(count):
        with open(folder / f"s{i:05d}", "wb") as fh:
            fh.write(payload)
    return time.perf_counter() - start


def run_cmd(args: list[str], timeout: float = MOUNT_TIMEOUT) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=timeout)
    secs = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()[-500:]}")
    return secs


@contextlib.contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# ---------------------------------------------------------------- the mcpfs side
class McpfsMount:
    """``mcpfs mount`` in the background with MCPFS_HOME=home; unmounts and ends the daemon."""

    def __init__(self, home: Path, mountpoint: Path) -> None:
        self.home = home
        self.mountpoint = mountpoint
        self.env = dict(os.environ, MCPFS_HOME=str(home))
        done = subprocess.run([sys.executable, "-m", "mcpfs", "mount", str(mountpoint)],
                              env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"mcpfs mount failed: {done.stderr.strip()}")
        try:
            self.pid = int(done.stderr.rsplit("daemon pid", 1)[1].split(")")[0])
        except (IndexError, ValueError):
            self.close()
            raise RuntimeError(f"no daemon pid in {done.stderr!r}") from None

    @property
    def log(self) -> Path:
        return self.home / "state" / "mcpfs.log"

    def reads(self, mount: str = "mfs") -> tuple[int, int]:
        """(read requests, bytes) the daemon has served for ``mount`` (``mcpfs stats``)."""
        done = subprocess.run([sys.executable, "-m", "mcpfs", "stats", "--json"],
                              env=self.env, capture_output=True, text=True, timeout=60)
        op = json.loads(done.stdout)["Mounts"].get(mount, {}).get("Ops", {}).get("read", {})
        return op.get("Count", 0), op.get("Bytes", 0)

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                return fh.read().split(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return False

    def close(self) -> None:
        if os.path.ismount(self.mountpoint):
            done = subprocess.run([sys.executable, "-m", "mcpfs", "unmount",
                                   str(self.mountpoint)], env=self.env, capture_output=True)
            if done.returncode:
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)],
                               capture_output=True)
        pid = getattr(self, "pid", None)
        if pid is None:
            return
        deadline = time.monotonic() + 120  # it commits pending writes first
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            time.sleep(2)
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)

    def __enter__(self) -> McpfsMount:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def populate(home: Path, data: Path, sizes: Sizes, runs: int) -> dict:
    """Put the data into the mcpfs repo with the IPFS core (no daemon runs yet):
    /read.bin (data/read.bin), /small.txt, /ls (``ls_entries`` distinct small files, also
    written to data/ls), /rss-<i> (``rss_entries`` names per run, distinct per run, all
    linking the empty file). Returns the CIDs."""
    import trio

    from mcpfs.backends.ipfs.add import Adder
    from mcpfs.backends.ipfs.directory import build_directory
    from mcpfs.backends.ipfs.importer import import_bytes, import_stream
    from mcpfs.backends.ipfs.node import Repo
    from mcpfs.config import paths

    with env_var("MCPFS_HOME", str(home)):
        repo = Repo(paths().ensure().repo_dir)
    store, params = repo.flatfs, repo.mfs_params
    put_node = Adder(store, params).put_node
    with open(data / "read.bin", "rb", buffering=0) as fh:
        big = import_stream(store, fh, params)
    small = import_bytes(store, (data / "small.txt").read_bytes(), params)
    entries = []
    (data / "ls").mkdir()
    for i in range(sizes.ls_entries):
        name = f"f{i:06d}"
        body = f"{name}\n".encode()
        (data / "ls" / name).write_bytes(body)
        leaf = import_bytes(store, body, params)
        entries.append((name, leaf.cid, leaf.tsize))
    ls_dir = build_directory(entries, params, put_node)
    empty = import_bytes(store, b"", params)
    rss_dirs = [build_directory(((f"r{run}-{i:06d}", empty.cid, empty.tsize)
                                 for i in range(sizes.rss_entries)), params, put_node)
                for run in range(runs)]
    store.sync()
    links = [("/read.bin", big.cid), ("/small.txt", small.cid), ("/ls", ls_dir.cid)]
    links += [(f"/rss-{run}", d.cid) for run, d in enumerate(rss_dirs)]

    async def link() -> None:
        for path, cid in links:
            await repo.mfs.cp(f"/ipfs/{cid}", path, flush=False)
        await repo.mfs.flush()

    trio.run(link)
    return {"read.bin": str(big.cid), "small.txt": str(small.cid), "ls": str(ls_dir.cid),
            "ls_sharded": ls_dir.sharded, "rss_sharded": rss_dirs[0].sharded,
            "mfs_params": params}


def add_n(path: Path, params) -> str:
    from mcpfs.backends.ipfs.blockstore import NullBlockstore
    from mcpfs.backends.ipfs.importer import import_stream
    with open(path, "rb", buffering=0) as fh:
        return str(import_stream(NullBlockstore(), fh, params).cid)


# ---------------------------------------------------------------- the run
def run(work: Path, runs: int, sizes: Sizes, use_kubo: bool,
        step: Callable[[str], None]) -> tuple[dict, list[Row], dict]:
    data, home, cpdir = work / "data", work / "home", work / "cp"
    mnt, pt, ptnk = work / "mnt", work / "pt", work / "pt-nk"
    for folder in (data, home, cpdir, mnt, pt, ptnk):
        folder.mkdir()
    size = sizes.file_mib * MiB
    label = f"{sizes.file_mib // 1024} GiB" if sizes.file_mib % 1024 == 0 else \
        f"{sizes.file_mib} MiB"
    checks: dict[str, str] = {}
    meta: dict = {"sizes": sizes.__dict__, "runs": runs}

    step(f"writing the sources: {sizes.file_mib} MiB read file + {runs} cp source(s)")
    sha = make_source(data / "read.bin", sizes.file_mib, seed=0)
    for i in range(runs):
        make_source(cpdir / f"src-{i}.bin", sizes.file_mib, seed=100 + i)
    (data / "small.txt").write_bytes(b"s" * SMALL_SIZE)
    os.sync()  # no writeback of the sources during the measurements
    step(f"populating the repo with the IPFS core ({sizes.ls_entries} + "
         f"{runs} x {sizes.rss_entries} entries)")
    cids = populate(home, data, sizes, runs)
    os.sync()
    meta["cids"] = {k: v for k, v in cids.items() if k != "mfs_params"}

    def row(bench: str, impl: str, params: str, unit: str, goal: str = "", **kw) -> Row:
        return Row(bench, impl, params, unit=unit, goal=goal, **kw)

    with contextlib.ExitStack() as stack:
        step("mounting mcpfs and the passthrough")
        m = stack.enter_context(McpfsMount(home, mnt))
        stack.enter_context(PassthroughProcess(data, pt, work / "passthrough.log"))
        stack.enter_context(PassthroughProcess(data, ptnk, work / "passthrough-nk.log",
                                               keep_cache=False))
        mfs = mnt / "mfs"
        meta["daemon_pid"] = m.pid
        rss_start = status_kib(m.pid, "VmRSS")
        places = [(MCPFS, mfs), (PASS, pt), (DIRECT, data)]
        tags = {MCPFS: "mcpfs", PASS: "pt", DIRECT: "direct"}
        # reads and open+read+close also through the passthrough without keep_cache
        rplaces = places[:2] + [(PASS_NK, ptnk)] + places[2:]

        # -- open + read 1 byte + close
        step("open + read 1 B + close")
        orc = [row("open+read 1B+close, warm", impl, f"{where.name}/small.txt x{sizes.orc_ops}",
                   "us/op", f"<= {ORC_GOAL_US:.0f} us" if impl == MCPFS else "")
               for impl, where in rplaces]
        for _ in range(runs):
            for r, (_, where) in zip(orc, rplaces):
                r.add(open_read_close(where / "small.txt", sizes.orc_ops), 0)
        orc[0].judge(orc[0].value <= ORC_GOAL_US)
        orc[1].note = "300 s entry/attr timeouts, keep_cache (pyfuse3 defaults)"

        # -- ls -l
        step(f"ls -l of {sizes.ls_entries} entries")
        ls_rows = [row("ls -l, warm", impl, f"{sizes.ls_entries} entries", "s",
                       f"<= {LS_GOAL_S} s" if impl == MCPFS else "")
                   for impl, _ in places]
        for _, where in places:
            run_cmd(["ls", "-l", str(where / "ls")])  # warm-up
        for _ in range(runs):
            for r, (_, where) in zip(ls_rows, places):
                r.add(run_cmd(["ls", "-l", str(where / "ls")]), 0)
        ls_rows[0].judge(ls_rows[0].value <= LS_GOAL_S,
                         "HAMT-sharded dir" if cids["ls_sharded"] else "")
        ls_rows[1].note = "no getxattr: ENOSYS once, then the kernel stops asking"
        lsf = [row("ls -f (names only), warm", impl, f"{sizes.ls_entries} entries", "s")
               for impl, _ in places]
        for _ in range(runs):
            for r, (_, where) in zip(lsf, places):
                r.add(run_cmd(["ls", "-f", str(where / "ls")]), 0)
        ls_rows += lsf

        # -- create small files
        os.sync()
        step(f"create {sizes.creates} small files")
        cr = [row("create small files", impl, f"{sizes.creates} x {SMALL_SIZE} B", "files/s",
                  f">= {CREATE_GOAL:,.0f} files/s" if impl == MCPFS else "", ops=sizes.creates)
              for impl, _ in places]
        for i in range(runs):
            for r, (impl, where) in zip(cr, places):
                folder = where / f"create-{tags[impl]}-{i}"
                folder.mkdir()
                r.add(create_files(folder, sizes.creates), 0)
        cr[0].judge(cr[0].value >= CREATE_GOAL)
        first = sorted(os.listdir(mfs / "create-mcpfs-0"))
        checks["mcpfs created files listed"] = (
            "yes" if len(first) == sizes.creates else f"NO ({len(first)} of {sizes.creates})")

        # -- daemon RSS per cached entry
        step(f"daemon RSS over ls -l of {sizes.rss_entries} entries, {runs} run(s)")
        rss = row("daemon RSS per cached entry", MCPFS,
                  f"ls -l of {sizes.rss_entries} entries", "B/entry",
                  f"<= {RSS_GOAL_B:.0f} B/entry")
        ls_secs = []
        for i in range(runs):
            before = status_kib(m.pid, "VmRSS")
            ls_secs.append(run_cmd(["ls", "-l", str(mfs / f"rss-{i}")]))
            after = status_kib(m.pid, "VmRSS")
            rss.add((after - before) * 1024 / sizes.rss_entries, 0)
        rss.judge(rss.value <= RSS_GOAL_B,
                  f"ls -l took {statistics.median(ls_secs):.1f} s (cold); "
                  f"{'HAMT' if cids['rss_sharded'] else 'plain'} dir of empty files")

        # -- sequential read, cold and warm
        step(f"sequential read of {sizes.file_mib} MiB, cold and warm")
        blocks_dir = home / "state" / "ipfs" / "blocks"

        def backing() -> Iterator[Path]:
            yield from blocks_dir.glob("*/*.data")
            yield data / "read.bin"
            for _, where in rplaces:
                yield where / "read.bin"

        reads = {}
        for temp in ("cold", "warm"):
            reads[temp] = [row(f"read seq {label}, {temp}", impl,
                               f"{READ_BUF // MiB} MiB read()s", "MB/s",
                               f">= {READ_RATIO_GOAL:.0%} of passthrough" if impl == MCPFS
                               else "", nbytes=size)
                           for impl, _ in rplaces]
        method = ""
        for _ in range(runs):
            for r, (_, where) in zip(reads["cold"], rplaces):
                method = drop_caches(backing)
                r.add(read_file(where / "read.bin", size), 0)
        drop_caches(backing)  # then every file's cache is filled in turn (not in order)
        fill_cache_interleaved([where / "read.bin" for _, where in rplaces], size)
        digest = hashlib.sha256()
        read_file(mfs / "read.bin", size, digest)  # warm-up, and the read-back check
        checks["mcpfs mount read sha256 == source"] = (
            "yes" if digest.hexdigest() == sha else "NO")
        for _, where in rplaces[1:]:
            read_file(where / "read.bin", size)
        before = m.reads()
        for _ in range(runs):
            for r, (_, where) in zip(reads["warm"], rplaces):
                r.add(read_file(where / "read.bin", size), 0)
        after = m.reads()  # a warm read should send none: the page cache answers
        checks["mcpfs warm reads that reached the daemon"] = (
            f"{after[0] - before[0]} requests, "
            f"{(after[1] - before[1]) / MiB:.1f} MiB of {runs * size // MiB} MiB read")
        for temp, (mine, theirs, nk, _direct) in reads.items():
            ratio = mine.mbps / theirs.mbps
            ratio_nk = mine.mbps / nk.mbps
            mine.judge(ratio >= READ_RATIO_GOAL,
                       f"{ratio:.2f} x passthrough, {ratio_nk:.2f} x keep_cache=0")
            if temp == "cold":
                theirs.note = f"page cache emptied by {method} before each read"
            else:
                theirs.note = "served from the kernel page cache (keep_cache)"
            checks[f"ratio mcpfs/passthrough read {temp}"] = f"{ratio:.2f}"
            checks[f"ratio mcpfs/passthrough keep_cache=0 read {temp}"] = f"{ratio_nk:.2f}"
        meta["cold_method"] = method

        # -- cp 1 GiB into /mfs vs kubo add
        step(f"cp {label} into /mfs vs kubo add, {runs} run(s)")
        cp = row(f"cp {label} into /mfs", MCPFS, "cp SRC mnt/mfs/ (one new file "
                 "per run)", "MB/s", f">= {CP_RATIO_GOAL} x kubo", nbytes=size)
        kadd = row("add (reference for cp)", KUBO, "AddFile, fresh repo, sync", "MB/s",
                   nbytes=size)
        k = stack.enter_context(KuboProcess(data / "read.bin", work)) if use_kubo else None
        for i in range(runs):
            os.sync()  # neither side times the other's pending writeback
            cp.add(run_cmd(["cp", str(cpdir / f"src-{i}.bin"), str(mfs / f"cp-{i}.bin")]), 0)
            if k:
                os.sync()
                out = k.call("add")
                kadd.add(out["secs"], out["rss_growth_mib"], out["cid"])
        if k:
            k.close()
            ratio = cp.mbps / kadd.mbps
            cp.judge(ratio >= CP_RATIO_GOAL, f"{ratio:.2f} x kubo")
            checks["ratio mcpfs cp / kubo add"] = f"{ratio:.2f}"
            checks["kubo add CID == mcpfs CID of read.bin"] = (
                "yes" if kadd.cid == cids["read.bin"] else
                f"NO (kubo {kadd.cid}, mcpfs {cids['read.bin']})")
            kadd.note = "same size, other bytes"
        got = os.getxattr(mfs / "cp-0.bin", "user.mcpfs.cid").decode()
        want = add_n(cpdir / "src-0.bin", cids["mfs_params"])
        checks["cp'd file CID == add -n of the source"] = (
            "yes" if got == want else f"NO (mount {got}, add -n {want})")

        meta["daemon_rss_kib"] = {"start": rss_start, "end": status_kib(m.pid, "VmRSS"),
                                  "peak": status_kib(m.pid, "VmHWM")}
        step("unmounting")

    rows = orc + ls_rows + cr + [rss] + reads["cold"] + reads["warm"] + [cp] + \
        ([kadd] if use_kubo else [])
    meta["daemon_log"] = str(home / "state" / "mcpfs.log")
    return meta, rows, checks
