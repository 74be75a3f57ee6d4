"""A loopback stand-in for the Hugging Face Hub's HTTP API, for uploads: the endpoints huggingface_hub calls to check a
token (whoami-v2), read and create a repository, validate a card's YAML, classify files (preupload), upload large ones
(the LFS batch API, basic transfer) and commit, and list a repository's tree, answering in the Hub's JSON shapes,
status codes and X-Error-Code headers. huggingface_hub reaches it through HF_ENDPOINT, as a user would point it at a
mirror; with HF_HUB_DISABLE_XET=1 it uploads through LFS (the Xet transport has its own storage protocol, which this
stand-in does not speak).

State is in memory: repositories (files as bytes, which are LFS), the LFS object store (by SHA-256), and a log of
every request (method, path, body bytes received). Faults a test can set: `interrupt[oid]` (an Event set once half
of that object's upload has arrived; the upload then never completes), `drop_once` (the first upload of these objects
is cut off mid-body), `refuse_names` (repository names the Hub answers 400 to), `tamper_after_commit` (path -> bytes
stored instead, as a Hub that kept a damaged file)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()


@dataclass
class Repo:
    owner: str
    private: bool
    files: dict[str, bytes] = field(default_factory=lambda: {".gitattributes": GITATTRIBUTES})
    lfs: set[str] = field(default_factory=set)  # paths stored as LFS
    commits: list[str] = field(default_factory=lambda: ["initial commit"])

    @property
    def sha(self) -> str:
        return hashlib.sha1(str(len(self.commits)).encode()).hexdigest()


@dataclass
class User:
    name: str
    orgs: list[str] = field(default_factory=list)
    role: str = "write"


class HubState:
    def __init__(self):
        self.users: dict[str, User] = {}  # token -> user
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}  # the LFS store, by SHA-256
        self.log: list[tuple[str, str, int]] = []
        self.cards: list[str] = []  # README.md contents sent to /api/validate-yaml
        self.interrupt: dict[str, threading.Event] = {}
        self.drop_once: set[str] = set()
        self.refuse_names: set[str] = set()
        self.tamper_after_commit: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def writes(self, since: int = 0) -> list[tuple[str, str, int]]:
        """Logged requests that create or send something (everything but GETs)."""
        return [r for r in self.log[since:] if r[0] != "GET"]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    base: str

    def log_message(self, *args):
        pass

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, code: int, obj=None, error_code: str | None = None, ctype: str = "application/json"):
        body = json.dumps(obj if obj is not None else {}).encode()
        self.send_response(code)
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if code >= 400 and isinstance(obj, dict) and "error" in obj:
            self.send_header("X-Error-Message", obj["error"])
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _user(self) -> User | None | bool:
        """The token's user; None without a token; False for a token the Hub does not know (answered 401 here)."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        user = self.state.users.get(auth.removeprefix("Bearer "))
        if user is None:
            self._send(401, {"error": "Invalid credentials in Authorization header"})
            return False
        return user

    def _repo(self, repo_id: str, user, write: bool) -> Repo | None:
        """The repository if `user` may see it (and write to it, when `write`); else answered 404/403, None."""
        repo = self.state.repos.get(repo_id)
        may_write = user and (repo_id.split("/")[0] == user.name or repo_id.split("/")[0] in user.orgs)
        if repo is None or (repo.private and not may_write):
            self._send(404, {"error": "Repository not found"}, "RepoNotFound")
            return None
        if write and (not may_write or user.role != "write"):
            self._send(403, {"error": f"You don't have the rights to write to {repo_id}"})
            return None
        return repo

    def _route(self, method: str):
        url = urlsplit(self.path)
        path = unquote(url.path)
        body = self._body() if method == "POST" else b""
        if method != "PUT":  # an upload is logged with the bytes that arrived (_lfs_put)
            with self.state.lock:
                self.state.log.append((method, path, len(body)))
        parts = path.strip("/").split("/")
        user = self._user()
        if user is False:
            return
        if method == "GET" and path == "/api/whoami-v2":
            if user is None:
                return self._send(401, {"error": "Invalid credentials in Authorization header"})
            return self._send(
                200,
                {
                    "type": "user",
                    "name": user.name,
                    "orgs": [{"name": o, "roleInOrg": "write"} for o in user.orgs],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": user.role}},
                },
            )
        if method == "POST" and path == "/api/repos/create":
            return self._create(user, json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        if method == "PUT" and parts[0] == "lfs-upload":
            return self._lfs_put(parts[1])
        if len(parts) >= 2 and parts[1].endswith(".git") and path.endswith("/info/lfs/objects/batch"):
            return self._lfs_batch(f"{parts[0]}/{parts[1].removesuffix('.git')}", user, json.loads(body))
        if len(parts) >= 4 and parts[:2] == ["api", "models"]:
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if method == "GET" and (not rest or rest[0] == "revision"):
                return self._info(repo_id, user)
            if method == "GET" and rest and rest[0] == "tree":
                return self._tree(repo_id, user, parse_qs(url.query))
            if method == "POST" and rest and rest[0] == "preupload":
                return self._preupload(repo_id, user, json.loads(body))
            if method == "POST" and rest and rest[0] == "commit":
                return self._commit(repo_id, user, body)
        self._send(404, {"error": f"the stand-in does not know {method} {path}"})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    # -- endpoints -----------------------------------------------------------------------------------------------
    def _create(self, user, payload: dict):
        if not user:
            return self._send(401, {"error": "Invalid credentials in Authorization header"})
        owner = payload.get("organization") or user.name
        name = payload["name"]
        if name in self.state.refuse_names:
            return self._send(400, {"error": f"Invalid repo name: {name}"})
        if owner != user.name and owner not in user.orgs:
            return self._send(
                403, {"error": f'You don\'t have the rights to create a model under the namespace "{owner}"'}
            )
        repo_id = f"{owner}/{name}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._send(
                    409, {"error": "You already created this model repo", "url": f"{self.base}/{repo_id}"}
                )
            self.state.repos[repo_id] = Repo(
                owner, payload.get("visibility") == "private" or bool(payload.get("private"))
            )
        self._send(200, {"url": f"{self.base}/{repo_id}", "name": repo_id, "id": repo_id})

    def _info(self, repo_id, user):
        repo = self._repo(repo_id, user, write=False)
        if repo:
            self._send(
                200,
                {
                    "_id": repo_id,
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": repo.owner,
                    "sha": repo.sha,
                    "private": repo.private,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                },
            )

    def _tree(self, repo_id, user, query):
        repo = self._repo(repo_id, user, write=False)
        if repo:
            entries = []
            for p, data in sorted(repo.files.items()):
                e = {"type": "file", "path": p, "size": len(data)}
                if p in repo.lfs:
                    e["oid"] = git_oid(lfs_pointer(data))
                    e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}
                else:
                    e["oid"] = git_oid(data)
                entries.append(e)
            self._send(200, entries)

    def _validate_yaml(self, payload: dict):
        content = payload["content"]
        self.state.cards.append(content)
        if content.startswith("---"):
            try:
                meta = yaml.safe_load(content.split("---")[1])
            except yaml.YAMLError as e:
                return self._send(400, {"error": f"Invalid YAML in README.md: {e}"})
            if not isinstance(meta, dict):
                return self._send(400, {"error": "Invalid metadata in README.md: not a mapping"})
        self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, repo_id, user, payload: dict):
        repo = self._repo(repo_id, user, write=True)
        if repo:
            files = []
            for f in payload["files"]:
                sample = base64.b64decode(f["sample"])
                try:
                    sample.decode("utf-8")
                    binary = b"\0" in sample
                except UnicodeDecodeError:
                    binary = True
                lfs = binary or f["size"] > 10_000_000 or f["path"].endswith((".safetensors", ".bin"))
                old = repo.files.get(f["path"])
                oid = (
                    None
                    if old is None
                    else (hashlib.sha256(old).hexdigest() if f["path"] in repo.lfs else git_oid(old))
                )
                files.append(
                    {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
            self._send(200, {"files": files, "commitOid": repo.sha})

    def _lfs_batch(self, repo_id, user, payload: dict):
        repo = self._repo(repo_id, user, write=True)
        if repo:
            objects = []
            for o in payload["objects"]:
                entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
                if o["oid"] not in self.state.objects:
                    entry["actions"] = {"upload": {"href": f"{self.base}/lfs-upload/{o['oid']}", "header": {}}}
                objects.append(entry)
            self._send(200, {"transfer": "basic", "objects": objects}, ctype="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str):
        length = int(self.headers.get("Content-Length") or -1)
        st = self.state
        if oid in st.interrupt or oid in st.drop_once:
            half = self.rfile.read(max(length // 2, 1))
            with st.lock:
                st.log.append(("PUT", f"/lfs-upload/{oid}", len(half)))
            if oid in st.drop_once:  # the connection goes down mid-file, once
                st.drop_once.discard(oid)
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            st.interrupt[oid].set()  # the test interrupts the client now; read until it hangs up, store nothing
            self.connection.settimeout(60)
            try:
                while self.rfile.read(65536):
                    pass
            except OSError:
                pass
            self.close_connection = True
            return
        data = self._body()
        with st.lock:
            st.log.append(("PUT", f"/lfs-upload/{oid}", len(data)))
        if hashlib.sha256(data).hexdigest() != oid:
            return self._send(400, {"error": "sha256 mismatch"})
        with st.lock:
            st.objects[oid] = data
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _commit(self, repo_id, user, body: bytes):
        repo = self._repo(repo_id, user, write=True)
        if not repo:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header, ops = lines[0], lines[1:]
        staged, lfs = {}, set()
        for op in ops:
            v = op["value"]
            if op["key"] == "file":
                staged[v["path"]] = base64.b64decode(v["content"])
            elif op["key"] == "lfsFile":
                if v["oid"] not in self.state.objects:
                    return self._send(422, {"error": f"LFS object {v['oid']} for {v['path']} was never uploaded"})
                staged[v["path"]] = self.state.objects[v["oid"]]
                lfs.add(v["path"])
            else:
                return self._send(400, {"error": f"the stand-in does not commit {op['key']}"})
        with self.state.lock:
            for p, data in staged.items():
                repo.files[p] = self.state.tamper_after_commit.get(p, data)
                (repo.lfs.add if p in lfs else repo.lfs.discard)(p)
            repo.commits.append(header["value"]["summary"])
        self._send(
            200,
            {
                "success": True,
                "commitOid": repo.sha,
                "commitUrl": f"{self.base}/{repo_id}/commit/{repo.sha}",
                "pullRequestUrl": None,
            },
        )


class HubStandIn:
    """Serve a HubState on 127.0.0.1 (a free port) in a thread; `url` is what HF_ENDPOINT takes."""

    def __init__(self):
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        handler.base = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
