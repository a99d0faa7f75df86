"""`make run` for a newcomer: embedded broker, worker, sample segments and records, events printed, the
HTTP API answering the README's example, and a clean stop."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import orjson

from engine.broker import free_port
from tests.conftest import REPO


def test_run_demo_prints_events_and_serves_the_api() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_ENGINE_")}
    env["SEGMENT_ENGINE_WEB_PORT"] = str(port)
    demo = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--duration", "20"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    profile = None
    deadline = time.monotonic() + 18
    while profile is None and time.monotonic() < deadline:
        time.sleep(1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/workspaces/demo/records/contact/c1",
                                         headers={"Authorization": "Bearer demo-admin-token"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                profile = orjson.loads(response.read())
        except OSError:
            continue
    output, _ = demo.communicate(timeout=120)
    text = output.decode(errors="replace")
    assert demo.returncode == 0, text[-2000:]
    assert profile is not None and profile["id"] == "c1" and "country" in profile["fields"], text[-2000:]
    assert "started local broker" in text and "ENTERED" in text and text.rstrip().endswith("stopped")
