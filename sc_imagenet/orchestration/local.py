"""Run the real deployment paths on one machine: a local Prefect server (SQLite, or a given database
such as PostgreSQL), then either `sc-imagenet serve` or the work-pool path (`prefect work-pool create`,
`prefect deploy --all` from prefect.yaml, `prefect worker start`), and
`prefect deployment run build-sc-imagenet/<name> --watch`. Used by `make demo` and the end-to-end
tests; it reuses a server that already answers and stops only what it started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_PORT = 4200
FLOW_NAME = "build-sc-imagenet"
WORK_POOL = "sc-imagenet"  # the process work pool prefect.yaml's deployments use
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _bin(name: str) -> str:
    """A console script from this interpreter's environment (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


class LocalPrefect:
    """Context manager: a Prefect API to talk to, started here if none answers.

    home: PREFECT_HOME for a server started here (its SQLite database lives there).
    port: None = reuse a server on 4200 if one answers, else start one (4200 or a free port).
    database_url: the server's database (e.g. `LocalPostgres().url`); None = SQLite under `home`. A server
        started with it is never a reused one.
    """

    def __init__(self, home: Path, port: int | None = None, ui: bool = True, log_dir: Path | None = None,
                 start_timeout: float = 180.0, database_url: str | None = None) -> None:
        self.home = Path(home).resolve()
        self.log_dir = Path(log_dir or self.home).resolve()
        self.ui = ui
        self.start_timeout = start_timeout
        self.port = port
        self.database_url = database_url
        self.api_url = ""
        self.started: list[subprocess.Popen] = []
        self.server_started = False

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_COLORS": "false"})
        env.update(extra)
        return env

    def _spawn(self, args: list[str], log_name: str, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 (the child owns it for its lifetime)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env or self.env(),
                                start_new_session=True)
        self.started.append(proc)
        return proc

    def __enter__(self) -> LocalPrefect:
        if self.port is None and self.database_url is not None:
            self.port = free_port()
        if self.port is None:
            default = f"http://127.0.0.1:{DEFAULT_PORT}/api"
            if api_healthy(default):
                self.api_url = default
                return self
            self.port = DEFAULT_PORT if port_free(DEFAULT_PORT) else free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        if api_healthy(self.api_url):
            if self.database_url is not None:
                raise RuntimeError(f"a Prefect server already answers on {self.api_url}; it does not use the "
                                   "given database")
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        args = [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        if not self.ui:
            args.append("--no-ui")
        server_env = None
        if self.database_url is not None:  # the current setting's name and its older alias, so ours wins
            server_env = self.env(PREFECT_SERVER_DATABASE_CONNECTION_URL=self.database_url,
                                  PREFECT_API_DATABASE_CONNECTION_URL=self.database_url)
        proc = self._spawn(args, "prefect-server.log", env=server_env)
        self.server_started = True
        deadline = time.monotonic() + self.start_timeout
        while not api_healthy(self.api_url):
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}; see "
                                   f"{self.log_dir / 'prefect-server.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prefect server did not answer on {self.api_url} within "
                                   f"{self.start_timeout:.0f}s")
            time.sleep(0.5)
        return self

    def deployment(self, name: str) -> dict[str, Any] | None:
        url = f"{self.api_url}/deployments/name/{FLOW_NAME}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError):
            return None

    def serve(self, cwd: Path, env: dict[str, str] | None = None, names: tuple[str, ...] = ("demo",),
              timeout: float = 180.0) -> subprocess.Popen:
        """Start `sc-imagenet serve` and wait until its deployments are registered."""
        return self._spawn_until([_bin("sc-imagenet"), "serve"], "serve.log", cwd, env,
                                 lambda: all(self.deployment(n) for n in names),
                                 f"deployments {names} registered", timeout)

    def _spawn_until(self, cmd: list[str], log_name: str, cwd: Path | None, env: dict[str, str] | None,
                     ready: Callable[[], bool], what: str, timeout: float) -> subprocess.Popen:
        """Start a long-running command and wait until `ready()`; fail early if it exits."""
        proc = self._spawn(cmd, log_name, cwd=cwd, env=env)
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                raise RuntimeError(f"`{Path(cmd[0]).name} {' '.join(cmd[1:])}` exited with "
                                   f"{proc.returncode}; see {self.log_dir / log_name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not {what} within {timeout:.0f}s")
            time.sleep(0.5)
        return proc

    def run_deployment(self, name: str, params: dict[str, Any] | None = None, timeout: float = 3600.0,
                       capture: bool = False, job_variables: dict[str, Any] | None = None,
                       ) -> subprocess.CompletedProcess:
        """`prefect deployment run build-sc-imagenet/<name> --watch`: returns when the run ends.

        job_variables: per-run overrides of the work pool's job variables (e.g. {"env": {...}}), values as JSON.
        """
        args = [_bin("prefect"), "deployment", "run", f"{FLOW_NAME}/{name}", "--watch",
                "--watch-timeout", str(int(timeout))]
        for key, value in (params or {}).items():
            args += ["--param", f"{key}={value}"]
        for key, value in (job_variables or {}).items():
            args += ["--job-variable", f"{key}={json.dumps(value)}"]
        return subprocess.run(args, env=self.env(), capture_output=capture, text=True, timeout=timeout + 60)

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.started):
            _stop(proc)
        self.started.clear()

    # --- the work-pool path: prefect.yaml + `prefect deploy --all` + `prefect worker start` -------------

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 300.0,
            check: bool = True) -> subprocess.CompletedProcess:
        """One non-interactive `prefect` command against this API, output captured."""
        res = subprocess.run([_bin("prefect"), *args], env=self.env(PREFECT_CLI_PROMPT="false"), cwd=cwd,
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"`prefect {' '.join(args)}` exited with {res.returncode}:\n"
                               f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        return res

    def create_work_pool(self, name: str = WORK_POOL) -> None:
        """`prefect work-pool create <name> --type process` (kept if it exists)."""
        if self._get(f"/work_pools/{name}") is None:
            self.cli("work-pool", "create", name, "--type", "process")

    def deploy_all(self, project: Path) -> str:
        """`prefect deploy --all --no-prompt` in `project` (where prefect.yaml is): registers its deployments."""
        return self.cli("deploy", "--all", "--no-prompt", cwd=project).stdout

    def start_worker(self, pool: str = WORK_POOL, env: dict[str, str] | None = None, cwd: Path | None = None,
                     timeout: float = 120.0) -> subprocess.Popen:
        """`prefect worker start --pool <pool>`; returns once the worker has reported to the server."""
        return self._spawn_until([_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                                 f"worker-{pool}.log", cwd, env,
                                 lambda: bool(self._post(f"/work_pools/{pool}/workers/filter", {})),
                                 f"a worker of pool {pool!r} reported", timeout)

    def flow_run(self, flow_run_id: str) -> dict[str, Any] | None:
        return self._get(f"/flow_runs/{flow_run_id}")

    def wait_flow_run(self, flow_run_id: str, timeout: float = 3600.0) -> dict[str, Any]:
        """Poll the flow run until its state is terminal; returns it. (`prefect flow-run watch` replays the
        run's earlier events, so after a retry it can stop at the previous attempt's Failed.)"""
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(flow_run_id)
            if run is not None and run.get("state_type") in TERMINAL_STATES:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} not finished within {timeout:.0f}s")
            time.sleep(1.0)

    def retry_flow_run(self, flow_run_id: str, timeout: float = 3600.0) -> dict[str, Any]:
        """`prefect flow-run retry <id>` (back to Scheduled, a worker picks it up); returns the run once it ends."""
        self.cli("flow-run", "retry", flow_run_id)
        return self.wait_flow_run(flow_run_id, timeout)

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"{self.api_url}{path}", timeout=10) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError):
            return None

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(f"{self.api_url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError):
            return None


def flow_run_id(deployment_run_output: str) -> str:
    """The flow run's id in the output of `prefect deployment run` (its `UUID: ...` line)."""
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", deployment_run_output)
    if match is None:
        raise ValueError("no flow run UUID in the output of `prefect deployment run`")
    return match.group(1)
