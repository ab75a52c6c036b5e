"""A real report opened in headless Chromium: the page loads, every plot's image decodes, no console errors.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages separated
by NUL on file descriptors 3 and 4), so the test needs nothing beyond the standard library and the browser.
"""

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time

import pytest

pytest.importorskip("matplotlib", reason="k1 report draws its plots with matplotlib")

from k1.engine.run.train import Trainer  # noqa: E402
from k1.report import write_report  # noqa: E402
from k1.testing import tiny_config  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
         "--window-size=1280,2000", "--remote-debugging-pipe"]
PROBE = """JSON.stringify({
  ready: document.readyState,
  title: document.title,
  figures: [...document.querySelectorAll('figure.plot')].map(f => ({
    plot: f.dataset.plot,
    images: [...f.querySelectorAll('img')].map(i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))
  })),
  absent: [...document.querySelectorAll('.absent')].map(p => p.dataset.absent),
  height: document.documentElement.scrollHeight
})"""


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, profile_dir, timeout: float = 60.0):
        self.to_browser_r, self.to_browser_w = os.pipe()
        self.from_browser_r, self.from_browser_w = os.pipe()
        fds = (self.to_browser_r, self.from_browser_w)

        def wire():  # the browser reads commands on fd 3 and writes replies on fd 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]  # out of the way of 3 and 4 first
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=wire, pass_fds=(3, 4))
        os.close(self.to_browser_r)
        os.close(self.from_browser_w)
        self.timeout, self.buffer, self.next_id, self.events = timeout, b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_browser_w, json.dumps(msg).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self.next_id)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_event(self, method: str) -> dict:
        return self._wait(lambda m: m.get("method") == method)

    def _wait(self, match) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                msg = json.loads(raw)
                if "method" in msg:
                    self.events.append(msg)
                if match(msg):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser_r], [], [], left)[0]:
                raise AssertionError("Chromium did not answer in time")
            chunk = os.read(self.from_browser_r, 1 << 20)
            if not chunk:
                raise AssertionError("Chromium closed the DevTools pipe: " + self.proc.stderr.read().decode()[-2000:])
            self.buffer += chunk

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except AssertionError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_browser_w)
        os.close(self.from_browser_r)


def console_errors(events: list[dict]) -> list[str]:
    errors = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e["method"] == "Runtime.exceptionThrown":
            errors.append(p["exceptionDetails"].get("text", "exception"))
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(p["entry"]["text"])
    return errors


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (install Debian's chromium: apt-get install -y chromium)")
    return binary


def load(browser: DevTools, session: str, path) -> tuple[dict, list[str]]:
    """Open `path`, wait for the load event; return the DOM probe and the console errors it caused."""
    seen = len(browser.events)
    browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    browser.wait_event("Page.loadEventFired")
    probe = browser.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=session)
    return json.loads(probe["result"]["value"]), console_errors(browser.events[seen:])


def test_report_renders_in_headless_chromium(chromium, tmp_path):
    cfg = tiny_config(tmp_path / "data", ["train.steps=10", "train.log_every=2", "train.eval_every=5"],
                      policy={"name": "hybrid"})
    run = tmp_path / "run"
    Trainer(cfg, run, quiet=True).fit()
    page = write_report(run)
    expected = re.findall(r'<figure class="plot" data-plot="([^"]+)"', page.read_text())
    assert {"loss-curves", "params-changed", "selection-heatmap", "trust"} <= set(expected)
    # a control page with a broken image and a console error: the probe must catch both
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><title>x</title><figure class="plot" data-plot="bad">'
                      '<img src="data:image/png;base64,AAAA"></figure><script>console.error("boom")</script>')

    browser = DevTools(chromium, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        control, control_errors = load(browser, session, broken)
        probe, errors = load(browser, session, page)
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session)["data"]
    finally:
        browser.close()

    assert control["figures"][0]["images"][0]["width"] == 0 and any("boom" in e for e in control_errors)
    assert probe["ready"] == "complete" and probe["title"].startswith("K-1 run report")
    assert [f["plot"] for f in probe["figures"]] == expected
    for f in probe["figures"]:
        assert len(f["images"]) == 1, f
        img = f["images"][0]
        assert img["complete"] and img["width"] > 200 and img["height"] > 100, f  # decoded, real size
    assert probe["absent"] == ["events", "specialisation"]
    assert errors == []
    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
