"""The generated Python bindings against a real `deskhand serve` process on loopback, relays off.

Checks that the bindings work — the phone object, async calls, the listener foreign trait and its
handle, the key-provider foreign trait, the log sink, the error enum — by doing what a phone app
does. The Rust phone API's own logic is tested in Rust (sync/tests/phone.rs).

Environment: DESKHAND_BIN (the `deskhand` binary), DESKHAND_BINDINGS (folder holding the
generated module and the library). Run by scripts/binding-tests.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("DESKHAND_BIN", ROOT / "target" / "debug" / "deskhand"))
sys.path.insert(0, os.environ.get("DESKHAND_BINDINGS", str(ROOT / "target" / "bindings" / "python")))

import deskhand_mobile_bindings as dh  # noqa: E402

WAIT = 30.0
STARTED = time.monotonic()


def step(text):
    print(f"[python {time.monotonic() - STARTED:6.2f}s] {text}", flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Desktop:
    """A `deskhand serve` process with its own HOME, data directory and fixed loopback port."""

    def __init__(self, root: Path):
        self.home = root / "home"
        self.data = root / "desk"
        self.home.mkdir(parents=True)
        self.port = free_port()
        # Its own folder: the desktop protects the folder of its config file like its data.
        (root / "etc").mkdir()
        self.config = root / "etc" / "desk.toml"
        self.config.write_text(f'roots = ["{self.home}"]\n')
        self.proc = None
        self.lines = []

    def start(self):
        env = dict(os.environ, HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
                   XDG_DATA_HOME=str(self.home / ".local" / "share"), DESKHAND_LOG="warn")
        env.pop("DISPLAY", None)
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--data", str(self.data), "--listen", f"127.0.0.1:{self.port}",
             "--relay", "off", "--mdns", "off", "--name", "test-desktop", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        payload = None
        deadline = time.monotonic() + WAIT
        while payload is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("deskhand serve exited:\n" + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("pairing payload: "):
                payload = line.split(": ", 1)[1].strip()
            if time.monotonic() > deadline:
                raise RuntimeError("no pairing payload from deskhand serve")
        # Keep draining its output so that it never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return payload

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def pairing_code(self):
        out = subprocess.run([str(BIN), "pair", "--data", str(self.data)], check=True,
                             capture_output=True, text=True, timeout=WAIT).stdout
        return next(l.split(": ", 1)[1].strip() for l in out.splitlines()
                    if l.startswith("pairing payload: "))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Keystore(dh.KeyProvider):
    """What an app's Keychain/Keystore wrapper does: create the secret once, hand it back after."""

    def __init__(self, path: Path):
        self.path = path
        self.calls = 0

    def device_secret(self):
        self.calls += 1
        if not self.path.exists():
            self.path.write_bytes(dh.new_device_secret())
            self.path.chmod(0o600)
        return self.path.read_bytes()


class Sink(dh.LogSink):
    def __init__(self):
        self.lines = []

    def log(self, level, line):
        self.lines.append((level, line))


