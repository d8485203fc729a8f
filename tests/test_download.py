"""Published weight files by name: downloaded into the cache from a server (here a local one
on 127.0.0.1, through $NNABLA_IMAGENET_WEIGHTS_URL), loaded from the cache once the server is
gone, resumed after a cut connection, and one-line errors for a 404 and --no-download."""
from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import pytest
from data_fixtures import class_tree
from eval_fixtures import error_lines, make_weight_file, run_main
from paths import DEMO

import infer
from utils.weights.download import CACHE_ENV, URL_ENV

NAME = "mbnv3_small_nchw_cos90.v2.h5"  # a published mobilenet_v3_small file's name
PHOTO = DEMO / "val" / \
    "ILSVRC2012_val_00000001.JPEG"


class Server:
    """Serves a folder with HTTP range requests; can cut the next response after N bytes."""

    def __init__(self, root: Path):
        self.root, self.cut_after, self.requests = root, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the handler's API)
                server.requests.append((self.path, self.headers.get("Range")))
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = path.read_bytes()
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/"
                                                      f"{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None:
                    body, server.cut_after = body[:server.cut_after], None
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[Server]:
    files = tmp_path / "served" / "files"
    files.mkdir(parents=True)
    make_weight_file(files / NAME, "mobilenet_v3_small", num_classes=1000)
    running = Server(tmp_path / "served")
    monkeypatch.setenv(URL_ENV, running.url)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the bare name is not a local path here
    yield running
    running.stop()


def classify(*extra: str) -> int:
    return run_main(infer.main, PHOTO, NAME, "--spatial-size", "32", "--json", *extra)


def test_a_published_name_is_downloaded_once_then_read_from_the_cache(server, tmp_path,
                                                                      capsys):
    assert classify() == 0
    cached = tmp_path / "cache" / NAME
    assert cached.read_bytes() == (server.root / "files" / NAME).read_bytes()
    first = json.loads(capsys.readouterr().out)
    assert first["arch"] == "mobilenet_v3_small"  # the published name tells the network
    server.stop()
    assert classify() == 0  # no server: the cached copy
    assert json.loads(capsys.readouterr().out)["predictions"] == first["predictions"]
    assert len(server.requests) == 1


def test_a_cut_download_leaves_nothing_loadable_and_resumes(server, tmp_path, capsys):
    size = (server.root / "files" / NAME).stat().st_size
    server.cut_after = size // 2
    assert classify() == 2
    lines = [line for line in error_lines(capsys.readouterr().err) if line.strip()]
    assert all(line.startswith("downloading ") for line in lines[:-1])  # the progress bar
    line = lines[-1]
    partial = tmp_path / "cache" / f"{NAME}.part"
    assert line.endswith(f"error: download of {server.url}{NAME} interrupted at {size // 2} "
                         f"of {size} bytes (the connection closed early); run the command "
                         f"again to resume it ({partial})")
    assert not (tmp_path / "cache" / NAME).exists() and partial.stat().st_size == size // 2
    assert classify() == 0
    assert server.requests[-1] == (f"/files/{NAME}", f"bytes={size // 2}-")
    assert (tmp_path / "cache" / NAME).read_bytes() == (server.root / "files" / NAME).read_bytes()
    assert not partial.exists()


def test_a_404_and_no_download_are_one_line(server, tmp_path, capsys):
    (server.root / "files" / NAME).unlink()
    assert classify() == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {server.url}{NAME}: HTTP 404 Not Found"]
    assert classify("--no-download") == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {NAME}: not in the cache and --no-download was given: download "
        f"{server.url}{NAME} to {tmp_path / 'cache' / NAME}"]


@pytest.mark.slow
def test_every_script_taking_a_weight_file_accepts_a_published_name(server, tmp_path):
    import convert_parameter_format
    import train

    out = tmp_path / "nhwc.h5"
    assert run_main(convert_parameter_format.main, NAME, out, "-m", "nhwc") == 0
    assert out.exists() and (tmp_path / "cache" / NAME).exists()
    class_tree(str(tmp_path / "train"), ["cat", "dog"], 4)
    (tmp_path / "list").write_text("".join(f"{c}/{c}_{i}.JPEG {k}\n"
                                           for k, c in enumerate(("cat", "dog"))
                                           for i in range(4)))
    assert run_main(train.main, "-a", "mobilenet_v3_small", "--finetune", "--model-load-path",
                    NAME, "--num-classes", "2", "-b", "4", "-e", "1", "--spatial-size", "32",
                    "-T", tmp_path / "train", "--train-list", tmp_path / "list", "-v", "0",
                    "-m", tmp_path / "run", "--dali-num-threads", "1") == 0
    assert (tmp_path / "run" / "param_001.h5").exists()
    for script in ("validation", "export"):
        module = __import__(script)
        assert module.parse_args([NAME, "-o", "x.nnp"] if script == "export" else [NAME]
                                 ).arch == "mobilenet_v3_small"
