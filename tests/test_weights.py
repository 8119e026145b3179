"""Downloads and `prepare` against a local HTTP server: resume, atomicity, sha256, offline, hf://."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from vapi_bench.errors import CheckpointError, OfflineError
from vapi_bench.prepare import WeightRequirement, prepare
from vapi_bench.weights import DownloadError, HfFile, resolve_weight

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Serves PAYLOAD at any path; can honour Range, ignore it, or cut the body short."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None  # send only this many bytes, then close
        self.honour_range = True
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path.endswith("/missing.bin"):
                    self.send_error(404)
                    return
                start = int(rng[len("bytes="):].rstrip("-")) if rng and server.honour_range else 0
                if start >= len(PAYLOAD):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                    self.end_headers()
                    return
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VAPI_BENCH_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "")
    return tmp_path / "cache"


def test_download_lands_in_cache_verified_and_is_reused(server, cache):
    path = resolve_weight(None, what="inception", url=f"{server.url}/w/model.pth", sha256=DIGEST)
    assert path == cache / "inception" / "model.pth" and path.read_bytes() == PAYLOAD
    assert resolve_weight(None, what="inception", url=f"{server.url}/w/model.pth") == path
    assert len(server.requests) == 1
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".") and "part" in p.name] == []


def test_sha256_prefix_is_accepted_and_mismatch_discards_the_file(server, cache):
    assert resolve_weight(None, what="a", url=f"{server.url}/x.bin", sha256=DIGEST[:8]).is_file()
    with pytest.raises(CheckpointError, match="expected 00000000"):
        resolve_weight(None, what="b", url=f"{server.url}/x.bin", sha256="0" * 64)
    assert not (cache / "b" / "x.bin").exists() and not (cache / "b" / ".x.bin.part").exists()


def test_interrupted_download_resumes_with_range(server, cache):
    server.cut_after = 5000
    with pytest.raises(DownloadError, match="run again to resume"):
        resolve_weight(None, what="w", url=f"{server.url}/big.bin", sha256=DIGEST)
    part = cache / "w" / ".big.bin.part"
    assert part.stat().st_size == 5000 and not (cache / "w" / "big.bin").exists()
    server.cut_after = None
    path = resolve_weight(None, what="w", url=f"{server.url}/big.bin", sha256=DIGEST)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/big.bin", "bytes=5000-")


def test_server_ignoring_range_restarts_from_scratch(server, cache):
    (cache / "w").mkdir(parents=True)
    (cache / "w" / ".f.bin.part").write_bytes(b"garbage!")
    server.honour_range = False
    path = resolve_weight(None, what="w", url=f"{server.url}/f.bin", sha256=DIGEST)
    assert path.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_on_416(server, cache):
    (cache / "w").mkdir(parents=True)
    (cache / "w" / ".f.bin.part").write_bytes(PAYLOAD)
    assert resolve_weight(None, what="w", url=f"{server.url}/f.bin", sha256=DIGEST).read_bytes() == PAYLOAD


def test_http_error_is_named(server):
    with pytest.raises(DownloadError, match=r"missing\.bin failed: HTTP 404"):
        resolve_weight(None, what="w", url=f"{server.url}/missing.bin")


def test_offline_never_touches_the_network_and_says_where_to_put_the_file(server, cache, monkeypatch):
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    url = f"{server.url}/w/model.pth"
    with pytest.raises(OfflineError) as err:
        resolve_weight(None, what="inception", url=url)
    message = str(err.value)
    assert str(cache / "inception" / "model.pth") in message and url in message and "prepare" in message
    assert server.requests == []
    (cache / "inception").mkdir(parents=True)
    (cache / "inception" / "model.pth").write_bytes(b"placed by hand")
    assert resolve_weight(None, what="inception", url=url).read_bytes() == b"placed by hand"


def test_local_paths_are_used_as_is_and_missing_ones_named(tmp_path):
    local = tmp_path / "mine.pth"
    local.write_bytes(b"x")
    assert resolve_weight(str(local), what="w", url="http://unused/x") == local
    with pytest.raises(OfflineError, match="nope.pth does not exist"):
        resolve_weight(str(tmp_path / "nope.pth"), what="w")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("hf://FoundationVision/LlamaGen/vq_ds16_c2i.pt", HfFile("FoundationVision/LlamaGen", "vq_ds16_c2i.pt")),
        ("hf://deepseek-ai/Janus-Pro-1B@v1/sub/model.safetensors",
         HfFile("deepseek-ai/Janus-Pro-1B", "sub/model.safetensors", "v1")),
    ],
)
def test_hf_ids_parse(spec, expected):
    assert HfFile.parse(spec) == expected


def test_bad_hf_id_is_explained():
    with pytest.raises(ValueError, match="hf://owner/repo"):
        HfFile.parse("hf://just-a-repo")


def test_prepare_downloads_dedupes_and_then_reports_cached(server, cache, tmp_path):
    local = tmp_path / "local.pth"
    local.write_bytes(b"l")
    reqs = [
        WeightRequirement("inception", url=f"{server.url}/a.pth", sha256=DIGEST),
        WeightRequirement("inception", url=f"{server.url}/a.pth", sha256=DIGEST),
        WeightRequirement("tokenizer", url=f"{server.url}/b.pt", spec=str(local)),
        WeightRequirement("reference", url=f"{server.url}/missing.bin"),
    ]
    first = prepare(reqs)
    assert [o.status for o in first] == ["downloaded", "local", "failed"]
    assert "HTTP 404" in first[2].message and not first[2].ok
    assert [o.status for o in prepare(reqs[:3])] == ["cached", "local"]


def test_prepare_offline_lists_missing_files_and_verify_catches_corruption(server, cache):
    req = WeightRequirement("inception", url=f"{server.url}/a.pth", sha256=DIGEST)
    (outcome,) = prepare([req], offline=True)
    assert outcome.status == "missing" and str(cache / "inception" / "a.pth") in outcome.message
    assert server.requests == []
    prepare([req])
    (cache / "inception" / "a.pth").write_bytes(b"damaged in transit")
    (outcome,) = prepare([req], offline=True)
    assert outcome.status == "failed" and "sha256" in outcome.message


def test_prepare_runs_the_derive_step_after_download_and_reports_its_failure(server, cache):
    def to_upper(path):
        target = path.with_suffix(".upper")
        target.write_bytes(path.read_bytes().upper())
        return target

    def broken(path):
        raise CheckpointError(f"cannot convert {path.name}")

    (outcome,) = prepare([WeightRequirement("inception", url=f"{server.url}/a.pth", sha256=DIGEST, derive=to_upper)])
    assert outcome.status == "downloaded" and outcome.path == cache / "inception" / "a.upper"
    assert outcome.path.read_bytes() == PAYLOAD.upper() and "derived from" in outcome.message
    (outcome,) = prepare([WeightRequirement("inception", url=f"{server.url}/a.pth", derive=broken)])
    assert outcome.status == "failed" and "cannot convert a.pth" in outcome.message
