//! Compiles the kubelet's gRPC APIs (`proto/`) into Rust with protox (a pure-Rust protobuf compiler,
//! so no `protoc` is needed) and tonic-prost-build (servers for the plugin, clients for the tests,
//! which act as the kubelet).

use std::error::Error;

const PROTOS: [&str; 5] = [
    "proto/dra/v1/api.proto",
    "proto/dra/v1beta1/api.proto",
    "proto/dra-health/v1alpha1/api.proto",
    "proto/dra-health/v1/api.proto",
    "proto/pluginregistration/api.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
