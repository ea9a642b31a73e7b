"""A throwaway PostgreSQL server for Prefect's database, started from the machine's own binaries.

`LocalPostgres` runs `initdb` in a fresh temporary folder, starts the server with `pg_ctl` on
127.0.0.1 and a free port (trust authentication, no durability: nothing here outlives the context),
creates one database and yields its SQLAlchemy URL (`postgresql+asyncpg://...`, what Prefect's
`PREFECT_SERVER_DATABASE_CONNECTION_URL` / `PREFECT_API_DATABASE_CONNECTION_URL` take); on exit it
stops the server and deletes the folder. The end-to-end test on Postgres uses it; a real deployment
points Prefect at a managed PostgreSQL instead.

PostgreSQL refuses to run as root. Run as root, the server runs as an unprivileged account: `postgres`
(present wherever the distribution's server package is installed), else `nobody`, else a system
account `sc-imagenet-pg` created here with `useradd`. Its data folder is a `mkdtemp` folder under the
system temporary directory (world-traversable), owned by that account. Binaries are found on PATH
(`pg_ctl`, following a symlink to the real bin folder, where `createdb` lives too), under
`$SC_IMAGENET_PG_BINDIR`, or in `/usr/lib/postgresql/<version>/bin`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from sc_imagenet.orchestration.local import free_port

SYSTEM_ACCOUNT = "sc-imagenet-pg"
CANDIDATE_ACCOUNTS = ("postgres", "nobody")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or no way to run them."""


def find_bindir() -> Path:
    """The folder holding `initdb`, `pg_ctl` and `createdb` of one PostgreSQL installation."""
    candidates: list[Path] = []
    if os.environ.get("SC_IMAGENET_PG_BINDIR"):
        candidates.append(Path(os.environ["SC_IMAGENET_PG_BINDIR"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates += [Path(on_path).resolve().parent, Path(on_path).parent]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres", "createdb")):
            return bindir
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres, createdb) on PATH, under "
                              "$SC_IMAGENET_PG_BINDIR or in /usr/lib/postgresql/*/bin")


def server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this process's own) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in (*CANDIDATE_ACCOUNTS, SYSTEM_ACCOUNT):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresUnavailable("running as root, no unprivileged account (postgres, nobody) and no useradd to "
                                  "create one: PostgreSQL cannot run as root")
    subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_ACCOUNT],
                   check=True, capture_output=True)
    return pwd.getpwnam(SYSTEM_ACCOUNT)


def _traversable_by_others(folder: Path) -> bool:
    """Every folder from / down to `folder` lets other accounts in (the server's account is not us)."""
    return all(p.stat().st_mode & 0o001 for p in (folder.resolve(), *folder.resolve().parents))


class LocalPostgres:
    """Context manager: a PostgreSQL server in a temporary folder; `url` is the database's SQLAlchemy URL."""

    def __init__(self, database: str = "prefect", user: str = "prefect", port: int | None = None,
                 start_timeout: float = 60.0) -> None:
        self.database = database
        self.user = user
        self.port = port
        self.start_timeout = start_timeout
        self.folder: Path | None = None
        self.url = ""
        self.account: pwd.struct_passwd | None = None
        self._bindir: Path | None = None
        self._started = False

    @property
    def data_dir(self) -> Path:
        assert self.folder is not None
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        assert self.folder is not None
        return self.folder / "postgres.log"

    def _run(self, args: list[str], timeout: float) -> None:
        """Run one PostgreSQL program as the server's account; its output goes to `commands.log`."""
        assert self.folder is not None
        account = self.account
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.folder)}
        with open(self.folder / "commands.log", "ab") as log:
            log.write(f"$ {' '.join(args)}\n".encode())
            log.flush()
            kwargs = {} if account is None else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            result = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.folder, env=env, timeout=timeout, **kwargs)
        if result.returncode != 0:
            tail = (self.folder / "commands.log").read_text(errors="replace")[-3000:]
            if self.log_path.exists():
                tail += "\n--- postgres.log ---\n" + self.log_path.read_text(errors="replace")[-3000:]
            raise PostgresUnavailable(f"`{' '.join(args)}` exited with {result.returncode}:\n{tail}")

    def __enter__(self) -> LocalPostgres:
        bindir = self._bindir = find_bindir()
        self.account = server_account()
        parent = Path(tempfile.gettempdir())
        if self.account is not None and not _traversable_by_others(parent):
            parent = Path("/tmp")  # e.g. TMPDIR under /root: the server's account could not reach its folder
        self.folder = Path(tempfile.mkdtemp(prefix="sc-imagenet-pg-", dir=parent))
        try:
            if self.account is not None:
                os.chown(self.folder, self.account.pw_uid, self.account.pw_gid)
            self._run([str(bindir / "initdb"), "--pgdata", str(self.data_dir), "--username", self.user,
                       "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync"], timeout=120)
            self.port = self.port or free_port()
            # a throwaway cluster: TCP on loopback only, its socket in its own folder, no durability
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            self._run([str(bindir / "pg_ctl"), "start", "--wait", "--timeout", str(int(self.start_timeout)),
                       "--pgdata", str(self.data_dir), "--log", str(self.log_path), "--options", options],
                      timeout=self.start_timeout + 30)
            self._started = True
            self._run([str(bindir / "createdb"), "--host", "127.0.0.1", "--port", str(self.port),
                       "--username", self.user, self.database], timeout=60)
        except BaseException:
            self.__exit__()
            raise
        self.url = f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.folder is None:
            return
        try:
            if self._started and self._bindir is not None:
                self._run([str(self._bindir / "pg_ctl"), "stop", "--wait", "--mode", "fast",
                           "--pgdata", str(self.data_dir)], timeout=60)
        finally:
            self._started = False
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
