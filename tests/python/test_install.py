"""The package installs from the source tree with Debian's setuptools and no
network, and once installed SQLAlchemy finds its dialects by entry point.

The install goes to a temporary --target directory (not the system), and the
check runs in a new /usr/bin/python3 process whose path has that directory
and not the build tree, so nothing but the installed copy can answer.
"""

import os
import subprocess
import sys

SOURCE = os.path.normpath(
    os.path.join(os.path.dirname(__file__), "..", "..", "client", "python"))


def test_pip_installs_it_and_create_engine_finds_the_dialects(
        tmp_path, daemon):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
         "--no-build-isolation", "--no-deps", "--target", str(site), SOURCE],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (site / "connbroker" / "v1" / "session_pb2.py").is_file()

    code = f"""
import connbroker, sqlalchemy
assert connbroker.__file__.startswith({str(site)!r}), connbroker.__file__
engine = sqlalchemy.create_engine(
    "sqlite+connbroker:///sqlite?target={daemon.target}")
with engine.connect() as c:
    print(c.execute(sqlalchemy.text("SELECT 6 * 7")).scalar())
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    check = subprocess.run([sys.executable, "-c", code], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "42"