class Feed(dh.PhoneListener):
    """Collects snapshots (delivered on a library thread) into an asyncio queue."""

    def __init__(self, loop):
        self.loop = loop
        self.queue = asyncio.Queue()
        self.calls = 0

    def on_update(self, snapshot):
        self.calls += 1
        self.loop.call_soon_threadsafe(self.queue.put_nowait, snapshot)

    async def until(self, what, pred, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                snap = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None
            found = pred(snap)
            if found:
                return snap, found


def settings(data: Path, name: str):
    return dh.PhoneSettings(data_dir=str(data), device_name=name, platform="python",
                            listen="127.0.0.1:0", relay="off", mdns=False)


def task_of(snap, task_id):
    return next((t for t in snap.tasks if t.id == task_id), None)


def approval_for(snap, task_id):
    return next((a for a in snap.pending_approvals if a.task_id == task_id), None)


def reply_to(snap, task_id):
    return next((m for m in snap.messages if m.task_id == task_id and m.role == dh.MessageRole.AGENT), None)


async def expect_error(kind, coro):
    try:
        await coro
    except kind as e:
        return e
    raise AssertionError(f"expected {kind.__name__}")


async def scenario(root: Path):
    loop = asyncio.get_running_loop()
    sink = Sink()
    dh.init_platform("warn,deskhand_sync=info", sink)
    desk = Desktop(root)
    payload = desk.start()
    step(f"desktop up on 127.0.0.1:{desk.port}")
    opened = []
    try:
        await run(root, desk, payload, loop, sink, opened)
    finally:
        # Library threads must not call into Python while it exits.
        for p in opened:
            await p.shutdown()
        desk.stop()


async def run(root, desk, payload, loop, sink, opened):
    keys = Keystore(root / "a.key")
    a = await dh.open_phone(settings(root / "a", "phone-a"), keys)
    opened.append(a)
    assert keys.calls == 1
    assert a.snapshot().desktop is None
    await expect_error(dh.ApiError.NotPaired, a.send_message("too early"))

    paired = await a.pair(payload)
    assert paired.name == "test-desktop", paired
    await a.sync(int(WAIT * 1000))
    feed = Feed(loop)
    handle = a.subscribe(feed)
    first, _ = await feed.until("the first snapshot", lambda s: True, timeout=5)
    assert first.workspace_received and first.desktop.health is not None
    step(f"paired {a.device_id()[:10]} with {paired.name}; listener got the current state first")

    # A message: the agent replies and the task's progress arrives through the listener.
    mid = await a.send_message("list ~")
    tid = f"m-{mid}"
    snap, reply = await feed.until("the agent's reply", lambda s: reply_to(s, tid))
    task = task_of(snap, tid)
    assert task.status == dh.TaskStatus.DONE and task.events, task
    assert task.mine
    mine = next(m for m in snap.messages if m.id == mid)
    assert mine.mine
    await feed.until("the message synced", lambda s: any(
        m.id == mid and m.delivery == dh.Delivery.SYNCED for m in s.messages))
    step(f"reply received ({len(task.events)} progress events): {reply.text.splitlines()[0]!r}")

    # An approval: the action happens once approved.
    target = desk.home / "file.txt"
    target.write_text("bye\n")
    mid = await a.send_message("trash ~/file.txt")
    tid = f"m-{mid}"
    snap, req = await feed.until("the approval request", lambda s: approval_for(s, tid))
    assert req.tool == "trash" and req.verified and req.state.is_pending(), req
    assert target.exists(), "nothing may happen before the approval"
    await a.approve(req.id)
    snap, _ = await feed.until("the trash task done", lambda s: (task_of(s, tid) or None) and
                               task_of(s, tid).status == dh.TaskStatus.DONE)
    assert not target.exists(), "the approved trash did not happen"
    resolved = next(r for r in snap.resolved_approvals if r.id == req.id)
    assert resolved.my_verdict == dh.Verdict.APPROVE
    assert resolved.state.is_resolved() and resolved.state.verdict == dh.Verdict.APPROVE
    e = await expect_error(dh.ApiError.AlreadyDecided, a.deny(req.id))
    step(f"approved {req.summary!r}: the file left its place; deny afterwards: {e}")

    # A result blob: long output of an approved `run`, fetched and verified.
    mid = await a.send_message("run seq 1 20000")
    tid = f"m-{mid}"
    _, req = await feed.until("the run approval", lambda s: approval_for(s, tid))
    await a.approve(req.id)
    snap, _ = await feed.until("the run result", lambda s: (task_of(s, tid) or None) and
                               task_of(s, tid).result is not None)
    blob = task_of(snap, tid).result.blobs[0]
    data = await a.fetch_blob(blob.hash)
    expected = "".join(f"{i}\n" for i in range(1, 20001)).encode()
    assert data == expected and len(data) == blob.size, (len(data), blob)
    await expect_error(dh.ApiError.Invalid, a.fetch_blob("not-a-hash"))
    step(f"fetched blob {blob.hash[:12]}… ({blob.size} bytes, {blob.media_type}) and verified it")

    # Errors the app branches on.
    await expect_error(dh.ApiError.Invalid, a.send_message("   "))
    await expect_error(dh.ApiError.NotFound, a.approve("no-such-approval"))
    await expect_error(dh.ApiError.NotFound, a.cancel_task("no-such-task"))

    # Two phones at once see each other's messages.
    b = await dh.open_phone_with_key_file(settings(root / "b", "phone-b"))
    opened.append(b)
    await b.pair(desk.pairing_code())
    await b.sync(int(WAIT * 1000))
    feed_b = Feed(loop)
    handle_b = b.subscribe(feed_b)
    mid_a = await a.send_message("hello from a")
    mid_b = await b.send_message("hello from b")
    await feed_b.until("a's message on b", lambda s: any(m.id == mid_a and not m.mine for m in s.messages))
    await feed.until("b's message on a", lambda s: any(m.id == mid_b and not m.mine for m in s.messages))
    step("two phones see each other's messages")

    # The desktop goes away: a message is kept, pending, across closing and reopening the phone.
    desk.stop()
    step("desktop stopped")
    mid = await a.send_message("while you were away")
    snap = a.snapshot()
    msg = next(m for m in snap.messages if m.id == mid)
    assert msg.delivery == dh.Delivery.PENDING, msg
    handle.cancel()
    await a.shutdown()
    await expect_error(dh.ApiError.Closed, a.send_message("after shutdown"))
    del a
    a = await dh.open_phone(settings(root / "a", "phone-a"), keys)
    opened.append(a)
    snap = a.snapshot()
    msg = next((m for m in snap.messages if m.id == mid), None)
    assert msg is not None and msg.delivery == dh.Delivery.PENDING, msg
    assert any(m.delivery == dh.Delivery.SYNCED for m in snap.messages if m.mine)
    step("queued while the desktop was down; still there after closing and reopening the phone")

    desk.start()
    step("desktop started again")
    feed = Feed(loop)
    handle = a.subscribe(feed)
    snap, reply = await feed.until("convergence", lambda s: all(
        m.delivery == dh.Delivery.SYNCED for m in s.messages if m.mine) and reply_to(s, f"m-{mid}"))
    await feed_b.until("the queued message on b", lambda s: any(m.id == mid for m in s.messages))
    step(f"converged: the desktop answered the queued message ({reply.text.splitlines()[0]!r}); b has it")

    # stop()/start(): presence is honest, and the listener says so.
    a.stop()
    await feed.until("presence after stop", lambda s: not s.syncing and not s.desktop.presence.is_connected())
    await expect_error(dh.ApiError.Stopped, a.sync(1000))
    a.start()
    await feed.until("connected after start", lambda s: s.syncing and s.desktop.presence.is_connected())
    step("stop()/start(): presence followed")

    # A cancelled handle delivers nothing more.
    handle.cancel()
    await asyncio.sleep(0.2)
    before = feed.calls
    await b.send_message("after the handle was cancelled")
    await a.sync(int(WAIT * 1000))
    await asyncio.sleep(0.3)
    assert feed.calls == before, "a cancelled subscription was still called"
    handle_b.cancel()

    assert any("session open" in line for _, line in sink.lines), "the log sink got nothing"
    step(f"log sink received {len(sink.lines)} lines; all done")


def main():
    if not BIN.exists():
        sys.exit(f"error: {BIN} is missing: run `cargo build -p deskhand-desktop-host` first")
    root = Path(tempfile.mkdtemp(prefix="deskhand-py-"))
    try:
        asyncio.run(scenario(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"python binding tests passed in {time.monotonic() - STARTED:.1f}s")


if __name__ == "__main__":
    main()
