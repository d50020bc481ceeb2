"""A Hugging Face Hub stand-in for tests without the internet: serves local folders as model
repositories over HTTP, in the Hub's layout, to huggingface_hub (0.36 under transformers 4.57,
2.x under 5.x) and to qwen_tts_core.download. What huggingface_hub asks for:

  GET  /api/models/{repo}[/revision/{rev}]?blobs=True   model_info(files_metadata=True): `sha` and
       `siblings` with rfilename, size, blobId (git blob sha1) and, for LFS files, lfs {sha256,
       size, pointerSize}
  GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=True   list_repo_tree (snapshot_download)
  HEAD /{repo}/resolve/{rev}/{path}   hf_hub_download's metadata call: X-Repo-Commit and ETag (the
       blob id); an LFS file answers 302 to the CDN with X-Linked-Etag (its sha256) and X-Linked-Size
  GET  /{repo}/resolve/{rev}/{path}   the bytes (LFS files through that redirect); Range requests
       get 206 with Content-Range

The CDN is this same server under another host name (localhost instead of 127.0.0.1), as the real
CDN is another host: a client must not send the Hub token there. Faults: `cut[path] = n` ends the
next response for that file after n bytes by closing the connection (`down_after_cut`: and then
drops every connection, as a server that went down; `down` brings it back); `corrupt` holds paths
served with one byte changed (the listing keeps the true hashes); `no_hash` holds paths listed
without any hash (as a poor mirror might); `log` records every request.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".onnx"}
LFS_MIN_SIZE = 10 << 20          # larger files go to LFS whatever their type


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFile:
    path: str
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {len(self.data)}\n").encode()

    @property
    def blob_id(self) -> str:
        return git_blob_sha1(self.pointer if self.lfs else self.data)

    def sibling(self) -> dict:
        s = {"rfilename": self.path, "size": len(self.data), "blobId": self.blob_id}
        if self.lfs:
            s["lfs"] = {"sha256": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return s


class HubRepo:
    def __init__(self, folder: Path):
        self.files = {}
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(folder).as_posix()
                data = p.read_bytes()
                self.files[rel] = HubFile(rel, data, p.suffix in LFS_SUFFIXES or len(data) >= LFS_MIN_SIZE)
        self.commit = hashlib.sha1("".join(f"{f.path}:{f.blob_id}\n" for f in self.files.values())
                                   .encode()).hexdigest()

    def tree(self, prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        entries, dirs = [], set()
        for f in self.files.values():
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix):].split("/")
            for i in range(1, len(rest) if recursive else min(2, len(rest))):
                dirs.add(prefix + "/".join(rest[:i]))
            if recursive or len(rest) == 1:
                e = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": f.path}
                if f.lfs:
                    e["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer)}
                entries.append(e)
        return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in sorted(dirs)] + entries


class FakeHub:
    """`with FakeHub({"Qwen/name": folder}) as hub:` serves at hub.endpoint until the block ends."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = {repo: HubRepo(Path(folder)) for repo, folder in repos.items()}
        self.cut: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.extra_siblings: list[dict] = []          # listed but not served (path tricks)
        self.no_hash: set[str] = set()                # listed with their size only (no blobId, no lfs)
        self.down = False                 # True: every connection is closed without an answer
        self.down_after_cut = False       # go down when a cut answer breaks off
        self.log: list[tuple] = []        # (method, path, Range, Host, Authorization) per request
        self.sent: list[tuple[str, int]] = []                  # file path, body bytes sent
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}/cdn"
        self.thread = None

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join()
            self.thread = None
        self.server.server_close()

    def requests(self, method: str = "GET", contains: str = "") -> list[tuple]:
        return [r for r in self.log if r[0] == method and contains in r[1]]

    def bytes_served(self, path: str) -> int:
        """Body bytes sent for `path` (through /resolve or the CDN), summed over requests."""
        return sum(n for p, n in self.sent if p == path)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):   # a client gone
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args):             # keep the test output clean
        pass

    def handle(self):
        if not self.hub.down:                 # a server that is down drops the connection
            super().handle()

    def do_HEAD(self):
        self._route(body=False)

    def do_GET(self):
        self._route(body=True)

    # ------------------------------------------------------------------ routing
    def _route(self, body: bool) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        self.hub.log.append((self.command, path, self.headers.get("Range"), self.headers.get("Host", ""),
                             self.headers.get("Authorization")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._info(m[1], m[2] or "main", "blobs" in query)
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
            return self._tree(m[1], m[2], m[3] or "", query.get("recursive", ["false"])[0].lower() == "true")
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(m[1], m[2], m[3], body)
        if m := re.fullmatch(r"/cdn/([^/]+/[^/]+)/([0-9a-f]{64})", path):
            repo = self.hub.repos.get(m[1])
            f = next((f for f in repo.files.values() if f.lfs and f.sha256 == m[2]), None) if repo else None
            if f is None:
                return self._error(404, "EntryNotFound", "no such object")
            return self._bytes(f, body, {"ETag": f'"{f.sha256}"'})
        return self._error(404, "RepoNotFound", "Repository not found")

    def _repo(self, repo_id: str, rev: str):
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if rev not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    def _info(self, repo_id: str, rev: str, blobs: bool) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        siblings = [({"rfilename": f.path, "size": len(f.data)} if f.path in self.hub.no_hash else f.sibling())
                    if blobs else {"rfilename": f.path} for f in repo.files.values()]
        self._json({"_id": "0" * 24, "id": repo_id, "modelId": repo_id, "sha": repo.commit,
                    "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                    "tags": [], "siblings": siblings + self.hub.extra_siblings})

    def _tree(self, repo_id: str, rev: str, prefix: str, recursive: bool) -> None:
        repo = self._repo(repo_id, rev)
        if repo is not None:
            self._json(repo.tree(prefix, recursive))

    def _resolve(self, repo_id: str, rev: str, path: str, body: bool) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        f = repo.files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        common = {"X-Repo-Commit": repo.commit, "ETag": f'"{f.blob_id}"'}
        if f.lfs:                                  # the Hub sends LFS files to its CDN
            self.send_response(302)
            for k, v in {**common, "Location": f"{self.hub.cdn}/{repo_id}/{f.sha256}",
                         "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.data)),
                         "Content-Length": "0"}.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self._bytes(f, body, common)

    # ------------------------------------------------------------------ answers
    def _bytes(self, f: HubFile, body: bool, headers: dict) -> None:
        data = f.data
        if f.path in self.hub.corrupt:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        start, status = 0, 200
        if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start, status = int(m[1]), 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        part = data[start:]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(part)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        cut = self.hub.cut.pop(f.path, None) if self.command == "GET" else None
        if cut is not None:
            part = part[:cut]
            self.close_connection = True       # the client sees the connection drop mid-file
            self.hub.down = self.hub.down or self.hub.down_after_cut
        self.wfile.write(part)
        self.hub.sent.append((f.path, len(part)))

    def _json(self, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, code: int, error_code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(code)
        self.send_header("X-Error-Code", error_code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def closed_port_endpoint() -> str:
    """An address where nothing listens (a server that is down)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
