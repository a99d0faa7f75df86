"""`make run` for a newcomer: embedded broker, worker, sample segments and records, events printed, the
HTTP API answering the README's example, the reference subscriber showing events live from another
terminal, chat conversations assigned, and a clean stop."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from engine.broker import free_port
from tests.conftest import REPO


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENT_ENGINE_")}
    env.update({f"SEGMENT_ENGINE_{k}": v for k, v in settings.items()})
    return env


def follow(broker: str, *args: str, seconds: float) -> str:
    """Run `segment-engine tail --follow ARGS` for a while (from now on: live events only), then stop it."""
    tail = subprocess.Popen([sys.executable, "-m", "engine.cli", "tail", "--follow", *args], cwd=REPO,
                            env=clean_env(BROKER=broker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(seconds)
    tail.send_signal(signal.SIGTERM)
    output, _ = tail.communicate(timeout=30)
    return output.decode(errors="replace")


def test_run_demo_prints_events_serves_the_api_and_feeds_subscribers() -> None:
    port = free_port()
    # A test run started in the background (`make test &`, CI runners) inherits SIGINT ignored; the demo
    # gets Ctrl-C's default handling back, so it stops on SIGINT as in a terminal instead of at --duration.
    demo = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", "--duration", "45"], cwd=REPO,
                            env=clean_env(WEB_PORT=str(port)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode(errors="replace") for line in demo.stdout),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    profile: Any = None
    deadline = time.monotonic() + 25
    while profile is None and time.monotonic() < deadline:
        time.sleep(1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/workspaces/demo/records/contact/c1",
                                         headers={"Authorization": "Bearer demo-admin-token"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                profile = orjson.loads(response.read())
        except OSError:
            continue
    started = next((line for line in lines if "started local broker" in line), "")
    address = re.search(r"on (127\.0\.0\.1:\d+)", started)
    assert address is not None, "".join(lines)[-2000:]
    # The reference subscriber, as the demo's first line tells a newcomer to run it, shows events live.
    with ThreadPoolExecutor(2) as pool:  # both subscribers at once: the demo keeps publishing meanwhile
        live_run = pool.submit(follow, address.group(1), seconds=8)
        assignments_run = pool.submit(follow, address.group(1), "--assignments", seconds=8)
        live, assignments = live_run.result(), assignments_run.result()
    demo.send_signal(signal.SIGINT)  # Ctrl-C, as the demo tells a newcomer (--duration bounds it otherwise)
    demo.wait(timeout=120)
    reader.join(timeout=10)
    text = "".join(lines)
    assert demo.returncode == 0, text[-2000:]
    assert profile is not None and profile["id"] == "c1" and "country" in profile["fields"], text[-2000:]
    assert "ENTERED" in text and text.rstrip().endswith("stopped")
    assert f"console: http://127.0.0.1:{port}/console/  (sign in with demo-admin-token)" in text
    assert re.search(r"^p\d+@\d+ .*(ENTERED|EXITED) ", live, re.MULTILINE), live[-2000:]
    assert re.search(r"event\(s\) printed", live), live[-2000:]
    assert re.search(r"^p\d+@\d+ .*conversation demo/conv-\S+ \(contact c\d+\)  (ASSIGNED|UNASSIGNED)", assignments,
                     re.MULTILINE), assignments[-2000:]
