"""The real TensorBoard server for a test: on 127.0.0.1 at a free port, asked over HTTP,
stopped when the test is done (whatever happened)."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.log = process, log
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, body: Any = None) -> Any:
        """The JSON answer to GET `path`, or to a POST of `body` as JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def runs(self, expected: Sequence[str], timeout: float = 120) -> List[str]:
        """The runs it shows, once they are `expected` (sorted) or after `timeout` s."""
        deadline, runs = time.monotonic() + timeout, []
        while sorted(runs) != sorted(expected) and time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                runs = self.get("/data/runs")
            except OSError:
                time.sleep(0.5)
        return runs


@contextmanager
def tensorboard(command: Sequence[str], log: Path, cwd: Optional[Path] = None,
                env: Optional[Dict[str, str]] = None) -> Iterator[Server]:
    """`command` (`tensorboard --logdir ...`) with --host 127.0.0.1 and a free --port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(process, port, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
