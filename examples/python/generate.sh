#!/bin/sh
# Generates the Python client of modelcache's gRPC API from proto/ into DIR
# (default: examples/python/generated): modelcache/v1/model_cache_pb2.py (the
# messages) and model_cache_pb2_grpc.py (the client stub).
# Needs Debian's protobuf-compiler, protobuf-compiler-grpc (grpc_python_plugin)
# and libprotobuf-dev (google/protobuf/timestamp.proto); or, from PyPI,
# grpcio-tools: python -m grpc_tools.protoc with the same -I, --python_out and
# --grpc_python_out.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/generated}
mkdir -p "$out"
protoc \
  -I "$root/proto" -I /usr/include \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  --python_out="$out" --grpc_python_out="$out" \
  "$root/proto/modelcache/v1/model_cache.proto"
