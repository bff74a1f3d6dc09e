"""report.html in a real browser: headless Chromium loads it with no console errors and no
network requests, and takes a screenshot (left in the test's tmp directory to look at).
Skipped where Chromium is not installed (Debian: ``apt-get install chromium``)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from edgeprune.report import write_reports
from test_report import _report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                 "(apt-get install chromium)")]


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync",
                           "--proxy-server=127.0.0.1:9",  # anything that tries the network fails
                           f"--user-data-dir={tmp_path / 'profile'}",
                           "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def onnx_path(tmp_path):
    import torch
    from edgeprune.export import export_onnx
    from edgeprune.models import create_model

    torch.manual_seed(0)
    path = tmp_path / "resnet20.onnx"
    export_onnx(create_model("resnet20", num_classes=10, in_channels=1), (1, 8, 8), path)
    return path


def _page_requests(netlog) -> list[str]:
    """URLs the page asked for over the network. Chromium's own background requests (time
    sync, Google services) carry no origin ("not an origin"); a page's carry its own."""
    events = json.loads(netlog.read_text())["events"]
    return sorted({p["url"] for e in events if (p := e.get("params", {})).get("url", "")
                   .startswith(("http:", "https:", "ws:", "wss:"))
                   and p.get("initiator") not in (None, "not an origin")})


def test_report_html_renders_without_errors_or_network(onnx_path, tmp_path):
    page = write_reports(_report(onnx_path), tmp_path / "report")["report.html"]
    netlog, shot = tmp_path / "net.json", tmp_path / "report.png"
    run = _chromium(tmp_path, f"--log-net-log={netlog}", "--window-size=1280,2400",
                    f"--screenshot={shot}", "--virtual-time-budget=3000", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line
               or "Uncaught" in line]
    assert console == []
    assert _page_requests(netlog) == []
    # the same check sees a page that does fetch something, and a script error
    bad = tmp_path / "bad.html"
    bad.write_text(page.read_text().replace("</body>", '<img src="http://example.invalid/x.png">'
                                            "<script>undefined_name()</script></body>"))
    run = _chromium(tmp_path, f"--log-net-log={netlog}", "--virtual-time-budget=3000",
                    "--dump-dom", bad.as_uri())
    assert _page_requests(netlog) == ["http://example.invalid/x.png"]
    assert "undefined_name" in run.stderr
