//! Bindings and shim against the system DPDK, with every flag taken from `pkg-config libdpdk`.
//! The `pkg-config` crate keeps only -I/-D, but DPDK also needs `-include rte_config.h` and
//! `-march=...` (DESIGN §8), so we run pkg-config ourselves and pass the full list on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a build script that cannot generate the bindings must stop the build
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run pkg-config (install pkg-config libdpdk-dev: `make deps`): {e}")
        });
    if !out.status.success() {
        panic!(
            "pkg-config {args:?} libdpdk failed (is libdpdk-dev installed? run `make deps`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Flags such as `-include rte_config.h` are two words; keep them as separate args.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=memif_watch.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let version = pkg_config(&["--modversion"]);
    let version = version.first().cloned().unwrap_or_default();
    if !version.starts_with("22.11") {
        println!("cargo:warning=vnicd is built and tested against DPDK 22.11; found {version}");
    }
    println!("cargo:rustc-env=VNIC_DPDK_VERSION={version}");
    // Where the EAL finds its driver plugins (Debian: <libdir>/dpdk/pmds-<ABI>), for preflight.
    let libdir = pkg_config(&["--variable=libdir"]);
    println!(
        "cargo:rustc-env=VNIC_DPDK_LIBDIR={}",
        libdir.first().cloned().unwrap_or_default()
    );

    let cflags = pkg_config(&["--cflags"]);
    let libs = pkg_config(&["--libs"]);

    let mut build = cc::Build::new();
    build
        .file("shim.c")
        .file("memif_watch.c")
        .include(".")
        .opt_level(3)
        .warnings(true);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("vnic_shim");

    for l in &libs {
        if let Some(dir) = l.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = l.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        // `-Wl,--as-needed` is dropped on purpose: libraries we call are named below.
    }
    // APIs we call directly that libdpdk.pc does not list (drivers are plugins, autoloaded).
    for lib in ["rte_net_ring", "rte_bus_vdev"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-I.")
        .allowlist_function("rte_.*|vnic_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|rte_.*|RING_F_.*|SOCKET_ID_ANY|LCORE_ID_ANY")
        // packed structs containing aligned ones do not compile as Rust (E0588)
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_arp_hdr")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on wrapper.h");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("cannot write bindings.rs");
}
