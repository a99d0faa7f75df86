"""External tools the tests install on first use, into the repository's .cache/ (gitignored).

Prometheus and promtool come from Debian's `prometheus` package: downloaded with `apt-get download` (no
root needed for that; `apt-get update` only when the package lists do not know it yet) and unpacked with
`dpkg-deb -x`, without installing anything system-wide. Import `promtool_binary()` or
`prometheus_binary()`; the first call installs both, later calls (and later runs) reuse them.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
PROMETHEUS_DIR = CACHE / "prometheus"
PROMTOOL = PROMETHEUS_DIR / "usr" / "bin" / "promtool"
PROMETHEUS = PROMETHEUS_DIR / "usr" / "bin" / "prometheus"
DEBIAN_PACKAGE = "prometheus"


def promtool_binary() -> Path:
    """Path of `promtool` (Prometheus' rule and config checker), installed on first use."""
    install_prometheus()
    return PROMTOOL


def prometheus_binary() -> Path:
    """Path of the `prometheus` server, installed on first use."""
    install_prometheus()
    return PROMETHEUS


def install_prometheus() -> Path:
    """Unpack Debian's prometheus package into .cache/prometheus unless it is there; return that folder.

    Safe to call from parallel test processes: one installs under a file lock, the others wait and reuse.
    """
    if PROMTOOL.exists() and PROMETHEUS.exists():
        return PROMETHEUS_DIR
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / "prometheus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if PROMTOOL.exists() and PROMETHEUS.exists():
            return PROMETHEUS_DIR
        with tempfile.TemporaryDirectory(prefix="prometheus-deb-") as tmp:
            deb = _download_deb(Path(tmp))
            staging = Path(tmp) / "root"
            _run(["dpkg-deb", "-x", str(deb), str(staging)])
            for binary in ("promtool", "prometheus"):
                if not (staging / "usr" / "bin" / binary).exists():
                    raise RuntimeError(f"{deb.name} has no usr/bin/{binary}")
            if PROMETHEUS_DIR.exists():  # a partial earlier attempt
                shutil.rmtree(PROMETHEUS_DIR)
            shutil.move(str(staging), str(PROMETHEUS_DIR))
    return PROMETHEUS_DIR


def _download_deb(folder: Path) -> Path:
    download = ["apt-get", "download", "-qq", DEBIAN_PACKAGE]
    result = subprocess.run(download, cwd=folder, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:  # the package lists may be missing or stale: refresh them once
        _run(["apt-get", "update", "-qq"])
        result = subprocess.run(download, cwd=folder, capture_output=True, text=True, timeout=300)
    debs = sorted(folder.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {DEBIAN_PACKAGE} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")
    return debs[-1]


def _run(command: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


CHROMIUM = Path("/usr/bin/chromium")


def chromium_binary() -> Path:
    """Debian's Chromium for the console's browser tests, installed with apt-get on first use (the test
    machines run as root; Playwright's own browser download cannot be reached from them)."""
    if CHROMIUM.exists():
        return CHROMIUM
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / "chromium.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if CHROMIUM.exists():
            return CHROMIUM
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        result = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
        if result.returncode != 0:  # the package lists may be missing or stale: refresh them once
            _run(["apt-get", "update", "-qq"])
            _run(install)
    if not CHROMIUM.exists():
        raise RuntimeError(f"apt-get installed chromium but {CHROMIUM} is missing")
    return CHROMIUM
