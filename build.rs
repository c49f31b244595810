//! Builds the DPDK shim (`csrc/`) for the `sgflows-rte-flow` binary, only with the `dpdk`
//! feature. It calls the system's `cc`, `ar` and `pkg-config` directly (no build-dependency
//! crates, so the default build needs nothing new), and passes DPDK's link flags to that one
//! binary only: the library and the Python extension never link DPDK.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_DPDK").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=csrc/sgf_rte_flow.c");
    println!("cargo:rerun-if-changed=csrc/sgf_rte_flow.h");
    let cflags = pkg_config(&["--cflags", "libdpdk"]);
    let libs = pkg_config(&["--libs", "libdpdk"]);
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("sgf_rte_flow.o");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-c", "-O2", "-fPIC", "-Wall", "-Wextra", "-Werror"])
        .args(cflags.split_whitespace())
        .arg("csrc/sgf_rte_flow.c")
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("the dpdk feature needs a C compiler ({cc}): {e}"));
    assert!(status.success(), "compiling csrc/sgf_rte_flow.c failed");
    let bin = "sgflows-rte-flow";
    println!("cargo:rustc-link-arg-bin={bin}={}", object.display());
    for flag in libs.split_whitespace() {
        println!("cargo:rustc-link-arg-bin={bin}={flag}");
    }
}

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the dpdk feature needs pkg-config and dpdk-dev: {e}"));
    assert!(
        out.status.success(),
        "pkg-config {args:?} failed: install dpdk-dev (DPDK 22.11) for the dpdk feature"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
