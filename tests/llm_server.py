"""A local stand-in for an OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp's server).

It speaks the protocol the real client talks: POST /v1/chat/completions with a model and messages, a
reply with choices[0].message.content and usage. Its queries are made from the passage's own words.
Failures are scripted: the next N requests answer a status, with a Retry-After header when asked.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LLMState:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.failures: list[tuple[int, str | None]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.latency = 0.05  # seconds per request: long enough for requests sent at once to overlap
        self.models = ["local-model"]
        self.key: str | None = None  # when set, requests must carry it
        self.echo_key = False  # a refused key is quoted back in the 401 reply, as some gateways do
        self.unrelated: dict[str, str] = {}  # a word of the passage -> the query answered instead

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self.failures += [(status, retry_after)] * times

    def completions(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]


def queries_for(prompt: str) -> list[str]:
    """Queries a reader of the passage might type: made of the passage's own distinctive words."""
    passage = re.search(r"<passage>\s*(.*?)\s*</passage>", prompt, re.S)
    words = [w for w in re.findall(r"[a-z]{4,}\d*", (passage.group(1) if passage else prompt).lower())]
    n = int(m.group(1)) if (m := re.search(r"Write (\d+) different", prompt)) else 1
    distinct = list(dict.fromkeys(words))
    return [f"what about the {' '.join(distinct[i : i + 3])}?" for i in range(0, 3 * n, 3)][:n]


def _answer(state: LLMState, body: dict, failure: tuple[int, str | None] | None) -> tuple[int, dict, dict]:
    """The status, body and headers of a chat completion: a scripted failure, or queries made of the passage."""
    if failure:
        status, retry_after = failure
        return status, {"error": {"message": f"scripted {status}"}}, {"Retry-After": retry_after} if retry_after else {}
    prompt = body["messages"][-1]["content"]
    queries = queries_for(prompt)
    for word, query in state.unrelated.items():
        queries = [query] if word in prompt else queries
    text = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(queries))
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    return 200, {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage}, {}


def make_handler(state: LLMState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the test reads state.requests instead
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            sent = self.headers.get("Authorization")
            if state.key and sent != f"Bearer {state.key}":
                echoed = f": got Authorization: {sent}" if state.echo_key else ""
                self._send(401, {"error": {"message": f"invalid api key{echoed}"}})
                return False
            return True

        def do_GET(self) -> None:
            if self.path == "/stats":  # for a benchmark running the server in its own process
                return self._send(
                    200, {"completions": len(state.completions()), "most_in_flight": state.most_in_flight}
                )
            state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "at": time.time()})
            if self.path.rstrip("/").endswith("/models") and self._authorized():
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in state.models]})
            elif not self.path.rstrip("/").endswith("/models"):
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with state.lock:
                state.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body, "at": time.time()}
                )
            if not self._authorized():
                return
            with state.lock:
                failure = state.failures.pop(0) if state.failures else None
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            try:
                time.sleep(state.latency)
                reply = _answer(state, body, failure)
            finally:
                # Counted out before the answer leaves: a client holding it may send its next request at once,
                # and that one must not find this one still counted.
                with state.lock:
                    state.in_flight -= 1
            self._send(*reply)

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # connections opened at once queue up, as a real server's backlog lets them
    daemon_threads = True


class LocalLLM:
    """`with LocalLLM() as llm:` serves on a free port; llm.url is the base_url (ending in /v1)."""

    def __init__(self) -> None:
        self.state = LLMState()
        self.server = _Server(("127.0.0.1", 0), make_handler(self.state))
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> LocalLLM:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":  # python tests/llm_server.py LATENCY: serve until killed, the base URL on the first line
    import sys

    server = LocalLLM()
    server.state.latency = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    print(server.url, flush=True)
    server.server.serve_forever()
