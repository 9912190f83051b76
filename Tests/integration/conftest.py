"""Fixtures for the Berth integration tests.

Run from the repository root:

    python3 -m pytest Tests/integration -q

The server binary is taken from $BERTH_BIN, default <repo>/.build/debug/berth.
Only loopback addresses are ever used.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import (  # noqa: E402
    BOOTSTRAP_FILE,
    SESSION_REGISTRY,
    Creds,
    Registry,
    create_registry,
    read_bootstrap_creds,
    run,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / ".build" / "debug" / "berth"
# The harness's own variables are taken out of the environment every berth
# this process starts inherits: they name no setting, and berth warns of those.
_BERTH_BIN = os.environ.pop("BERTH_BIN", None)
READY_TIMEOUT = float(os.environ.pop("BERTH_READY_TIMEOUT", "30"))
LOG_TAIL_LINES = 200

# Servers that many tests share get a failure limit no test reaches, so that
# tests presenting bad credentials on purpose (or clients that try without
# credentials first) cannot get 127.0.0.1 throttled for the tests after them.
# Throttling itself is tested on servers of its own (test_throttling.py).
UNTHROTTLED = ("--auth-failure-limit", "1000000")

_ADMIN = object()  # "use the bootstrap admin key" (default of client())


def berth_binary() -> str:
    return _BERTH_BIN or str(DEFAULT_BIN)


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class BerthServer:
    """One `berth serve` process with its own data directory and ports.

    The data directory and ports survive restart(), so a restarted server is
    "the same" server as far as clients are concerned."""

    live: list["BerthServer"] = []  # every server created in this session

    def __init__(
        self,
        binary: str,
        workdir: Path,
        registries: tuple[str, ...] | list[str] = (),
        extra_args: tuple[str, ...] | list[str] = (),
        label: str = "berth",
        env: dict[str, str] | None = None,
        launcher: tuple[str, ...] | list[str] = (),
    ):
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log_path = self.workdir / "berth.log"
        self.log_path.touch()
        self.extra_args = list(extra_args)
        self.label = label
        self.env = {**os.environ, **env} if env else None  # None: inherit ours
        self.launcher = list(launcher)  # a command that execs berth (same pid)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.admin_creds: Creds | None = None  # read from the bootstrap file at start()
        self.http_port, self.https_port = _free_ports(2)
        self._cert_dir = self.workdir / "certs"
        self._probe = requests.Session()
        self._probe.trust_env = False  # loopback only, never via a proxy
        BerthServer.live.append(self)
        for name in registries:
            self.cli("registry", "create", name)

    # -- addresses ---------------------------------------------------------
    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def tls_host(self) -> str:
        return f"127.0.0.1:{self.https_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def tls_url(self) -> str:
        return f"https://{self.tls_host}"

    @property
    def cert_path(self) -> str:
        """The server's self-signed certificate (usable as a CA bundle)."""
        return str(self.data_dir / "tls" / "cert.pem")

    @property
    def key_path(self) -> str:
        return str(self.data_dir / "tls" / "key.pem")

    @property
    def cert_dir(self) -> str:
        """A directory containing the server certificate as ca.crt, for
        skopeo's --cert-dir/--src-cert-dir/--dest-cert-dir."""
        self._cert_dir.mkdir(exist_ok=True)
        shutil.copyfile(self.cert_path, self._cert_dir / "ca.crt")
        return str(self._cert_dir)

    @property
    def bootstrap_path(self) -> Path:
        return self.data_dir / BOOTSTRAP_FILE

    @property
    def admin_arg(self) -> str:
        """The bootstrap admin key as `AK:SECRET` (skopeo --creds, curl --user)."""
        assert self.admin_creds, "server not started yet"
        return "%s:%s" % self.admin_creds

    def client(self, creds=_ADMIN, token: str | None = None) -> Registry:
        """Raw HTTP client; by default with the bootstrap admin key (Basic),
        creds=None for an anonymous one, token=... for Bearer."""
        return Registry(self.url, creds=self.admin_creds if creds is _ADMIN else creds, token=token)

    def anon_client(self) -> Registry:
        return self.client(creds=None)

    def tls_client(self, creds=_ADMIN, token: str | None = None) -> Registry:
        return Registry(
            self.tls_url, verify=self.cert_path, creds=self.admin_creds if creds is _ADMIN else creds, token=token
        )

    # -- process control -----------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run an offline CLI command against this server's data dir."""
        return run([self.binary, *args, "--data-dir", str(self.data_dir)], check=check, timeout=timeout)

    def serve_command(self) -> list[str]:
        return [
            *self.launcher,
            self.binary,
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--http",
            self.host,
            "--https",
            self.tls_host,
            *self.extra_args,
        ]

    def start(self) -> "BerthServer":
        assert not self.running, "server already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.serve_command())}\n".encode())
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.serve_command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"berth exited with code {self.proc.returncode} during startup\n{self.log_tail()}"
                )
            try:
                r = self._probe.get(self.url + "/readyz", timeout=2)
                last = r.status_code
                if r.status_code == 200:
                    self._read_admin_creds()
                    return
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.1)
        self.kill9()
        raise RuntimeError(
            f"berth did not answer 200 on /readyz within {READY_TIMEOUT}s (last: {last})\n{self.log_tail()}"
        )

    def _read_admin_creds(self) -> None:
        """The bootstrap file is written at first start, before the server
        listens (docs/identity.md); a ready server without it is a failure.
        On later starts the file may have been removed by a test (it is never
        rewritten): the key read at first start stays in use."""
        if self.admin_creds is not None and not self.bootstrap_path.exists():
            return
        try:
            self.admin_creds = read_bootstrap_creds(self.data_dir)
        except (OSError, ValueError, KeyError) as e:
            self.kill9()
            raise RuntimeError(
                f"berth is ready but {self.bootstrap_path} is missing or unreadable: {e!r}\n{self.log_tail()}"
            ) from e

    def kill9(self) -> None:
        """SIGKILL the server (no chance to flush anything) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # The server runs in its own session/process group, which holds
            # only what we started: take down any helper processes with it.
            # (Only while the leader is unreaped, so the group id is still ours.)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM the server and assert a clean exit (code 0)."""
        assert self.proc is not None, "server was never started"
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"berth did not exit within {timeout}s of SIGTERM\n{self.log_tail()}")
        assert rc == 0, f"berth exited with code {rc} after SIGTERM\n{self.log_tail()}"
        return rc

    def restart(self, kill: bool = False) -> "BerthServer":
        """Restart on the same data dir and ports (SIGTERM, or SIGKILL when
        kill=True, if still running)."""
        if self.running:
            self.kill9() if kill else self.terminate()
        return self.start()

    def stop_quietly(self) -> None:
        if not self.running:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()

    # -- logs --------------------------------------------------------------
    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, since: int = 0, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_text(since)
        tail = text.splitlines()[-lines:]
        return f"--- berth log ({self.label}: {self.log_path}) last {len(tail)} lines ---\n" + "\n".join(tail)


