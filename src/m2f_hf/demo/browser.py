"""Drive the demo as a visitor does: the server in its own process, the page in headless Chromium (Playwright).

Used by the browser and load tests and by `benchmarks/bench_demo.py`. Playwright's own browser download is not
needed: `chromium_path()` finds a system Chromium (Debian's `chromium` package, or `$M2F_CHROMIUM`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .app import RUNNING_STATUS

# Headless Chromium as root on a machine without a display or a network: no sandbox (root), no GPU, and none of the
# background connections (updates, sync, safe browsing) that would hang or fill the log where nothing is reachable.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# The page's elements, by the elem_id that m2f_hf.demo.app gives them.
IMAGE_INPUT = "#input-image input[type=file]"
SUBMIT = "#submit"
OVERLAY_IMAGE = "#overlay img"
TABLE_ROWS = "#segments [role=row].virtual-row"  # the rendered rows of the table's body (not its header)
TABLE_CELLS = "[role=gridcell]"
STATUS = "#status"
ERROR_TOAST = "[data-testid='toast-body'].error"
ERROR_TEXT = "[data-testid='toast-text']"


def chromium_path() -> str | None:
    """A Chromium executable: `$M2F_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH, else None."""
    candidates = [os.environ.get("M2F_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class DemoServer:
    """`python -m m2f_hf.demo --port P ...` on a free loopback port, until `stop()` (or the `with` block ends).

    Attributes:
        url: the page's address, once started.
        startup_seconds: from starting the process to the page's first answer (imports, model load, server).
    """

    def __init__(self, *args: str, env: dict | None = None, host: str = "127.0.0.1"):
        self.args, self.host = list(args), host
        self.env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.startup_seconds = float("nan")
        self._log = tempfile.NamedTemporaryFile(prefix="m2f-demo-server-", suffix=".log", delete=False)

    @property
    def log_path(self) -> Path:
        return Path(self._log.name)

    def log(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 180.0) -> DemoServer:
        port = free_port(self.host)
        command = [sys.executable, "-m", "m2f_hf.demo", "--host", self.host, "--port", str(port), *self.args]
        start = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        self.url = f"http://{self.host}:{port}/"
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the demo server exited with status {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        self.startup_seconds = time.perf_counter() - start
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"the demo server did not answer at {self.url} within {timeout} s:\n{self.log()}")

    def rss_bytes(self) -> int:
        """The server process's resident memory now."""
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> DemoServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def launch_chromium(playwright, executable: str | None = None):
    """Headless system Chromium through a Playwright instance (`sync_playwright().start()`)."""
    executable = executable or chromium_path()
    if executable is None:
        raise FileNotFoundError("no Chromium found: install Debian's chromium package or set $M2F_CHROMIUM.")
    return playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS), headless=True)


class DemoPage:
    """The demo page in a browser tab, with the steps a visitor takes."""

    def __init__(self, page, url: str):
        self.page, self.url = page, url

    def open(self, timeout: float = 60.0) -> DemoPage:
        self.page.goto(self.url, timeout=timeout * 1000)
        self.page.wait_for_selector(SUBMIT, timeout=timeout * 1000)
        return self

    def upload(self, path: str | Path) -> None:
        """Choose `path` in the image box's file picker (as a visitor's upload does)."""
        self.page.locator(IMAGE_INPUT).set_input_files(str(path))

    def submit(self, timeout: float = 120.0) -> float:
        """Press *Segment* and wait until the overlay and the table are shown, or an error is; returns the seconds
        from the click to that moment."""
        errors_before = len(self.errors())
        start = time.perf_counter()
        self.page.click(SUBMIT)
        self.page.wait_for_function(
            """([overlay, rows, messages, errorsBefore]) => {
                const img = document.querySelector(overlay);
                const cell = document.querySelector(rows + ' [role=gridcell]');
                const done = img && img.complete && img.naturalWidth > 0 && cell && cell.innerText.trim() !== '';
                const shown = [...document.querySelectorAll(messages)].filter((m) => m.innerText.trim() !== '');
                return done || shown.length > errorsBefore;
            }""",
            arg=[OVERLAY_IMAGE, TABLE_ROWS, f"{ERROR_TOAST} {ERROR_TEXT}", errors_before],
            timeout=timeout * 1000,
        )
        seconds = time.perf_counter() - start
        if len(self.errors()) > errors_before:  # the page's failure handler runs after the message: wait for it too
            self.page.wait_for_function(
                "([status, running]) => !document.querySelector(status).innerText.includes(running)",
                arg=[STATUS, RUNNING_STATUS],
                timeout=timeout * 1000,
            )
        return seconds

    def table(self) -> list[list[str]]:
        """The segments table's cells as shown, row by row (no rows for an empty table). The table renders only the
        rows in its view (about a dozen): compare the count with what is expected."""
        rows = []
        for row in self.page.locator(TABLE_ROWS).all():
            cells = [cell.inner_text().strip() for cell in row.locator(TABLE_CELLS).all()]
            if any(cells):
                rows.append(cells)
        return rows

    def click_row(self, index: int) -> None:
        """Click the label cell of the table's row `index` (0-based), then wait for the page to answer."""
        self.page.locator(TABLE_ROWS).nth(index).locator(TABLE_CELLS).nth(1).click()
        self.page.wait_for_function(
            "(status) => document.querySelector(status).innerText.startsWith('Highlighted')", arg=STATUS
        )

    def errors(self) -> list[str]:
        """The error messages the page shows now."""
        texts = self.page.locator(f"{ERROR_TOAST} {ERROR_TEXT}").all_inner_texts()
        return [text.strip() for text in texts if text.strip()]

    def status(self) -> str:
        return self.page.locator(STATUS).inner_text().strip()

    def overlay_src(self) -> str | None:
        image = self.page.locator(OVERLAY_IMAGE)
        return image.first.get_attribute("src") if image.count() else None

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        return path
