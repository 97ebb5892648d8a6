//! Compiles the kubelet's gRPC APIs (`proto/`) into Rust with protox (a pure-Rust protobuf compiler,
//! so no `protoc` is needed) and tonic-prost-build (servers for the plugin, clients for the tests,
//! which act as the kubelet).
//!
//! Also links `hal-probe` as a position-dependent executable on Linux (`-no-pie`, as Go links
//! kubectl and the kubelet): a PIE of its size has about 28,000 relative relocations, which the
//! dynamic loader applies at every start by writing into about 100 pages; a short-lived probe spent
//! half of its 2 ms start on them. The driver's long-running binary stays a PIE.

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
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=hal-probe=-no-pie");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
