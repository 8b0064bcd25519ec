"""A minimal in-memory Hugging Face Hub for tests: just the HTTP endpoints `huggingface_hub` 2.x calls for
`create_repo`, `create_commit` / `upload_folder` / `push_to_hub`, `model_info` and `hf_hub_download`.

Run it on 127.0.0.1 and point clients at it with `HF_ENDPOINT=http://127.0.0.1:<port>`. The server answers the
preupload call with `uploadMode: "regular"` for every file, so clients send file contents inline (base64) in the
commit and never use LFS or Xet: the server decides the upload mode, exactly as the real Hub does for small files.

Every request is recorded in `FakeHub.requests` as `(method, path)`, and anything it does not implement is answered
with 501 and recorded in `FakeHub.unhandled`, so a test can show what a client needed that the fake lacks.
"""

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_REV = r"(?P<rev>[^/]+)"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, the `oid` the Hub reports for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    commits: list[Commit] = field(default_factory=list)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        if revision == "main":
            return self.commits[-1]
        return next((commit for commit in self.commits if commit.oid == revision), None)


class FakeHub:
    """In-memory Hub state plus a threaded HTTP server. Use as a context manager; `endpoint` is the URL to use."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    # -- state changes (called by the handler under the lock) ---------------------------------------------------------

    def create_repo(self, repo_id: str) -> bool:
        with self._lock:
            if repo_id in self.repos:
                return False
            repo = Repo(repo_id)
            # A real repo starts with an initial commit holding `.gitattributes`.
            initial = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
            repo.commits.append(Commit(_new_oid(repo_id, 0), "initial commit", initial))
            self.repos[repo_id] = repo
            return True

    def commit(self, repo_id: str, revision: str, lines: list[dict]) -> Commit:
        with self._lock:
            repo = self.repos[repo_id]
            parent = repo.resolve(revision)
            files = dict(parent.files)
            message = ""
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    message = value.get("summary", "")
                elif key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise ValueError(f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: data for path, data in files.items() if not path.startswith(prefix)}
                else:  # lfsFile: never requested, since preupload always answers "regular"
                    raise ValueError(f"unsupported commit operation {key!r}")
            commit = Commit(_new_oid(repo_id, len(repo.commits)), message, files)
            repo.commits.append(commit)
            return commit


def _new_oid(repo_id: str, index: int) -> str:
    return hashlib.sha1(f"{repo_id}:{index}:{time.time_ns()}".encode()).hexdigest()


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # keep test output clean
            pass

        # -- plumbing ---------------------------------------------------------------------------------------------

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload, headers: dict | None = None):
            self._send(status, json.dumps(payload).encode(), headers)

        def _error(self, status: int, code: str, message: str, headers: dict | None = None):
            headers = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
            self._json(status, {"error": message}, headers)

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            return repo

        def _commit(self, repo: Repo, revision: str) -> Commit | None:
            commit = repo.resolve(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        def _dispatch(self):
            path = urlsplit(self.path).path
            hub.requests.append((self.command, path))
            for method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, path)
                if method == self.command and match:
                    return handler(self, **match.groupdict())
            hub.unhandled.append((self.command, path))
            body = self._body() if self.command in ("POST", "PUT") else b""
            del body
            self._error(501, "NotImplemented", f"fake hub does not implement {self.command} {path}")

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

        # -- endpoints ----------------------------------------------------------------------------------------------

        def create_repo(self):
            payload = json.loads(self._body())
            name, organization = payload["name"], payload.get("organization")
            repo_id = f"{organization}/{name}" if organization else f"user/{name}"
            url = f"{hub.endpoint}/{repo_id}"
            if not hub.create_repo(repo_id):
                # With `exist_ok=True` the client reads the repo URL from this 409 body, as the real Hub sends it.
                message = "You already created this model repo"
                return self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
            self._json(200, {"url": url, "name": repo_id, "id": repo_id})

        def validate_yaml(self):
            self._body()
            self._json(200, {"errors": [], "warnings": []})

        def whoami(self):
            self._json(200, {"type": "user", "name": "user", "auth": {"accessToken": {"role": "write"}}})

        def preupload(self, repo, rev):
            payload = json.loads(self._body())
            repo_obj = self._repo(repo)
            if repo_obj is None:
                return
            commit = self._commit(repo_obj, rev)
            if commit is None:
                return
            files = []
            for entry in payload["files"]:
                existing = commit.files.get(entry["path"])
                oid = git_blob_sha1(existing) if existing is not None else None
                files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
            self._json(200, {"files": files, "commitOid": commit.oid})

        def commit(self, repo, rev):
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            repo_obj = self._repo(repo)
            if repo_obj is None or self._commit(repo_obj, rev) is None:
                return
            try:
                commit = hub.commit(repo, rev, lines)
            except ValueError as error:
                return self._error(400, "BadRequest", str(error))
            url = f"{hub.endpoint}/{repo}/commit/{commit.oid}"
            self._json(200, {"commitUrl": url, "commitOid": commit.oid, "pullRequestUrl": None, "success": True})

        def model_info(self, repo, rev="main"):
            repo_obj = self._repo(repo)
            if repo_obj is None:
                return
            commit = self._commit(repo_obj, rev)
            if commit is None:
                return
            self._json(
                200,
                {
                    "_id": repo,
                    "id": repo,
                    "modelId": repo,
                    "sha": commit.oid,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "tags": [],
                    "siblings": [
                        {"rfilename": path, "size": len(data)} for path, data in sorted(commit.files.items())
                    ],
                },
            )

        def tree(self, repo, rev, path=""):
            repo_obj = self._repo(repo)
            if repo_obj is None:
                return
            commit = self._commit(repo_obj, rev)
            if commit is None:
                return
            prefix = f"{path.strip('/')}/" if path else ""
            entries = [
                {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
                for name, data in sorted(commit.files.items())
                if name.startswith(prefix)
            ]
            self._json(200, entries)

        def resolve(self, repo, rev, path):
            repo_obj = self._repo(repo)
            if repo_obj is None:
                return
            commit = self._commit(repo_obj, rev)
            if commit is None:
                return
            path = unquote(path)
            data = commit.files.get(path)
            if data is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": commit.oid})
            etag = f'"{git_blob_sha1(data)}"'
            self._send(200, data, {"X-Repo-Commit": commit.oid, "ETag": etag}, "application/octet-stream")

    ROUTES = [
        ("POST", r"/api/repos/create", Handler.create_repo),
        ("POST", r"/api/validate-yaml", Handler.validate_yaml),
        ("GET", r"/api/whoami-v2", Handler.whoami),
        ("POST", rf"/api/models/{_REPO}/preupload/{_REV}", Handler.preupload),
        ("POST", rf"/api/models/{_REPO}/commit/{_REV}", Handler.commit),
        ("GET", rf"/api/models/{_REPO}", Handler.model_info),
        ("GET", rf"/api/models/{_REPO}/revision/{_REV}", Handler.model_info),
        ("GET", rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?", Handler.tree),
        ("HEAD", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", Handler.resolve),
        ("GET", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", Handler.resolve),
    ]
    return Handler


if __name__ == "__main__":  # a manual run: `python modeling_tests/fake_hub.py` then set HF_ENDPOINT
    with FakeHub() as server:
        print(f"fake hub at {server.endpoint}", flush=True)
        threading.Event().wait()
