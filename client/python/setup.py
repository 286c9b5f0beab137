"""Packaging for the connbroker Python client.

The protobuf and gRPC modules (connbroker/v1/*_pb2*.py) are generated from
the repository's proto/ directory while the package is built, by protoc and
grpc_python_plugin (Debian's protobuf-compiler and protobuf-compiler-grpc):
the .proto files are the one definition of the wire contract, so no second
copy of them is kept here. Set CONNBROKER_PROTO_DIR to build from elsewhere.
"""

import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_FILES = [
    "connbroker/v1/values.proto",
    "connbroker/v1/broker.proto",
    "connbroker/v1/session.proto",
    "connbroker/v1/service.proto",
]


def _proto_dir():
    path = os.environ.get("CONNBROKER_PROTO_DIR") or os.path.join(
        HERE, "..", "..", "proto")
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, PROTO_FILES[0])):
        raise SystemExit(
            f"connbroker: no {PROTO_FILES[0]} under {path}; build from a "
            "checkout of the repository or set CONNBROKER_PROTO_DIR")
    return path


def _tool(name, env):
    path = os.environ.get(env) or shutil.which(name)
    if path is None:
        raise SystemExit(
            f"connbroker: {name} not found (apt-get install protobuf-compiler "
            f"protobuf-compiler-grpc), or set {env}")
    return path


class BuildPyWithStubs(build_py):
    """build_py that also writes the generated stubs into the build tree."""

    def run(self):
        super().run()
        out = os.path.abspath(self.build_lib)
        os.makedirs(os.path.join(out, "connbroker", "v1"), exist_ok=True)
        proto = _proto_dir()
        subprocess.run(
            [
                _tool("protoc", "PROTOC"),
                f"--plugin=protoc-gen-grpc_python="
                f"{_tool('grpc_python_plugin', 'GRPC_PYTHON_PLUGIN')}",
                f"-I{proto}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                *PROTO_FILES,
            ],
            cwd=proto,
            check=True,
        )
        init = os.path.join(out, "connbroker", "v1", "__init__.py")
        with open(init, "w", encoding="utf-8") as f:
            f.write('"""Generated from proto/connbroker/v1 at build time."""\n')


def _pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args, "grpc++"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.split()


class OptionalBuildExt(build_ext):
    """Builds connbroker._native, the gRPC C++ transport, when gRPC C++ is
    there to build it (Debian's libgrpc++-dev); without it the package uses
    grpcio, slower per call. CONNBROKER_REQUIRE_NATIVE=1 makes a failed
    build an error (the repository's own build sets it)."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any compiler failure
            self._give_up(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            self._give_up(e)

    @staticmethod
    def _give_up(error):
        if os.environ.get("CONNBROKER_REQUIRE_NATIVE") == "1":
            raise error
        print(f"connbroker: not building the gRPC C++ transport ({error}); "
              "the package will use grpcio")


NATIVE = Extension(
    "connbroker._native",
    sources=["connbroker/_native.cc"],
    language="c++",
    extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden",
                        *[f for f in _pkg_config("--cflags")]],
    extra_link_args=_pkg_config("--libs"),
)

DIALECTS = [
    "sqlite.connbroker = connbroker.sqlalchemy:SQLiteDialect_connbroker",
    "postgresql.connbroker = "
    "connbroker.sqlalchemy:PGDialect_connbroker",
    "mysql.connbroker = connbroker.sqlalchemy:MySQLDialect_connbroker",
    "mariadb.connbroker = connbroker.sqlalchemy:MariaDBDialect_connbroker",
]

setup(
    name="connbroker",
    version="0.1.0",
    description="Python client of connbrokerd: DB-API 2.0, SQLAlchemy "
    "dialects and st.connection-style DataFrames over shared connections",
    packages=["connbroker"],
    python_requires=">=3.9",
    install_requires=["grpcio", "protobuf", "numpy", "pandas", "sqlalchemy>=1.4"],
    entry_points={"sqlalchemy.dialects": DIALECTS},
    ext_modules=[NATIVE],
    cmdclass={"build_py": BuildPyWithStubs, "build_ext": OptionalBuildExt},
)
