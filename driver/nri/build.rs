//! Compiles NRI's messages and ttrpc's envelopes (`proto/`) into Rust with protox (a pure-Rust
//! protobuf compiler, so no `protoc` is needed) and tonic-prost-build.

use std::error::Error;

const PROTOS: [&str; 2] = ["proto/nri/api.proto", "proto/ttrpc/request.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .compile_fds(fds)?;
    Ok(())
}
