"""A small local stand-in for the Hugging Face Hub's HTTP API, for the real huggingface_hub client.

It implements the endpoints that create_repo, create_branch, create_commit, create_tag, list_repo_refs,
repo_exists/model_info and snapshot_download call, keeps what was committed, records every
request, and can be told to fail. The Hub itself is unreachable from this machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml


@dataclass
class Repo:
    private: bool
    branches: dict[str, list[dict]] = field(default_factory=lambda: {"main": []})
    tags: dict[str, str] = field(default_factory=dict)

    def files(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        commits = self.branches.get(revision)
        if commits is None:
            for commits in self.branches.values():
                match = [c for c in commits if c["oid"] == revision or self.tags.get(revision) == c["oid"]]
                if match:
                    return match[-1]["oid"], match[-1]["files"]
            return None
        if not commits:
            return "0" * 40, {}
        return commits[-1]["oid"], commits[-1]["files"]


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.failures: list[tuple[str, int]] = []  # (path regex, status), consumed in order
        self.write_status: int | None = None  # e.g. 401/403 for every write
        self.lock = threading.Lock()

    def fail(self, pattern: str, *statuses: int) -> None:
        self.failures.extend((pattern, s) for s in statuses)

    def commits(self, repo_id: str, branch: str = "main") -> list[dict]:
        return self.repos[repo_id].branches[branch]

    def payloads(self) -> bytes:
        return b"\n".join(r["body"] for r in self.requests)


def make_handler(state: HubState, base_url_holder: list[str]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(
            self, status: int, body: object = None, headers: dict | None = None, raw: bytes | None = None
        ) -> None:
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            self._send(
                status, {"error": message}, {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})}
            )

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlparse(self.path)
            path = unquote(url.path)
            with state.lock:
                state.requests.append(
                    {"method": self.command, "path": path, "body": body, "auth": self.headers.get("Authorization")}
                )
                for index, (pattern, status) in enumerate(state.failures):
                    if re.search(pattern, path):
                        del state.failures[index]
                        return self._error(status, f"injected failure {status}")
                if self.command == "POST" and state.write_status:
                    return self._error(
                        state.write_status,
                        "Invalid credentials" if state.write_status == 401 else "You don't have the rights",
                    )
                return self._route(path, parse_qs(url.query), body)

        do_GET = do_POST = do_HEAD = do_PUT = _handle

        def _route(self, path: str, query: dict, body: bytes) -> None:
            if self.command == "POST" and path == "/api/repos/create":
                return self._create_repo(json.loads(body))
            if self.command == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            if path == "/api/whoami-v2":  # what embedforge's check before training asks
                if not (self.headers.get("Authorization") or "").startswith("Bearer "):
                    return self._error(401, "Invalid credentials in Authorization header")
                return self._send(200, {"type": "user", "name": "embedforge-test", "auth": {"type": "access_token"}})
            if m := re.fullmatch(r"/api/models/(.+?)/(preupload|commit|branch|tag)/(.+)", path):
                return self._repo_write(m.group(1), m.group(2), m.group(3), body)
            if m := re.fullmatch(r"/api/models/(.+?)/refs", path):
                return self._refs(m.group(1))
            if m := re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(/.*)?", path):
                return self._tree(m.group(1), m.group(2))
            if m := re.fullmatch(r"/api/models/(.+?)(?:/revision/(.+))?", path):
                return self._info(m.group(1), m.group(2) or "main")
            if m := re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path):
                return self._resolve(m.group(1), m.group(2), m.group(3))
            return self._error(404, f"no route for {self.command} {path}")

        def _validate_yaml(self, payload: dict) -> None:
            """The client checks a README's front matter before committing it, as the Hub does."""
            content = payload.get("content", "")
            try:
                yaml.safe_load(content.split("---", 2)[1] if content.startswith("---") else "")
            except yaml.YAMLError as exc:
                return self._error(400, f"invalid YAML in model card: {exc}")
            return self._send(200, {"errors": [], "warnings": []})

        def _create_repo(self, payload: dict) -> None:
            name, org = payload["name"], payload.get("organization")
            repo_id = f"{org}/{name}" if org and "/" not in name else name
            url = f"{base_url_holder[0]}/{repo_id}"
            if repo_id in state.repos:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            state.repos[repo_id] = Repo(private=bool(payload.get("private")) or payload.get("visibility") == "private")
            return self._send(200, {"url": url, "name": repo_id})

        def _repo_write(self, repo_id: str, action: str, revision: str, body: bytes) -> None:
            repo = state.repos.get(repo_id)
            if repo is None:
                return self._error(404, "Repository not found", "RepoNotFound")
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._send(
                    200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            if action == "branch":
                if revision in repo.branches:
                    return self._error(409, "Reference already exists")
                repo.branches[revision] = list(repo.branches["main"])
                return self._send(200, {})
            if action == "tag":
                tag = json.loads(body)["tag"]
                if tag in repo.tags:
                    return self._error(409, "Tag already exists")
                resolved = repo.files(revision)
                repo.tags[tag] = resolved[0] if resolved else revision
                return self._send(200, {})
            return self._commit(repo_id, repo, revision, body)

        def _commit(self, repo_id: str, repo: Repo, revision: str, body: bytes) -> None:
            if revision not in repo.branches:
                return self._error(404, "Revision not found", "RevisionNotFound")
            previous = repo.files(revision)[1]
            files = dict(previous)
            header = {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "header":
                    header = item["value"]
                elif item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "deletedFile":
                    files.pop(item["value"]["path"], None)
                else:
                    return self._error(400, f"unsupported commit operation {item['key']}")
            oid = hashlib.sha1(body).hexdigest()
            repo.branches[revision].append(
                {
                    "oid": oid,
                    "message": header.get("summary", ""),
                    "files": files,
                    "added": sorted(set(files) - set(previous) | {p for p in files if previous.get(p) != files[p]}),
                }
            )
            return self._send(200, {"commitUrl": f"{base_url_holder[0]}/{repo_id}/commit/{oid}", "commitOid": oid})

        def _info(self, repo_id: str, revision: str) -> None:
            repo = state.repos.get(repo_id)
            if repo is None:
                return self._error(404, "Repository not found", "RepoNotFound")
            resolved = repo.files(revision)
            if resolved is None:
                return self._error(404, "Revision not found", "RevisionNotFound")
            oid, files = resolved
            return self._send(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": oid,
                    "private": repo.private,
                    "tags": [],
                    "siblings": [{"rfilename": p} for p in sorted(files)],
                },
            )

        def _refs(self, repo_id: str) -> None:
            repo = state.repos.get(repo_id)
            if repo is None:
                return self._error(404, "Repository not found", "RepoNotFound")
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": repo.files(b)[0]} for b in repo.branches]
            tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": oid} for t, oid in repo.tags.items()]
            return self._send(200, {"branches": branches, "tags": tags, "converts": []})

        def _tree(self, repo_id: str, revision: str) -> None:
            repo = state.repos.get(repo_id)
            resolved = repo.files(revision) if repo else None
            if resolved is None:
                return self._error(404, "Repository not found", "RepoNotFound")
            return self._send(
                200,
                [
                    {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                    for p, c in sorted(resolved[1].items())
                ],
            )

        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            repo = state.repos.get(repo_id)
            resolved = repo.files(revision) if repo else None
            if resolved is None or filename not in resolved[1]:
                return self._error(404, "Entry not found", "EntryNotFound")
            content = resolved[1][filename]
            return self._send(
                200,
                raw=content,
                headers={"X-Repo-Commit": resolved[0], "ETag": f'"{hashlib.sha1(content).hexdigest()}"'},
            )

    return Handler


class LocalHub:
    """Start with ``with LocalHub() as hub:``; point the client at ``hub.url``."""

    def __init__(self) -> None:
        self.state = HubState()
        holder: list[str] = [""]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state, holder))
        self.url = holder[0] = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
