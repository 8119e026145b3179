"""Issue 23, round 3: credentials never leave their host; Hugging Face files go through
huggingface_hub (its cache, its auth rules); a read-only cache is read without writing.

Every server here is a threaded http.server on 127.0.0.1 that stops by itself after a few seconds;
`localhost` stands for "another host" (same machine, another origin).
"""
from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from vapi_bench.errors import OfflineError
from vapi_bench.prepare import WeightRequirement, prepare
from vapi_bench.weights import DownloadError, download, resolve_weight

PAYLOAD = bytes(range(256)) * 64
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_secret_token_for_127_0_0_1_only"
ROOT = Path(__file__).resolve().parents[1]


class Seen:
    """What the server received: (host, method, path, Authorization header or None) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, str | None]] = []

    def by_host(self, host: str) -> list[tuple[str, str, str, str | None]]:
        return [r for r in self.requests if r[0] == host]


@contextmanager
def serving(lifetime: float = 30.0) -> Iterator[tuple[str, int, Seen]]:
    """A hub-like server: /<owner>/<repo>/resolve/<rev>/<file> answers 302 to localhost (as the Hub
    sends large files to its CDN), /redirect/<file> too, /files/<file> serves PAYLOAD."""
    seen = Seen()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, body: bool) -> None:
            host = self.headers.get("Host", "").split(":")[0]
            seen.requests.append((host, self.command, self.path, self.headers.get("Authorization")))
            port = self.server.server_address[1]
            name = self.path.rsplit("/", 1)[-1]
            if "/missing/" in self.path:
                self.send_error(404)
                return
            if "/resolve/" in self.path or self.path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/files/{name}")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{DIGEST}"')
                self.send_header("X-Linked-Size", str(len(PAYLOAD)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.send_header("ETag", f'"{DIGEST}"')
            self.end_headers()
            if body:
                self.wfile.write(PAYLOAD)

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    stopper = threading.Timer(lifetime, httpd.shutdown)  # bounded: stops by itself if a test hangs
    thread.start()
    stopper.start()
    try:
        yield "127.0.0.1", httpd.server_address[1], seen
    finally:
        stopper.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("VAPI_BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return tmp_path


# ---- 1. the token stays on its host ------------------------------------------------------------------
def test_a_redirect_to_another_host_never_receives_the_authorization_header(tmp_path):
    with serving() as (host, port, seen):
        path = download(f"http://{host}:{port}/redirect/w.bin", tmp_path / "w.bin",
                        headers={"Authorization": f"Bearer {TOKEN}"}, sha256=DIGEST)
    assert path.read_bytes() == PAYLOAD
    assert seen.by_host("127.0.0.1")[0][3] == f"Bearer {TOKEN}"  # the host the credential is for
    assert [r[3] for r in seen.by_host("localhost")] == [None]


def test_hf_files_keep_the_token_off_the_cdn_host(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with serving() as (host, port, seen):
        monkeypatch.setenv("HF_ENDPOINT", f"http://{host}:{port}")
        path = resolve_weight("hf://owner/repo/sub/w.safetensors", what="gen", sha256=DIGEST)
    assert path.read_bytes() == PAYLOAD
    assert all(r[3] == f"Bearer {TOKEN}" for r in seen.by_host("127.0.0.1"))
    assert seen.by_host("localhost") and all(r[3] is None for r in seen.by_host("localhost"))


def test_plain_urls_send_no_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with serving() as (host, port, seen):
        resolve_weight(None, what="w", url=f"http://{host}:{port}/redirect/w.bin", sha256=DIGEST)
    assert [r[3] for r in seen.requests] == [None, None]


# ---- Hugging Face files live in the Hugging Face cache ------------------------------------------------
def test_hf_download_lands_in_the_hub_cache_and_is_then_found_without_network(tmp_path, monkeypatch):
    with serving() as (host, port, seen):
        monkeypatch.setenv("HF_ENDPOINT", f"http://{host}:{port}")
        first = resolve_weight("hf://owner/repo@v1/sub/w.safetensors", what="gen", sha256=DIGEST)
        asked = len(seen.requests)
        again = resolve_weight("hf://owner/repo@v1/sub/w.safetensors", what="gen", sha256=DIGEST)
        assert len(seen.requests) == asked  # the second call never touched the network
    assert first == again and tmp_path / "hub" in first.parents
    assert first.read_bytes() == PAYLOAD


def _populate_hub_cache(hub: Path, repo: str, filename: str, revision: str = "main") -> Path:
    """Lay a file out as huggingface_hub does: blobs/<etag>, snapshots/<commit>/<file>, refs/<rev>."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / DIGEST
    blob.parent.mkdir(parents=True)
    blob.write_bytes(PAYLOAD)
    snapshot = folder / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (folder / "refs").mkdir()
    (folder / "refs" / revision).write_text(COMMIT)
    return snapshot


