"""A local S3 for end-to-end tests of the team cache: moto's server on 127.0.0.1, behind a TCP relay.

moto (in the test servers' venv: tests/requirements-servers.txt) speaks S3's HTTP API, so dvc-s3
(s3fs, aiobotocore) talks to it as to AWS, MinIO or R2 with `endpointurl`. The relay in front of it
can cut every connection and stop listening, once a given number of request bytes have passed or at
once, and listen again later: a server lost in the middle of a push or a pull, and back, with the
bucket's contents kept (moto keeps them in memory, so stopping moto itself would lose them).

    s3 = LocalS3.start(tmp_path / "s3")
    s3.create_bucket("team")
    ... dvc remote add -d storage s3://team/cache; dvc remote modify storage endpointurl s3.endpoint
    s3.relay.cut_after(200_000)   # the next 200 kB of requests pass, then the server is gone
    s3.relay.resume()             # back
    s3.stop()
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.hub import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
SETUP = "python3 -m venv .venv-servers && .venv-servers/bin/pip install -r tests/requirements-servers.txt"
# moto checks no signature: any key works; these are what the tests and dvc read from the environment
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def moto_server() -> Path:
    path = ROOT / ".venv-servers/bin/moto_server"
    if not path.is_file():
        raise RuntimeError(f"{path} not found; make the test servers' venv in the repo root: {SETUP}")
    return path


class Relay:
    """Forwards 127.0.0.1:port to 127.0.0.1:target; can go down (every connection cut, nothing listening)
    at once or after `n` more bytes from clients, and come back on the same port."""

    def __init__(self, port: int, target: int):
        self.port, self.target = port, target
        self.budget: int | None = None  # client bytes that may still pass before going down
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        self.server: socket.socket | None = None
        self.down = threading.Event()

    def resume(self) -> None:
        self.budget = None
        self.down.clear()
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        server.settimeout(0.2)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """Down now: stop listening and reset every open connection."""
        self.down.set()
        with self.lock:
            if self.server is not None:
                self.server.close()
                self.server = None
            for s in list(self.sockets):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()

    def cut_after(self, n: int) -> None:
        self.budget = n

    def _accept(self, server: socket.socket) -> None:
        while not self.down.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and self.budget is not None:
                    self.budget -= len(data)
                    if self.budget < 0:
                        self.cut()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class LocalS3:
    root: Path
    port: int  # moto's own
    relay: Relay
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """What clients use: the relay's address."""
        return f"http://127.0.0.1:{self.relay.port}"

    @classmethod
    def start(cls, root: Path, timeout: float = 30.0) -> LocalS3:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = (root / "moto.log").open("ab")
        process = subprocess.Popen([str(moto_server()), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
        log.close()
        s3 = cls(root, port, Relay(free_port(), port), process)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited ({process.returncode}); see {root / 'moto.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    s3.stop()
                    raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port} within {timeout:.0f} s") from None
                time.sleep(0.1)
        s3.relay.resume()
        return s3

    def client(self):
        """A botocore S3 client on moto directly (not through the relay): for setting up and inspecting."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.port}", region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        client, out, token = self.client(), [], None
        while True:
            page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(out)
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        self.relay.cut()
        stop_process(self.process)
        self.process = None


def env_with_credentials(base: dict[str, str]) -> dict[str, str]:
    """A subprocess environment with the S3 credentials (read from the environment by dvc-s3, never from a
    committed file) and no proxy settings that could send loopback traffic elsewhere."""
    out = {k: v for k, v in base.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    # one attempt per request in botocore (s3fs still retries 5 times, ~2 s): a server that is gone
    # fails a command in seconds, not the minutes of botocore's default backoff on every file
    out.update(CREDENTIALS, NO_PROXY="127.0.0.1,localhost", AWS_MAX_ATTEMPTS="1")
    return out

