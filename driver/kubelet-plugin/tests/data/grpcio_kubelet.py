#!/usr/bin/env python3
"""Plays the kubelet against a running plugin with Python grpcio, a real gRPC client.

grpcio (gRPC C-core) sends the socket path, percent-encoded, as the HTTP/2 :authority for a
`unix:` target, as the kubelet's plugin watcher (grpc-go with a bare path) does. The stubs are
generated at run time with grpc_tools.protoc from driver/kubelet-plugin/proto, whose packages, services and field
numbers are the kubelet's.

usage: grpcio_kubelet.py PROTO_DIR REGISTRATION_SOCKET DRA_SOCKET
Prints one JSON object with what each call answered; exits non-zero when a call fails.
"""

import importlib
import json
import sys
import tempfile

import grpc
from grpc_tools import protoc


def generate(proto_dir, out_dir, proto):
    code = protoc.main(
        ["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
         f"{proto_dir}/{proto}"]
    )
    if code != 0:
        sys.exit(f"protoc failed on {proto}")


def main():
    proto_dir, registration_socket, dra_socket = sys.argv[1:4]
    out = tempfile.mkdtemp()
    generate(proto_dir, out, "pluginregistration/api.proto")
    generate(proto_dir, out, "dra/v1/api.proto")
    # Under its own root: `dra-health` is no Python package name.
    generate(f"{proto_dir}/dra-health", out, "v1alpha1/api.proto")
    sys.path.insert(0, out)
    reg_pb2 = importlib.import_module("pluginregistration.api_pb2")
    reg_grpc = importlib.import_module("pluginregistration.api_pb2_grpc")
    dra_pb2 = importlib.import_module("dra.v1.api_pb2")
    dra_grpc = importlib.import_module("dra.v1.api_pb2_grpc")
    health_pb2 = importlib.import_module("v1alpha1.api_pb2")
    health_grpc = importlib.import_module("v1alpha1.api_pb2_grpc")

    result = {"grpcio": grpc.__version__}
    # The default authority: the percent-encoded socket path.
    with grpc.insecure_channel("unix:" + registration_socket) as channel:
        stub = reg_grpc.RegistrationStub(channel)
        info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=10)
        result["info"] = {
            "type": info.type,
            "name": info.name,
            "endpoint": info.endpoint,
            "supported_versions": list(info.supported_versions),
        }
        stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(plugin_registered=True), timeout=10)
        result["notified"] = True
    # The raw path as the authority.
    options = [("grpc.default_authority", registration_socket)]
    with grpc.insecure_channel("unix:" + registration_socket, options=options) as channel:
        info = reg_grpc.RegistrationStub(channel).GetInfo(reg_pb2.InfoRequest(), timeout=10)
        result["raw_path_info_name"] = info.name
    with grpc.insecure_channel("unix:" + dra_socket) as channel:
        stub = dra_grpc.DRAPluginStub(channel)
        claim = dra_pb2.Claim(namespace="default", uid="uid-grpcio", name="claim")
        prepared = stub.NodePrepareResources(dra_pb2.NodePrepareResourcesRequest(claims=[claim]), timeout=10)
        answer = prepared.claims["uid-grpcio"]
        result["prepared"] = {
            "error": answer.error,
            "cdi_device_ids": [i for d in answer.devices for i in d.cdi_device_ids],
        }
        unprepared = stub.NodeUnprepareResources(
            dra_pb2.NodeUnprepareResourcesRequest(claims=[claim]), timeout=10
        )
        result["unprepared_error"] = unprepared.claims["uid-grpcio"].error
        # The kubelet's health stream: the first message, the whole state.
        stream = health_grpc.DRAResourceHealthStub(channel).NodeWatchResources(
            health_pb2.NodeWatchResourcesRequest(), timeout=10
        )
        first = next(stream)
        result["health"] = [
            [d.device.pool_name, d.device.device_name, d.health, d.message] for d in first.devices
        ]
        stream.cancel()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