@pytest.mark.parametrize("offline", [False, True])
def test_weights_already_in_the_hf_cache_are_used_without_any_network(tmp_path, monkeypatch, offline):
    snapshot = _populate_hub_cache(tmp_path / "hub", "FoundationVision/LlamaGen", "vq_ds16_c2i.pt")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any request would fail
    if offline:
        monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    path = resolve_weight(None, what="vq", url="hf://FoundationVision/LlamaGen/vq_ds16_c2i.pt")
    assert path == snapshot and path.read_bytes() == PAYLOAD
    (outcome,) = prepare([WeightRequirement("vq", url="hf://FoundationVision/LlamaGen/vq_ds16_c2i.pt",
                                            sha256=DIGEST)], offline=offline)
    assert outcome.status == "cached" and outcome.path == snapshot


def test_offline_hf_miss_names_both_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        resolve_weight("hf://owner/repo/w.bin", what="gen")
    message = str(info.value)
    assert str(tmp_path / "hub") in message and str(tmp_path / "cache" / "gen" / "w.bin") in message
    assert "prepare" in message


def test_a_file_the_hub_does_not_have_is_one_sentence(monkeypatch):
    with serving() as (host, port, seen):
        monkeypatch.setenv("HF_ENDPOINT", f"http://{host}:{port}")
        with pytest.raises(DownloadError) as info:
            resolve_weight("hf://owner/missing/w.bin", what="gen")
    message = str(info.value)
    assert message.startswith("gen: downloading w.bin from owner/missing") and "\n" not in message


# ---- 2. a read-only cache ---------------------------------------------------------------------------
def test_a_cached_file_is_returned_without_taking_a_lock(tmp_path, monkeypatch):
    import vapi_bench.weights as weights

    placed = tmp_path / "cache" / "inception" / "model.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(PAYLOAD)

    def refuse(path, *args, **kw):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(weights, "FileLock", refuse)
    assert resolve_weight(None, what="inception", url="http://127.0.0.1:9/model.pth", sha256=DIGEST) == placed
    (outcome,) = prepare([WeightRequirement("inception", url="http://127.0.0.1:9/model.pth", sha256=DIGEST)],
                         offline=True)
    assert outcome.status == "cached"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to read as an unprivileged user")
def test_an_unprivileged_user_reads_a_read_only_cache():
    """The real thing: a cache owned by root, mode a-w, read by uid 65534 (nobody)."""
    folder = Path(tempfile.mkdtemp(prefix="vapi-ro-"))
    try:
        weight = folder / "cache" / "inception" / "model.pth"
        weight.parent.mkdir(parents=True)
        weight.write_bytes(PAYLOAD * 80)  # over 1 MiB: its digest would be remembered in the cache
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        script = ("import sys; from vapi_bench.weights import resolve_weight; from vapi_bench.hashing import "
                  "file_digest; p = resolve_weight(None, what='inception', url='http://127.0.0.1:9/model.pth'); "
                  "print(file_digest(p))")
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(folder),
               "VAPI_BENCH_CACHE": str(folder / "cache"), "VAPI_BENCH_OFFLINE": "1"}
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                               script], env=env, cwd=folder, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == hashlib.sha256(PAYLOAD * 80).hexdigest()
        assert sorted(p.name for p in (folder / "cache").iterdir()) == ["inception"]  # nothing was written
    finally:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(folder)
