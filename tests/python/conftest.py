"""Fixtures of the Python tests: a real connbrokerd on a temporary Unix socket,
serving a SQLite file and the PostgreSQL and MariaDB servers that
tests/servers/db-servers.sh started (their CONNBROKER_TEST_* variables).

Run by ctest (tests/CMakeLists.txt) with /usr/bin/python3 -m pytest, which
sets CONNBROKERD, CONNBROKER_CLI and PYTHONPATH (the package in the build
tree).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import grpc
import pytest

CONNBROKERD = os.environ.get("CONNBROKERD", "build/server/connbrokerd")
CONNBROKER_CLI = os.environ.get("CONNBROKER_CLI", "build/client/connbroker")

# The connection names of the daemon's secrets file, by backend label.
BACKENDS = ("sqlite", "postgresql", "mariadb")


def _url(scheme, prefix):
    env = os.environ
    host = env.get(f"CONNBROKER_TEST_{prefix}_HOST")
    if not host:
        return None
    return (f"{scheme}://{env[f'CONNBROKER_TEST_{prefix}_USER']}:"
            f"{env[f'CONNBROKER_TEST_{prefix}_PASSWORD']}@{host}:"
            f"{env[f'CONNBROKER_TEST_{prefix}_PORT']}/"
            f"{env[f'CONNBROKER_TEST_{prefix}_DATABASE']}")


def backend_urls(directory):
    """Label -> url of each database the tests can use."""
    urls = {"sqlite": f"sqlite:///{directory}/app.db"}
    pg = _url("postgresql", "PG")
    if pg:
        urls["postgresql"] = pg
    mysql = _url("mysql", "MYSQL")
    if mysql:
        urls["mariadb"] = mysql
    return urls


class Daemon:
    """A connbrokerd process on a socket of its own, stopped by stop()."""

    def __init__(self, directory, secrets, extra_args=()):
        self.directory = directory
        self.socket = os.path.join(directory, "broker.sock")
        self.target = f"unix:{self.socket}"
        self.secrets = secrets
        self.log_path = os.path.join(directory, "connbrokerd.log")
        env = dict(os.environ, HOME=directory, CONNBROKER_SECRETS="")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [CONNBROKERD, "--listen", self.target, "--secrets", secrets,
                 "--log-level", "debug", *extra_args],
                cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_serving()

    def _wait_until_serving(self):
        # wait_for_ready: the call waits for the socket to accept, so no
        # polling loop; a dead daemon is seen by the process check below.
        channel = grpc.insecure_channel(self.target)
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            self.stop()
            raise RuntimeError(f"connbrokerd did not serve:\n{self.log()}")
        finally:
            channel.close()

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def cli(self, *args, check=True):
        """Runs the `connbroker` command against this daemon."""
        result = subprocess.run(
            [CONNBROKER_CLI, *args], capture_output=True, text=True,
            env=dict(os.environ, CONNBROKER_TARGET=self.target), timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(
                f"connbroker {' '.join(args)}: {result.returncode}\n"
                f"{result.stdout}{result.stderr}")
        return result

    def stats(self):
        import json
        return json.loads(self.cli("stats", "--format", "json").stdout)

    def stop(self):
        """Stops the daemon (SIGTERM); a daemon that died on its own before
        fails the test with its log."""
        died = self.process.poll()
        if died is not None:
            raise AssertionError(
                f"connbrokerd exited by itself ({died}); its log:\n"
                f"{self.log()[-20000:]}")
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def write_secrets(directory, urls, extra=""):
    lines = []
    for label, url in urls.items():
        lines.append(f'[connections.{label}]\ntype = "sql"\nurl = "{url}"\n')
    path = os.path.join(directory, "secrets.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + extra)
    return path


@pytest.fixture(scope="module")
def daemon():
    """One daemon per test module, with a section per backend named by its
    label: [connections.sqlite], [connections.postgresql],
    [connections.mariadb] (the last two when their servers are running)."""
    directory = tempfile.mkdtemp(prefix="cbpy.", dir="/tmp")
    urls = backend_urls(directory)
    secrets = write_secrets(directory, urls)
    d = Daemon(directory, secrets)
    d.urls = urls
    try:
        yield d
        d.stop()
    finally:
        if d.process.poll() is None:
            d.process.kill()
            d.process.wait()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def target(daemon, monkeypatch):
    """The daemon's address, also as $CONNBROKER_TARGET for code that takes
    the default."""
    monkeypatch.setenv("CONNBROKER_TARGET", daemon.target)
    return daemon.target


@pytest.fixture(params=BACKENDS)
def backend(request, daemon):
    """Each backend's connection name in turn; skipped when its server is
    not running (tests/run.sh always starts them)."""
    if request.param not in daemon.urls:
        pytest.skip(f"no {request.param} server (CONNBROKER_TEST_* unset)")
    return request.param


@pytest.fixture
def table_name():
    """A table name of this test's own, so tests never share rows."""
    return f"t_{uuid.uuid4().hex[:12]}"


def run_python(code, env, timeout=120):
    """Runs code in a new /usr/bin/python3 process; its stdout."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"python process failed:\n{result.stderr}")
    return result.stdout


def wait_for(predicate, timeout=30, what="condition"):
    """Polls predicate until it holds: for state another process changes,
    with a bound instead of a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
