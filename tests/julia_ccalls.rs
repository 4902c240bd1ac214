//! The Julia binding checked statically against the C header. There is no Julia on the
//! machines this project is built and tested on, so bindings/julia/Vene.jl cannot be run here;
//! this test instead reads every `ccall((:vene_..., libvene), Ret, (Args...), ...)` in its
//! sources and compares the function name, the number and types of the arguments and the
//! return type with the declarations in include/vene.h, so the binding cannot drift from the
//! header unnoticed.
//!
//! Type mapping (Julia -> C): Int32/Cint -> int32_t (also `vene_status`), UInt32 -> uint32_t,
//! Int64 -> int64_t, UInt64 -> uint64_t, Csize_t -> size_t, Float32 -> float,
//! Float64/Cdouble -> double, Cvoid -> void, Cstring -> char *, Ptr{UInt8} -> char * or
//! uint8_t *, Ptr{T}/Ref{T} -> T *, Ptr{Cvoid} -> any data pointer (an opaque handle or
//! void *) or a `*_fn` function pointer, Ptr{CFooBar} -> struct vene_foo_bar *. `const` is
//! ignored; a one-letter type parameter (`Ptr{T}`) matches any scalar.

use std::collections::HashMap;
use std::path::Path;

/// A C type reduced to its base name and pointer depth ("char", 1).
#[derive(Debug, Clone, PartialEq)]
struct CType {
    base: String,
    depth: usize,
}

fn c_type(decl: &str) -> CType {
    let depth = decl.matches('*').count();
    let words: Vec<&str> = decl
        .split(|c: char| c == '*' || c.is_whitespace())
        .filter(|w| !w.is_empty() && *w != "const" && *w != "struct" && *w != "enum")
        .collect();
    CType {
        base: words.join(" "),
        depth,
    }
}

