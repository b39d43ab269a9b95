"""Helpers shared by the tests/test_data_*.py files (no tests here): small BEIR folders and prepare runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lead_dist.data import prepare as prepare_module
from lead_dist.verbs import prepare as prepare_verb


def write_beir(
    folder: Path,
    *,
    num_queries: int,
    num_passages: int,
    positives: dict[str, list[str]] | None = None,
    split: str = "train",
) -> dict[str, list[str]]:
    """A BEIR folder with passages p0.. and queries q0..; by default query i's positive is passage i."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        for i in range(num_passages):
            handle.write(json.dumps({"_id": f"p{i}", "title": f"title {i}", "text": f"text of passage {i}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for i in range(num_queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": f"query number {i}"}) + "\n")
    if positives is None:
        positives = {f"q{i}": [f"p{i % num_passages}"] for i in range(num_queries)}
    with (folder / "qrels" / f"{split}.tsv").open("w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, pids in positives.items():
            for pid in pids:
                handle.write(f"{qid}\t{pid}\t1\n")
    return positives


def prepare_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prepare_verb.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def run_prepare(*argv: str) -> dict:
    return prepare_module.prepare(prepare_args(*argv))


class ShardServer:
    """A real HTTP server (`http.server`) on 127.0.0.1 in a thread, serving `folder`; it records every request
    path and can misbehave per file: `cut={name: n}` sends the full Content-Length header but only the first half
    of the file and closes the connection, the first n times the file is asked for.

        with ShardServer(folder) as server:   # server.url = "http://127.0.0.1:PORT"
            ...
    """

    def __init__(self, folder: Path, *, cut: dict[str, int] | None = None) -> None:
        import functools
        import http.server
        import socket

        self.requests: list[str] = []
        self.cuts_left = dict(cut or {})
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                if server.cuts_left.get(name, 0) > 0:
                    server.cuts_left[name] -= 1
                    data = (Path(folder) / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ShardServer:
        import threading

        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