# --------------------------------------------------------------------------
# Show server logs for failed tests
# --------------------------------------------------------------------------

_log_marks: dict[int, int] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _log_marks.clear()
    for srv in BerthServer.live:
        _log_marks[id(srv)] = srv.log_size()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for srv in BerthServer.live:
        since = _log_marks.get(id(srv), 0)
        if srv.log_size() > since or srv.running:
            rep.sections.append((f"berth log: {srv.label}", srv.log_tail(since=since)))


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def berth_bin() -> str:
    path = berth_binary()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"berth binary not found or not executable at {path}; build it (swift build) "
            f"or set BERTH_BIN",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def server(berth_bin, tmp_path_factory) -> BerthServer:
    """The shared server for most tests. Registry `itest` is pre-created via
    the offline CLI before the first start."""
    srv = BerthServer(
        berth_bin, tmp_path_factory.mktemp("berth-main"), registries=[SESSION_REGISTRY],
        # delete_untagged tests delete what they pushed a moment ago (test_cleanup has the grace's own test).
        extra_args=(*UNTHROTTLED, "--untagged-grace", "0"),
        label="main",
    )
    srv.start()
    yield srv
    srv.stop_quietly()


@pytest.fixture(scope="session")
def http(server) -> Registry:
    """Raw HTTP client for the shared server's plain-HTTP port, with the
    bootstrap admin key."""
    return server.client()


@pytest.fixture(scope="session")
def tls(server) -> Registry:
    """Raw HTTPS client (HTTP/1.1) for the shared server's TLS port, with the
    bootstrap admin key."""
    return server.tls_client()


@pytest.fixture(scope="module")
def reg(http) -> str:
    """A registry created through the API, shared by one test module."""
    return create_registry(http, "m")


@pytest.fixture
def new_registry(http):
    """Factory: new_registry() -> name of a fresh registry on the shared server."""

    def make(prefix: str = "r") -> str:
        return create_registry(http, prefix)

    return make


@pytest.fixture(scope="session")
def spawn_server(berth_bin, tmp_path_factory):
    """Session-scoped factory for extra servers that module-scoped fixtures
    can use: spawn_server(label, registries=[...], extra_args=[...]) returns
    a started BerthServer; the caller stops it (anything left running is
    stopped at session end)."""
    made: list[BerthServer] = []

    def spawn(label: str, registries=(), extra_args=(), start=True) -> BerthServer:
        srv = BerthServer(
            berth_bin, tmp_path_factory.mktemp(f"berth-{label}"), registries=registries, extra_args=extra_args, label=label
        )
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield spawn
    for srv in made:
        srv.stop_quietly()


@pytest.fixture
def make_server(berth_bin, tmp_path_factory):
    """Factory for extra, function-scoped servers:
    make_server(registries=[...], extra_args=[...], start=True)."""
    made: list[BerthServer] = []

    def make(registries=(), extra_args=(), start=True, label="extra", env=None, launcher=()) -> BerthServer:
        srv = BerthServer(
            berth_bin, tmp_path_factory.mktemp("berth-extra"), registries=registries, extra_args=extra_args, label=label,
            env=env, launcher=launcher,
        )
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        srv.stop_quietly()

