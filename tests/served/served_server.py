"""A real `s2d-bench serve` on 127.0.0.1 for the tests: started in its own process, stopped when the test is done."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model: Path, name: str = "teacher", max_logprobs: int = -1, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, process) of a server for `model` under `name`; the process is killed on exit."""
    port = port or free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(model.parent / f"serve-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "s2d_bench.cli", "serve", str(model), "--port", str(port), "--served-model-name", name,
                             "--max-logprobs", str(max_logprobs), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"s2d-bench serve exited: {(model.parent / f'serve-{port}.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError("s2d-bench serve did not answer /health within 120 s")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
