//! `include/tquant.h` and the library agree: the same functions with the same number of
//! parameters, the same constants, the same version. (Compiling and running the C programs
//! checks the calls; this checks what C cannot see.)

use std::collections::BTreeMap;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `name -> parameter count` of every `tquant_*` function declared in the header.
fn header_functions(header: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut code = String::new();
    let mut rest = header;
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("comments are closed");
        rest = &rest[start + end + 2..];
    }
    code.push_str(rest);
    let flat: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    for decl in flat.split(';') {
        let Some(open) = decl.find("tquant_").filter(|_| decl.contains('(')) else {
            continue;
        };
        if decl.trim_start().starts_with("typedef") {
            continue;
        }
        let rest = &decl[open..];
        let Some(paren) = rest.find('(') else {
            continue;
        };
        let name = rest[..paren].trim().to_string();
        let params = rest[paren + 1..].trim_end().trim_end_matches(')').trim();
        let count = if params == "void" {
            0
        } else {
            params.split(',').count()
        };
        out.insert(name, count);
    }
    out
}

/// `name -> parameter count` of every `extern "C"` function in the crate's sources.
fn library_functions() -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for (i, _) in text.match_indices("extern \"C\" fn ") {
            let rest = &text[i + "extern \"C\" fn ".len()..];
            let paren = rest.find('(').unwrap();
            let close = rest.find(')').unwrap();
            let params = rest[paren + 1..close].trim();
            let count = if params.is_empty() {
                0
            } else {
                params.trim_end_matches(',').split(',').count()
            };
            out.insert(rest[..paren].to_string(), count);
        }
    }
    out
}

#[test]
fn header_declares_exactly_the_exported_functions() {
    let header = std::fs::read_to_string(root().join("include/tquant.h")).unwrap();
    let declared = header_functions(&header);
    let exported = library_functions();
    assert!(declared.len() >= 15, "{declared:?}");
    assert_eq!(declared, exported);
}

#[test]
fn header_constants_and_version_match_the_library() {
    let header = std::fs::read_to_string(root().join("include/tquant.h")).unwrap();
    let define = |name: &str| -> String {
        let line = header
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name) && l.starts_with("#define"))
            .unwrap_or_else(|| panic!("{name} is not defined in tquant.h"));
        line.split_whitespace().nth(2).unwrap().to_string()
    };
    let int = |name: &str| -> i32 {
        define(name)
            .trim_matches(|c| c == '(' || c == ')')
            .parse()
            .unwrap()
    };
    use tquant_capi::*;
    for (name, value) in [
        ("TQUANT_OK", TQUANT_OK),
        ("TQUANT_ERR_NULL", TQUANT_ERR_NULL),
        ("TQUANT_ERR_SIZE", TQUANT_ERR_SIZE),
        ("TQUANT_ERR_TABLE", TQUANT_ERR_TABLE),
        ("TQUANT_ERR_ARG", TQUANT_ERR_ARG),
        ("TQUANT_ERR_INTERNAL", TQUANT_ERR_INTERNAL),
        ("TQUANT_ERR_FILE", TQUANT_ERR_FILE),
        ("TQUANT_ERR_NOT_FOUND", TQUANT_ERR_NOT_FOUND),
        ("TQUANT_ERR_UNSUPPORTED", TQUANT_ERR_UNSUPPORTED),
    ] {
        assert_eq!(int(name), value, "{name}");
    }
    for (i, d) in tquant_kernels::ScaleDtype::ALL.iter().enumerate() {
        let name = format!("TQUANT_SCALE_{}", d.name().to_uppercase());
        assert_eq!(int(&name), i as i32, "{name}");
    }
    assert_eq!(int("TQUANT_MODE_EXACT"), 0);
    assert_eq!(int("TQUANT_MODE_FAST"), 1);
    assert_eq!(
        define("TQUANT_VERSION"),
        format!("\"{}\"", env!("CARGO_PKG_VERSION"))
    );
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(tquant_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}
