//! `include/vene_plugin.h` is written by hand (its comments are the plugin author's manual),
//! so instead of generating it, this test checks it against the one Rust declaration of the
//! ABI (plugins/abi, used by the engine and the SDK): it writes a C11 file of `_Static_assert`s
//! on every size, field offset and constant, with the values Rust computes, and compiles it
//! with gcc. Any drift fails to compile, naming the field. gcc is required (no skipping).

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;
use vene_plugin_abi::*;

fn check(c: &mut String, expr: &str, value: impl std::fmt::Display) {
    c.push_str(&format!(
        "_Static_assert(({expr}) == {value}, \"{expr} must be {value}, as in plugins/abi\");\n"
    ));
}

#[test]
fn header_matches_the_rust_abi() {
    let mut c = String::from("#include <stddef.h>\n#include \"vene_plugin.h\"\n");
    macro_rules! layout {
        ($ty:ident: $($field:ident),+) => {
            check(&mut c, concat!("sizeof(", stringify!($ty), ")"), size_of::<$ty>());
            $(check(
                &mut c,
                concat!("offsetof(", stringify!($ty), ", ", stringify!($field), ")"),
                offset_of!($ty, $field),
            );)+
        };
    }
    layout!(vene_host_api: struct_size, abi_version, log, host_ctx);
    layout!(vene_intervention_type: struct_size, name, create, apply, last_error, destroy, flags);
    layout!(vene_plugin_info: magic, abi_version, struct_size, name, version, n_types, types);
    for (name, value) in [
        ("VENE_PLUGIN_MAGIC", VENE_PLUGIN_MAGIC as i64),
        ("VENE_PLUGIN_ABI_VERSION", VENE_PLUGIN_ABI_VERSION as i64),
        ("VENE_TYPE_NO_SOURCE", VENE_TYPE_NO_SOURCE as i64),
        ("VENE_TYPE_DISTRIBUTED", VENE_TYPE_DISTRIBUTED as i64),
        ("VENE_TYPE_ROW_WISE", VENE_TYPE_ROW_WISE as i64),
        ("VENE_LOG_DEBUG", VENE_LOG_DEBUG as i64),
        ("VENE_LOG_INFO", VENE_LOG_INFO as i64),
        ("VENE_LOG_WARN", VENE_LOG_WARN as i64),
        ("VENE_LOG_ERROR", VENE_LOG_ERROR as i64),
    ] {
        check(&mut c, &format!("(long long){name}"), format!("{value}LL"));
    }
    // The function pointer types: assigning a Rust-shaped C function must compile cleanly.
    c.push_str(
        "static int32_t c_create(const char *a, size_t n, size_t d, void **s) { (void)a; (void)n; (void)d; (void)s; return 0; }\n\
         static int32_t c_apply(void *s, const float *b, const float *src, float *o, size_t r, size_t d) { (void)s; (void)b; (void)src; (void)o; (void)r; (void)d; return 0; }\n\
         static const char *c_last_error(void *s) { (void)s; return 0; }\n\
         static void c_destroy(void *s) { (void)s; }\n\
         static void c_log(void *h, int32_t l, const char *m) { (void)h; (void)l; (void)m; }\n\
         void check_signatures(void);\n\
         void check_signatures(void) {\n\
           vene_intervention_type t; vene_host_api h;\n\
           t.create = c_create; t.apply = c_apply; t.last_error = c_last_error; t.destroy = c_destroy;\n\
           h.log = c_log; (void)t; (void)h;\n\
         }\n",
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin_abi");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("abi_asserts.c");
    std::fs::write(&src, &c).unwrap();
    let out = Command::new("gcc")
        .args([
            "-std=c11",
            "-fsyntax-only",
            "-Wall",
            "-Wextra",
            "-pedantic",
            "-Werror",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg(&src)
        .output()
        .expect("gcc not found: install it (apt-get install -y gcc)");
    assert!(
        out.status.success(),
        "include/vene_plugin.h disagrees with plugins/abi:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
