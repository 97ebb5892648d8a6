//! Links `hal-probe` as a position-dependent executable on Linux (`-no-pie`, as Go links
//! kubectl and the kubelet): a PIE of its size has about 28,000 relative relocations, which the
//! dynamic loader applies at every start by writing into about 100 pages; a short-lived probe spent
//! half of its 2 ms start on them. The driver's long-running binary (`dra-hal-plugin`) stays a PIE.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=hal-probe=-no-pie");
    }
}
