"""Build hook: compile proto/caffe.proto into imagenet_db/caffe_pb2.py with grpcio-tools.

All metadata lives in pyproject.toml; this file only makes `pip install .` produce the
generated protobuf module (and ship the .proto beside it) with no manual protoc step.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithProto(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc

        here = Path(__file__).resolve().parent
        out = Path(self.build_lib) / "imagenet_db"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(here / "proto" / "caffe.proto", out / "caffe.proto")
        rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", str(out / "caffe.proto")])
        if rc != 0:
            raise RuntimeError("protoc failed to compile proto/caffe.proto")


setup(cmdclass={"build_py": BuildPyWithProto})
