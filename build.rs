//! Generates the C header with cbindgen into OUT_DIR (a test compares it with the
//! committed include/tryvox.h), and gives the shared library its SONAME.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("tryvox.h");

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=TRYVOX_UPDATE_HEADER");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen can generate the header")
        .write_to_file(&out);
    println!("cargo:rustc-env=TRYVOX_GENERATED_HEADER={}", out.display());
    if env::var_os("TRYVOX_UPDATE_HEADER").is_some() {
        std::fs::copy(&out, crate_dir.join("include/tryvox.h")).expect("copy header");
    }

    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtryvox.so.0");
    }
}
