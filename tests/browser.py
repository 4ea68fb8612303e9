"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): standard
library only, no port, no websocket. Used by tests/test_report_html.py to open report.html as a reader would.

Chromium reads commands from its fd 3 and writes replies and events to its fd 4, each a JSON object ended
by a NUL byte; a shell maps our stdin/stdout pipes onto those descriptors.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """$CHROMIUM, or the first of the usual names on PATH."""
    given = os.environ.get("CHROMIUM")
    if given:
        return shutil.which(given)
    return next((path for name in NAMES if (path := shutil.which(name))), None)


class Browser:
    """One headless browser with one page; ``events`` keeps every event of the page's session."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        command = [binary, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"]
        self._log = Path(self._profile) / "stderr.log"  # chromium's own output, quoted when it dies
        # fd 3 <- our stdin pipe (commands), fd 4 -> our stdout pipe (replies); chromium's own output to stderr.
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                ["sh", "-c", 'exec "$@" 3<&0 4>&1 0</dev/null 1>&2', "sh", *command],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        self._replies: dict[int, queue.Queue] = {}
        self._events: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable", session=True)

    def _read(self) -> None:
        buffer = b""
        stream = self._proc.stdout
        while True:
            chunk = stream.read1(65536)
            if not chunk:
                self._events.put(None)
                tail = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
                for q in list(self._replies.values()):
                    q.put({"error": {"message": f"the browser closed its pipe; its output ended with: {tail}"}})
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    self._replies.setdefault(message["id"], queue.Queue()).put(message)
                else:
                    self._events.put(message)

    def send(self, method: str, session: bool = False, **params) -> dict:
        """One command; its result (raises on a protocol error or after the timeout)."""
        with self._lock:
            self._next += 1
            ident = self._next
            self._replies.setdefault(ident, queue.Queue())
        message = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self._proc.stdin.write(json.dumps(message).encode() + b"\0")
        self._proc.stdin.flush()
        try:
            reply = self._replies[ident].get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"chromium: no reply to {method} within {self.timeout} s") from None
        if "error" in reply:
            raise RuntimeError(f"chromium: {method}: {reply['error']}")
        return reply.get("result", {})

    def wait_for(self, method: str) -> dict:
        """Collect events until one named ``method`` arrives in the page's session."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                event = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"chromium: no {method} within {self.timeout} s") from None
            if event is None:
                raise RuntimeError(f"chromium exited while waiting for {method}")
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == self.session:
                return event["params"]

    def drain(self, seconds: float = 0.5) -> None:
        """Collect the events that arrive within ``seconds`` (late console messages)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                return
            if event is None:
                return
            self.events.append(event)

    def open(self, path: Path) -> None:
        self.send("Page.navigate", session=True, url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        self.drain()

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page (raises on an exception)."""
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and error log entries, as one line each."""
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{params['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                                   for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails'].get('text')} "
                           f"{params['exceptionDetails'].get('exception', {}).get('description', '')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                out.append(f"log {params['entry']['level']}: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return out

    def requests(self) -> list[str]:
        """The URL of every request the page made."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)