/// Every function the header declares: name -> (return type, parameter types).
fn header_functions(text: &str) -> HashMap<String, (CType, Vec<CType>)> {
    // Drop comments, preprocessor lines and everything inside braces (struct and enum bodies).
    let mut s = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("/*") {
        s.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    s.push_str(rest);
    let s: String = s
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        // Preprocessor lines, and C++'s `extern "C" {` ... `}` around the declarations.
        .filter(|l| {
            let t = l.trim();
            !(t.starts_with('#') || t.starts_with("extern \"C\"") || t == "}")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut flat = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    let mut out = HashMap::new();
    for decl in flat.split(';') {
        let decl = decl.trim();
        if decl.starts_with("typedef") {
            continue;
        }
        let Some(open) = decl.find('(') else { continue };
        let head = &decl[..open];
        let name_start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &head[name_start..];
        if !name.starts_with("vene_") || !decl.ends_with(')') {
            continue;
        }
        let ret = c_type(&head[..name_start]);
        let params = &decl[open + 1..decl.len() - 1];
        let params: Vec<CType> = if params.trim() == "void" {
            Vec::new()
        } else {
            params
                .split(',')
                .map(|p| {
                    // Drop the parameter name.
                    let p = p.trim();
                    let cut = p
                        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .map_or(0, |i| i + 1);
                    c_type(&p[..cut])
                })
                .collect()
        };
        out.insert(name.to_string(), (ret, params));
    }
    out
}

/// Splits `s` at top-level commas (outside (), {} and []).
fn split_top(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut cur) = (0i32, String::new());
    for c in s.chars() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        parts.push(cur.trim().to_string());
    }
    parts
}

/// The text from an opening bracket at `s[0]` to its match, exclusive of both.
fn inside(s: &str) -> Option<&str> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[1..i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// One ccall: (function name, return type, argument types, line).
fn julia_ccalls(src: &str) -> Vec<(String, String, Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = src[from..].find("ccall(") {
        let at = from + i;
        from = at + 6;
        let line = src[..at].lines().count();
        let Some(args) = inside(&src[at + 5..]) else {
            panic!("Vene.jl:{line}: unbalanced ccall");
        };
        let parts = split_top(args);
        assert!(
            parts.len() >= 3,
            "Vene.jl:{line}: ccall with {} parts",
            parts.len()
        );
        let target = parts[0].trim_start_matches('(').trim_end_matches(')');
        let name = split_top(target)[0].trim_start_matches(':').to_string();
        let tuple = parts[2].trim();
        assert!(
            tuple.starts_with('(') && tuple.ends_with(')'),
            "Vene.jl:{line}: argument types must be a tuple, got {tuple}"
        );
        let types = split_top(&tuple[1..tuple.len() - 1]);
        out.push((name, parts[1].clone(), types, line));
    }
    out
}

/// Whether the Julia type `j` may be passed where C declares `c`.
fn compatible(j: &str, c: &CType) -> bool {
    let j = j.trim();
    for wrap in ["Ptr{", "Ref{"] {
        if let Some(inner) = j.strip_prefix(wrap).and_then(|x| x.strip_suffix('}')) {
            if inner == "Cvoid" {
                // Any data pointer to an opaque handle or void, or a function pointer.
                return c.depth == 1 || (c.depth == 0 && c.base.ends_with("_fn"));
            }
            if inner == "UInt8" {
                return c.depth == 1 && (c.base == "char" || c.base == "uint8_t");
            }
            return c.depth >= 1
                && compatible(
                    inner,
                    &CType {
                        base: c.base.clone(),
                        depth: c.depth - 1,
                    },
                );
        }
    }
    if j.len() == 1 && j.chars().all(|ch| ch.is_ascii_uppercase()) {
        return c.depth == 0; // a type parameter: any scalar
    }
    if j == "Cstring" {
        return c.depth == 1 && c.base == "char";
    }
    if c.depth != 0 {
        return false;
    }
    let want: &[&str] = match j {
        "Int32" | "Cint" => &["int32_t", "vene_status", "int"],
        "UInt32" | "Cuint" => &["uint32_t"],
        "Int64" => &["int64_t"],
        "UInt64" => &["uint64_t"],
        "Csize_t" | "UInt" => &["size_t"],
        "Float32" | "Cfloat" => &["float"],
        "Float64" | "Cdouble" => &["double"],
        "Cvoid" => &["void"],
        "Bool" => &["bool"],
        other => {
            // CFooBar -> vene_foo_bar (the binding's mirror of a header struct).
            let Some(rest) = other.strip_prefix('C') else {
                return false;
            };
            let mut snake = String::from("vene");
            for ch in rest.chars() {
                if ch.is_ascii_uppercase() {
                    snake.push('_');
                }
                snake.push(ch.to_ascii_lowercase());
            }
            return c.base == snake;
        }
    };
    want.contains(&c.base.as_str())
}

#[test]
fn every_ccall_matches_the_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("include/vene.h")).unwrap();
    let functions = header_functions(&header);
    assert!(
        functions.len() > 40,
        "parsed only {} functions from vene.h",
        functions.len()
    );
    let src_dir = root.join("bindings/julia/Vene.jl/src");
    let mut checked = 0;
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&src_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jl") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        for (name, ret, args, line) in julia_ccalls(&src) {
            checked += 1;
            let Some((c_ret, c_args)) = functions.get(&name) else {
                problems.push(format!(
                    "{file}:{line}: {name} is not declared in include/vene.h"
                ));
                continue;
            };
            if !compatible(&ret, c_ret) {
                problems.push(format!(
                    "{file}:{line}: {name} returns {c_ret:?} in C, {ret} in Julia"
                ));
            }
            if args.len() != c_args.len() {
                problems.push(format!(
                    "{file}:{line}: {name} takes {} arguments in C, {} in Julia",
                    c_args.len(),
                    args.len()
                ));
                continue;
            }
            for (k, (j, c)) in args.iter().zip(c_args).enumerate() {
                if !compatible(j, c) {
                    problems.push(format!(
                        "{file}:{line}: {name} argument {k}: C has {c:?}, Julia passes {j}"
                    ));
                }
            }
        }
    }
    assert!(checked >= 30, "found only {checked} ccalls in Vene.jl");
    assert!(
        problems.is_empty(),
        "Vene.jl drifted from include/vene.h:\n{}",
        problems.join("\n")
    );
    println!("{checked} ccalls match include/vene.h");
}

/// The checker itself catches drift: a wrong type, a missing argument, an unknown function.
#[test]
fn the_checker_catches_drift() {
    let header = "vene_status vene_f(const struct vene_model *m, size_t n, float *out);\n\
                  const char *vene_g(void);";
    let f = header_functions(header);
    let (ret, args) = &f["vene_f"];
    assert!(compatible("Int32", ret));
    assert!(compatible("Ptr{Cvoid}", &args[0]));
    assert!(compatible("Csize_t", &args[1]) && !compatible("Int32", &args[1]));
    assert!(compatible("Ptr{Float32}", &args[2]) && !compatible("Ptr{Float64}", &args[2]));
    assert!(compatible("Cstring", &f["vene_g"].0) && f["vene_g"].1.is_empty());
    let calls = julia_ccalls("x = ccall((:vene_f, libvene), Int32, (Ptr{Cvoid}, Csize_t), a, b)");
    assert_eq!(calls[0].0, "vene_f");
    assert_eq!(calls[0].2, vec!["Ptr{Cvoid}", "Csize_t"]);
}
