"""Build: cythonize native/ into turnstile.engine._core (the file engine/_core*.so) and generate proto/**/*.proto code.

Nothing produced here is committed. `TURNSTILE_DEBUG=1` builds the core with
annotations, line tracing and bounds checks (slower, for profiling and debugging).
"""
import os
import pathlib

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py

HERE = pathlib.Path(__file__).parent.resolve()
PROTO_ROOT = HERE / "proto"
DEBUG = os.environ.get("TURNSTILE_DEBUG") == "1"


def generate_protos():
    """Generate *_pb2.py, *_pb2.pyi and *_pb2_grpc.py next to each .proto.

    proto/turnstile/v1/x.proto becomes the module turnstile.v1.x_pb2 (the package
    `turnstile` is mapped to proto/turnstile).
    """
    from grpc_tools import protoc
    import grpc_tools

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    for src in sorted(PROTO_ROOT.rglob("*.proto")):
        rel = src.relative_to(PROTO_ROOT)
        out = src.with_name(src.stem + "_pb2.py")
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={PROTO_ROOT}",
            f"--pyi_out={PROTO_ROOT}",
            f"--grpc_python_out={PROTO_ROOT}",
            str(rel),
        ])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {rel}")


class build_py(_build_py):
    def run(self):
        generate_protos()
        super().run()


class build_ext(_build_ext):
    def run(self):
        generate_protos()
        super().run()

    def finalize_options(self):
        from Cython.Build import cythonize

        directives = {
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": DEBUG,
            "embedsignature": True,
        }
        if DEBUG:
            directives["linetrace"] = True
        self.distribution.ext_modules = cythonize(
            self.distribution.ext_modules,
            compiler_directives=directives,
            annotate=DEBUG,
            include_path=[str(HERE / "native")],
        )
        super().finalize_options()


NAMESPACED = ("engine", "server", "clients")

core = Extension(
    "turnstile.engine._core",
    ["native/_core.pyx"],
    extra_compile_args=["-O2"] + (["-DCYTHON_TRACE_NOGIL=1"] if DEBUG else []),
    depends=[str(p) for p in (HERE / "native").glob("*.p*")],
)

setup(
    # the repo's top-level folders install under the project's namespace, so nothing
    # called `engine`, `server` or `clients` lands in site-packages: engine/ is
    # turnstile.engine, server/ turnstile.server, clients/ turnstile.clients, and the
    # generated API code (proto/turnstile) is turnstile.v1
    packages=["turnstile", "turnstile.v1"] + [
        f"turnstile.{p}" for p in find_packages(include=[f"{t}*" for t in NAMESPACED])],
    package_dir={"turnstile": "proto/turnstile", **{f"turnstile.{t}": t for t in NAMESPACED}},
    package_data={"turnstile.engine": ["*.pyi", "py.typed"],
                  "turnstile.clients.dashboard": ["static/*"]},      # the page: served locally, no CDN
    ext_modules=[core],
    cmdclass={"build_py": build_py, "build_ext": build_ext},
)
