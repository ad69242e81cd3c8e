"""The web chat page in headless Chromium (Debian's package), driven over the DevTools protocol.

Skipped when chromium is not installed. Chromium talks DevTools over a pipe (fds 3 and 4, messages
ending in NUL), so no websocket library is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from scripted_server import running_server

CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
        if p and os.path.exists(p)
    ),
    None,
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


class Browser:
    """Minimal DevTools client: one page, evaluate JavaScript in it."""

    def __init__(self, profile):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        to_chrome_r, from_chrome_w = _above_4(to_chrome_r), _above_4(from_chrome_w)
        args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        # Chromium expects the pipe on fds 3 and 4; bash (dash has no fds above 9) moves our pipe
        # ends there in the child only.
        remap = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.proc = subprocess.Popen(
            ["bash", "-c", remap, CHROMIUM, *args],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer, self._next_id, self.session = b"", 0, None

    def call(self, method: str, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_chrome, 65536)
                assert chunk, "chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, reply
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _above_4(fd: int) -> int:
    """The same pipe end on a descriptor above 4, so moving it to 3 or 4 in the child cannot clash."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def send(browser: Browser, text: str) -> dict:
    count = browser.js("document.querySelectorAll('.msg.assistant').length")
    browser.js(
        f"document.getElementById('input').value = {json.dumps(text)};document.getElementById('form').requestSubmit()"
    )
    browser.wait_for(f"document.querySelectorAll('.msg.assistant[data-done]').length > {count}")
    return browser.js(
        "(() => { const m = [...document.querySelectorAll('.msg.assistant')].pop();"
        "return {content: m.querySelector('.content').textContent,"
        "reasoning: m.querySelector('.reasoning').textContent,"
        "error: (m.querySelector('.error') || {}).textContent || ''}; })()"
    )


def test_web_chat_streams_picks_models_and_toggles_thinking(tokenizer, tmp_path):
    with running_server(tokenizer, api_key=None) as (url, model, _):
        browser = Browser(tmp_path / "profile")
        try:
            browser.open(url + "/")
            options = browser.wait_for("[...document.querySelectorAll('#model option')].map(o => o.value)")
            assert options == ["base-model", "shouty", "thinker"]
            # the page opens on the first adapter (the fine-tune), and a request goes to it
            assert browser.js("document.getElementById('model').value") == "shouty"
            browser.js("document.getElementById('max_tokens').value = 30")  # the scripted model's context is 64
            assert send(browser, "hi") == {"content": "HELLO WORLD", "reasoning": "", "error": ""}
            browser.js("document.getElementById('reset').click();document.getElementById('model').value = 'base-model'")
            assert send(browser, "hello") == {
                "content": "Hello 你好 🫠 world. END more words",
                "reasoning": "",
                "error": "",
            }
            assert tokenizer.decode(model.last_prompt).endswith("<think>\n\n</think>\n\n")  # thinking off
            browser.js(
                "document.getElementById('model').value = 'thinker';document.getElementById('thinking').checked = true"
            )
            reply = send(browser, "why?")
            assert (reply["content"], reply["reasoning"]) == ("Answer.", "plan the answer")
            prompt = tokenizer.decode(model.last_prompt)
            assert prompt.endswith("<|im_start|>assistant\n") and "hello" in prompt  # history is sent along
            # listing the models again (as a new API key does) keeps the model chosen
            assert browser.js("loadModels().then(() => document.getElementById('model').value)") == "thinker"
            browser.js("document.getElementById('max_tokens').value = 9999")
            assert "maximum context length" in send(browser, "too long")["error"]
        finally:
            browser.close()
