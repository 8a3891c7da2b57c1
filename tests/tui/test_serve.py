"""`rmx serve` in a real headless Chromium: the page loads, the workbench renders, keys reach it; access control."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ANSI = re.compile(rb"\x1b\[[0-9;:?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _screen_text(frames: list[bytes]) -> str:
    """What the app has written to the browser's terminal so far, escape sequences removed."""
    return ANSI.sub(b"", b"".join(frames)).decode("utf-8", "replace")


@pytest.fixture
def served(tiny_llama, tiny_llama_adapter):
    """`rmx serve` on the tiny base (teacher = base + adapter), yielding its URL with the token."""
    port = _free_port()
    argv = [sys.executable, "-m", "rmx_tui", "serve", "--port", str(port), "--base", str(tiny_llama),
            "--teacher-adapter", str(tiny_llama_adapter), "--dataset", "smoke", "--max-new-tokens", "16",
            "--tau", "q0.9", "--dtype", "float32", "--device", "cpu"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        line = process.stdout.readline()
        assert "open http://127.0.0.1" in line, process.stderr.read() if process.poll() is not None else line
        url = line.split("open ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url.split("?")[0] + "static/js/textual.js", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "rmx serve did not start listening"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        from engine.service.daemon import stop_daemon

        assert stop_daemon() is not None  # serve used (here: started) the engine daemon, and left it for the TUI


def test_serve_refuses_a_remote_host_without_allow_remote():
    result = subprocess.run([sys.executable, "-m", "rmx_tui", "serve", "--host", "0.0.0.0"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert "--allow-remote" in result.stderr


def test_serve_requires_the_token_and_a_same_origin_websocket(served):
    root = served.split("?")[0]
    assert httpx.get(root).status_code == 403
    assert httpx.get(root + "?token=wrong").status_code == 403
    assert httpx.get(root + "ws").status_code == 403
    with httpx.Client() as browser:
        exchanged = browser.get(served, follow_redirects=False)
        assert exchanged.status_code == 302 and "token=" not in exchanged.headers["location"]
        page = browser.get(root)
        assert page.status_code == 200 and "data-session-websocket-url" in page.text
        foreign = browser.get(root + "ws", headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_serve_renders_in_headless_chromium_and_keys_move_the_cursor(served, tmp_path):
    from playwright.sync_api import sync_playwright

    frames: list[bytes] = []

    def wait_for_screen(text: str, timeout: float = 90.0, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while text not in _screen_text(frames[since:]):
            assert time.monotonic() < deadline, f"{text!r} never reached the browser:\n{_screen_text(frames)[-2000:]}"
            page.wait_for_timeout(100)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("websocket", lambda ws: ws.on(
                "framereceived", lambda payload: frames.append(payload if isinstance(payload, bytes) else b"")))
            page.goto(served)
            assert "token=" not in page.url
            page.wait_for_selector(".xterm-screen", timeout=30_000)
            wait_for_screen("token 0 of")  # the inspector on the first token of a decoded, scored rollout
            wait_for_screen("entropy")
            wait_for_screen("of the root rollout")  # τ resolved: the cursor has gone to the first decision point
            page.wait_for_timeout(1000)
            cursor = int(re.findall(r"token (\d+) of", _screen_text(frames))[-1])
            page.focus(".xterm-helper-textarea")
            pressed = len(frames)
            page.keyboard.press("ArrowRight")
            wait_for_screen(f"token {cursor + 1} of", since=pressed)
            page.wait_for_timeout(500)
            shot = Path(os.environ.get("RMX_SERVE_SCREENSHOT") or tmp_path / "serve.png")
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000  # a rendered terminal, not a blank page
        finally:
            browser.close()
