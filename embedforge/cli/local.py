"""Running the flow from a terminal: Prefect's temporary server, our errors in one line, nothing left behind.

`embedforge run` and `embedforge resume` use it; a deployment's flow run on a worker needs none of it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from embedforge.errors import EmbedforgeError
from embedforge.orchestration.server import api_answers

# The write end of the watcher's pipe, held open for this process's lifetime.
_WATCHED: list[int] = []
# Why the temporary server did not start, when it did not.
_FAILED: list[str] = []
# Prefect waits 20 s for its temporary server; on a busy 2-core box the first start (a new database) takes
# longer, and a run that then succeeded on a second server began with a traceback. An operator's own
# PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins.
STARTUP_TIMEOUT = 120


def start_embedded_api() -> threading.Thread | None:
    """Start Prefect's temporary server while torch and the model load: each takes seconds, on its own core."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    thread = threading.Thread(target=_start_and_watch, name="embedded-prefect-api", daemon=True)
    thread.start()
    return thread


def _start_and_watch() -> None:
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    # Started with SIGINT blocked (a mask the child keeps): a Ctrl-C in the terminal reaches embedforge,
    # which stops training cleanly, and not the server, which must stay up to record how the run ended.
    # It still stops on SIGTERM, as it is stopped at exit and by the watcher.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server.start(timeout=_startup_timeout())
    except Exception as exc:  # not started in time: never leave it running beside the next one
        server.stop()
        _FAILED.append(str(exc).split(" stdout:")[0])
        return
    # The server is a child process: a killed `embedforge run` (SIGKILL, OOM) cannot stop it, so a
    # watcher in its own session stops it once this process is gone. It waits on a pipe whose only
    # writer is this process, so it wakes once, at the end, and takes no CPU from training before.
    gone, alive = os.pipe()
    subprocess.Popen(
        [sys.executable, "-m", __name__, str(gone), str(server.server_process.pid)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        pass_fds=(gone,),
    )
    os.close(gone)
    _WATCHED.append(alive)


def _startup_timeout() -> int:
    from prefect.settings import get_current_settings

    explicit = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in os.environ
    return get_current_settings().server.ephemeral.startup_timeout_seconds if explicit else STARTUP_TIMEOUT


def wait_for_api(starting: threading.Thread) -> None:
    """Wait for the temporary server; one line, and no server left behind, when it did not start in time."""
    starting.join()
    if _FAILED:
        raise EmbedforgeError(
            f"the temporary Prefect server did not start within {_startup_timeout()} s ({_FAILED[0]}); "
            "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or point PREFECT_API_URL at a running server"
        )


def check_api() -> None:
    """An operator's PREFECT_API_URL that does not answer is one line before anything runs."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url and not api_answers():
        raise EmbedforgeError(f"PREFECT_API_URL={url} does not answer; start the server or unset it")


class OneLineErrors(logging.Filter):
    """On the terminal an EmbedforgeError is its message, printed once at the end: no traceback above it.

    Prefect logs the failure with its traceback; the dashboard keeps that record (the API handler
    sees it first), the console drops it. Any other exception keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], EmbedforgeError))


def one_line_errors() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(OneLineErrors())


def _watch(parent_pipe: int, child: int) -> None:
    os.read(parent_pipe, 1)  # returns once every writer is gone: this process exited, however it ended
    if _alive(child):
        os.kill(child, 15)


def _alive(pid: int) -> bool:
    """Running, that is: a process that has exited but not been reaped yet (a zombie) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    _watch(int(sys.argv[1]), int(sys.argv[2]))
