"""A Python service that uses a model: one ResolveModel call gives the path of
a healthy install (pulled first if the model's policy says so), under a lease
that keeps it from eviction and DropCache while the service reads it. The
service loads config.json from that path, then releases the lease.

    ./generate.sh && PYTHONPATH=generated python3 resolve.py [address] [model]

MODELCACHE_ADDRESS and MODELCACHE_TOKEN are read as the CLI reads them.
"""
import json
import os
import sys

import grpc

from modelcache.v1 import model_cache_pb2 as pb
from modelcache.v1 import model_cache_pb2_grpc as pb_grpc


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MODELCACHE_ADDRESS", "127.0.0.1:50051")
    name = sys.argv[2] if len(sys.argv) > 2 else "minilm"
    token = os.environ.get("MODELCACHE_TOKEN")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        client = pb_grpc.ModelCacheServiceStub(channel)
        try:
            # IF_MISSING: use what is installed, pull only what is not; a lease of an hour.
            # A pull may take a while: give the call a timeout that fits the model's size.
            resolved = client.ResolveModel(
                pb.ResolveModelRequest(name=name, pull_policy=pb.PULL_POLICY_IF_MISSING, lease_seconds=3600),
                metadata=metadata,
                timeout=600,
            )
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
        how = "pulled now" if resolved.pulled else "already installed"
        until = resolved.lease_expires_at.ToDatetime().isoformat()
        print(f"{name} at {resolved.cache_dir} ({how}), lease {resolved.lease_id} until {until}Z")
        try:
            with open(os.path.join(resolved.cache_dir, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
            print(f"config.json has {len(config)} keys")
        finally:
            released = client.ReleaseLease(pb.ReleaseLeaseRequest(lease_id=resolved.lease_id), metadata=metadata, timeout=10)
            print(f"lease released: {'true' if released.released else 'false'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
