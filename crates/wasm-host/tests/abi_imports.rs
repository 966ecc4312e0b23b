//! Linking: every host function the proxy-wasm Rust SDK imports, with its exact signature,
//! plus the WASI imports it uses, resolves; an unknown import is named in the load error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use proxy_wasm_host::{abi::SDK_HOST_FUNCTIONS, Module, Plugin};

#[test]
fn sdk_imports_and_wasi_link() {
    let mut wat = String::from("(module\n");
    for (name, params) in common::HOST_FUNCTIONS
        .iter()
        .filter(|(n, _)| SDK_HOST_FUNCTIONS.contains(n))
    {
        wat += &format!("(import \"env\" \"{name}\" (func (param {params}) (result i32)))\n");
    }
    wat += r#"
      (import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))"#;
    assert_eq!(SDK_HOST_FUNCTIONS.len(), 37);
    assert_eq!(wat.matches("(import \"env\"").count(), 37);
    let module = Module::from_bytes(wat.as_bytes()).unwrap();
    let plugin = Plugin::builder(&module).build().unwrap();
    assert!(plugin.configured());
}

#[test]
fn unknown_imports_are_named() {
    let wat = r#"(module
        (import "env" "proxy_does_not_exist" (func (param i32) (result i32)))
        (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
        (import "env" "proxy_nor_this" (func)))"#;
    let err = format!("{:#}", Module::from_bytes(wat.as_bytes()).unwrap_err());
    assert!(
        err.contains("module imports env.proxy_does_not_exist, which this host does not provide"),
        "{err}"
    );
    assert!(
        err.contains("module imports env.proxy_nor_this, which this host does not provide"),
        "{err}"
    );
    assert!(!err.contains("proxy_log,"), "{err}");
}

#[test]
fn wrong_signature_is_a_load_error() {
    let wat = r#"(module (import "env" "proxy_log" (func (param i32) (result i32))))"#;
    let err = format!("{:#}", Module::from_bytes(wat.as_bytes()).unwrap_err());
    assert!(err.contains("signatures"), "{err}");
}

#[test]
fn shim_with_all_39_host_functions_links() {
    let module = common::module("");
    let plugin = Plugin::builder(&module).build().unwrap();
    assert!(plugin.configured());
}
