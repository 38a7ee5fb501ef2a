"""The daemon: one trio nursery running the FUSE loop and the background tasks.

``serve(mountpoint)`` opens the repo (one :class:`Repo` for the daemon's lifetime), builds the
subtrees and the VFS, replays the write-back journal (/mfs rows are committed then; rows of
subtrees behind a server are queued, uploaded once the mount is live: vfs/recovery.py),
mounts, and then runs in one nursery:

- the FUSE loop (``fuse_ops.serve``); if the file system is unmounted from outside
  (``mcpfs unmount``, ``fusermount3 -u``) it returns and the daemon shuts down;
- a signal watcher: SIGTERM, SIGINT and SIGHUP shut down cleanly;
- the control socket, when a ``control`` hook is given: ``await nursery.start(control,
  repo, stats=...)``, i.e. ``control.server.serve(repo, *, stats, task_status)`` fits as is
  (``run`` uses it by default; the FUSE ops and the socket share one Stats) (bind further
  arguments, e.g. the VFS for ``mcpfs refresh``, with functools.partial). It must call
  ``task_status.started()`` once its socket listens and run until cancelled; it shares the
  daemon's Repo, so MFS changes made through it and through the mount are serialized by the
  one MFS lock.

``READY=1`` goes to ``$NOTIFY_SOCKET`` (systemd's ``Type=notify`` protocol, also used by
``mcpfs mount`` to learn when the mount is live) only after a stat of the mount point was
answered by our own loop. At shutdown: ``STOPPING=1``, pending writes are committed (failures
stay in the journal), the file system is unmounted (lazily if busy) and the journal closed,
all within ``[daemon] unmount_grace`` seconds (:class:`ShutdownLimit`: past them the process
exits and the journal keeps what had not ended). :class:`DaemonLock` keeps a second daemon
off the same state dir until then.
Errors before the mount is live raise McpfsError with a one-line reason.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .config import Config, load_config, paths
from .errors import McpfsError
from .process_lock import ProcessLock
from .stats import Stats

log = logging.getLogger("mcpfs.daemon")

LIVE_TIMEOUT = 10.0  # seconds to wait for the kernel to route requests to us after mounting
UNMOUNT_GRACE = 30.0  # seconds a shutdown waits for pending commits ([daemon] unmount_grace)
DAEMON_LOCK_WAIT = 10.0  # seconds a start waits for a previous daemon to exit (DaemonLock)
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
ControlHook = Callable[..., Awaitable[Any]]  # async (repo, *, stats, task_status) -> None


def sd_notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to ``$NOTIFY_SOCKET``; False when there is none.
    An abstract socket is written ``@name``. Send errors are logged, never raised."""
    addr = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify %r: %s", state, exc)
        return False
    return True


def check_mountpoint(mountpoint: str) -> str:
    """The absolute mount point, or McpfsError with the reason it cannot be mounted on."""
    path = os.path.abspath(mountpoint)
    if not os.path.exists("/dev/fuse"):
        raise McpfsError("/dev/fuse is missing (is the fuse module loaded?)")
    if not os.path.isdir(path):
        raise McpfsError(f"mount point {path} does not exist or is not a directory")
    if os.path.ismount(path):
        raise McpfsError(f"mount point {path} is busy (already a mount point)")
    return path


async def _wait_live(mountpoint: str) -> None:
    """Return once a stat of the mount point is answered by a FUSE file system (ours).

    The stat's thread is abandoned on cancellation: a signal right after the mount stops
    the request loop, and the stat would then wait for an answer that never comes (the
    unmount that follows ends it)."""
    with trio.fail_after(LIVE_TIMEOUT):
        while not await trio.to_thread.run_sync(os.path.ismount, mountpoint,
                                                abandon_on_cancel=True):
            await trio.sleep(0.02)


async def _signals(signals: Any, cancel: trio.CancelScope, limit: ShutdownLimit) -> None:
    async for signum in signals:
        log.info("received %s: unmounting", signal.Signals(signum).name)
        limit.begin(cancel)
        return


async def _close_mount(mount: Any) -> None:
    try:
        await mount.aclose()
    except Exception as exc:  # noqa: BLE001 - unmounting: logged, go on
        log.error("unmount of /%s: %s", mount.name, exc)


def unmount_grace(config: Config | None) -> float:
    """``[daemon] unmount_grace``: seconds the shutdown waits for pending commits."""
    section = config.section("daemon") if config is not None else {}
    try:
        grace = float(section.get("unmount_grace", UNMOUNT_GRACE))
    except (TypeError, ValueError):
        grace = -1.0
    if not grace > 0:
        raise McpfsError("[daemon] unmount_grace must be a number of seconds above 0")
    return grace


class ShutdownLimit:
    """The time limit of a shutdown: :meth:`begin` (the FUSE loop ended, or a signal came)
    starts a timer thread; if the shutdown has not ended ``grace`` seconds later (commits
    of pending writes waiting for a server that hangs, or an upload too long to wait for),
    that thread unmounts lazily and ends the process at once (status 0, or 1 if it never
    was ready): as a ``kill -9`` would, but with the file system unmounted and the log
    flushed. What had not ended stays in the
    journal (``committing``) and the next start uploads it, resuming a multipart upload;
    rclone leaves uploads to the next run the same way, with no grace at all. A commit's
    worker thread cannot be interrupted, and the nursery waits for it (the commits are
    shielded), hence an exit rather than a cancel. :meth:`end` stops the timer."""

    def __init__(self, grace: float, mountpoint: str, vfs: Any, state: dict) -> None:
        self.grace, self.mountpoint, self.vfs, self.state = grace, mountpoint, vfs, state
        self._timer: threading.Timer | None = None

    def begin(self, cancel: trio.CancelScope | None = None) -> None:
        if cancel is not None:
            cancel.cancel()
        if self._timer is None:
            self._timer = threading.Timer(self.grace, self._exit)
            self._timer.daemon = True
            self._timer.start()

    def guard(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """``fn``, whose failure also begins the limit: trio then cancels the nursery,
        which waits for the shielded commits (no FUSE loop end or signal came)."""
        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except BaseException:
                self.begin()
                raise
        return guarded

    def end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _exit(self) -> None:  # (the timer thread: whatever fails here, the process ends)
        try:
            try:
                pending: Any = sum(1 for of in list(self.vfs.open_files.values())
                                   if of.dirty and not of.unlinked)
            except RuntimeError:  # changed meanwhile: only for the message
                pending = "some"
            log.error("shutdown: %s pending writes did not end within %.0f s; they stay "
                      "in the journal for the next start (mcpfs status lists them)",
                      pending, self.grace)
            if not self.state["unmounted"]:
                subprocess.run(["fusermount3", "-uz", self.mountpoint], check=False,
                               timeout=5, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
            for handler in logging.getLogger().handlers:
                handler.flush()
        except BaseException:  # noqa: BLE001 - exiting regardless
            pass
        finally:
            os._exit(0 if self.state["ready"] else 1)


async def _fuse_loop(cancel: trio.CancelScope, state: dict, limit: ShutdownLimit) -> None:
    from . import fuse_ops
    await fuse_ops.serve()
    log.info("file system was unmounted")
    state["unmounted"] = True
    limit.begin(cancel)


def build_bridge(state_dir: Any, repo: Any, config: Config | None, stats: Stats) -> Any:
    """The bridge over the provenance DB in ``state_dir`` (blocking: opens SQLite), or None
    (logged) when that DB cannot be opened: the mount then works without native copies.
    Its identity profile is ``[bridge] profile`` (an ``ipfs add --profile`` name), else the
    MFS import params; an unknown profile is McpfsError."""
    import sqlite3

    from .backends.ipfs.importer import params_for
    from .bridge import Bridge, ProvenanceDB
    section = config.section("bridge") if config is not None else {}
    profile = section.get("profile")
    try:
        params = params_for(profile) if profile else repo.mfs_params
    except McpfsError as exc:
        raise McpfsError(f"[bridge] profile: {exc}") from None
    try:
        db = ProvenanceDB(state_dir)
    except (sqlite3.Error, OSError) as exc:
        log.error("provenance DB unusable (%s): running without the bridge", exc)
        return None
    return Bridge(db, params, repo=repo, mfs_params=repo.mfs_params, stats=stats)


async def serve(mountpoint: str, config: Config | None = None,
                control: ControlHook | None = None, debug_fuse: bool = False) -> None:
    """Mount, run until unmounted or signalled, clean up (see the module docstring).
    SIGINT/SIGTERM are caught from the start: one that arrives while the mount is being
    set up (it is visible before the request loop runs) unmounts cleanly too."""
    with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        await _serve(mountpoint, config, control, debug_fuse, signals)


class DaemonLock(ProcessLock):
    """One daemon per state dir (its journal, spools and repo), from its start until its
    last commit at shutdown has ended: a daemon still uploading after an unmount must not
    see a second one replay its journal rows (and discard the spools of its open ones)."""

    default_wait = DAEMON_LOCK_WAIT

    def busy(self, holder: str) -> str:
        return (f"another mcpfs daemon (pid {holder}) uses {self.path.parent}: mounted "
                "elsewhere, or still finishing its uploads after an unmount (its log says "
                "which); retry once it has exited")


async def _serve(mountpoint: str, config: Config | None, control: ControlHook | None,
                 debug_fuse: bool, signals: Any) -> None:
    mountpoint = check_mountpoint(mountpoint)
    lock = DaemonLock(paths().ensure().state_dir / "daemon.lock")
    await trio.to_thread.run_sync(lock.acquire)
    try:
        await _serve_locked(mountpoint, config, control, debug_fuse, signals)
    finally:
        lock.release()


async def _serve_locked(mountpoint: str, config: Config | None, control: ControlHook | None,
                        debug_fuse: bool, signals: Any) -> None:
    from . import fuse_ops
    from .backends.ipfs.node import Repo
    from .mounts import build_mounts
    from .vfs import VFS
    from .bridge.transfers import Transfers
    from .vfs.journal import Journal

    where = paths().ensure()
    grace = unmount_grace(config)
    repo = await trio.to_thread.run_sync(Repo, where.repo_dir)
    mounts = await trio.to_thread.run_sync(build_mounts, repo, config)
    journal = await trio.to_thread.run_sync(Journal, where.state_dir)
    stats = Stats()
    bridge = await trio.to_thread.run_sync(build_bridge, where.state_dir, repo, config, stats)
    vfs = VFS(mounts, where.cache_dir / "spool", journal, bridge)
    if bridge is not None:
        bridge.transfers = Transfers(bridge, vfs, where.cache_dir)
    for mount in mounts.values():  # backends count their own requests (Stats.backend)
        attach = getattr(mount, "attach_stats", None)
        if attach is not None:
            attach(stats)
    try:
        for mount_name, path, outcome in await vfs.recover():
            log.info("journal: /%s/%s %s", mount_name, path, outcome)
        fuse_ops.mount(fuse_ops.FuseOps(vfs, stats), mountpoint, debug_fuse)
    except BaseException:
        journal.close()
        if bridge is not None:
            bridge.db.close()
        raise
    state = {"unmounted": False, "ready": False}
    limit = ShutdownLimit(grace, mountpoint, vfs, state)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_fuse_loop, nursery.cancel_scope, state, limit)
            nursery.start_soon(_signals, signals, nursery.cancel_scope, limit)
            guard = limit.guard
            for mount in mounts.values():  # e.g. /s3's first request, off the user's path
                nursery.start_soon(guard(mount.warm))
            await nursery.start(guard(repo.mfs.run_flusher))  # MFS syncs: ~1 s, and at exit
            await nursery.start(guard(vfs.write_back.serve))  # commits after close()
            # ---- the control socket: control.server.serve(repo, task_status=...)
            if control is not None:
                await nursery.start(guard(functools.partial(
                    control, stats=stats, bridge=bridge, vfs=vfs)), repo)
            await _wait_live(mountpoint)
            await trio.to_thread.run_sync(fuse_ops.tune_read_ahead, mountpoint)
            log.info("mounted %s", mountpoint)
            if bridge is not None:  # mcpfs cp; resumes unfinished transfers
                await nursery.start(guard(bridge.transfers.serve))
            sd_notify(f"READY=1\nSTATUS=mounted {mountpoint}\nMAINPID={os.getpid()}")
            state["ready"] = True
    finally:
        limit.begin()  # (already begun, unless a task failed)
        sd_notify("STOPPING=1")
        with trio.CancelScope(shield=True):
            for local in (True, False):  # /mfs first: done (and its attrs saved) before
                # a hung server can run the shutdown out of time
                await vfs.commit_all(local, recovered=state["ready"])
                for mount in mounts.values():  # each one's, whatever another's did
                    if mount.local_commit == local:
                        await _close_mount(mount)
        fuse_ops.close(unmount=not state["unmounted"])
        journal.close()
        if bridge is not None:
            bridge.db.close()
        limit.end()
        log.info("unmounted %s", mountpoint)


def run(mountpoint: str, config_file: str | None = None, control: ControlHook | None = None,
        debug_fuse: bool = False) -> None:
    """Blocking entry point (foreground mount); McpfsError when it cannot mount.

    ``control`` defaults to the control socket server (``mcpfs.control.server.serve``)."""
    config = load_config(config_file)
    if control is None:
        from .control.server import serve as control
    trio.run(lambda: serve(mountpoint, config, control, debug_fuse))


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("MCPFS_LOG", "INFO")).upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """``python -m mcpfs.daemon MOUNTPOINT [--config FILE]``: what ``mcpfs mount`` spawns."""
    parser = argparse.ArgumentParser(prog="mcpfs-daemon")
    parser.add_argument("mountpoint")
    parser.add_argument("--config", default=None)
    parser.add_argument("--debug-fuse", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(args.mountpoint, args.config, debug_fuse=args.debug_fuse)
    except McpfsError as exc:
        log.error("%s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
