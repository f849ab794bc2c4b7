//! The status table has one source (tryvox-core's core/src/contract/status.rs), from which build.rs
//! generates the C enum of include/tryvox.h. These tests hold everything else to the
//! header: the frozen v1 numbers, and the status lists written by hand in the Go, C#,
//! Python and C++ bindings. A status deleted, renumbered or added in one place only fails
//! here (or, for the header itself, in tests/header.rs).

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `(C name, number)` of every `TRYVOX_X = N,` in the header's `enum tryvox_status`.
fn header_statuses() -> Vec<(String, i32)> {
    let h = read("include/tryvox.h");
    let start = h
        .find("typedef enum tryvox_status {")
        .expect("enum in header");
    let end = start + h[start..].find("} tryvox_status;").expect("enum end");
    h[start..end]
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().trim_end_matches(',').split_once(" = ")?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `NotFound` / `not_found` / `NOT_FOUND` -> `TRYVOX_NOT_FOUND` (`TLSError` -> `TRYVOX_TLS_ERROR`).
fn c_name(name: &str) -> String {
    let mut out = String::from("TRYVOX_");
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        if i > 0 && c.is_ascii_uppercase() && (prev_lower || next_lower) && chars[i - 1] != '_' {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn assert_same(binding: &str, mut found: Vec<(String, i32)>) {
    let mut header = header_statuses();
    header.sort_by_key(|(_, v)| *v);
    found.sort_by_key(|(_, v)| *v);
    assert_eq!(
        found, header,
        "{binding}'s status list differs from include/tryvox.h"
    );
}

#[test]
fn header_keeps_the_frozen_v1_numbers() {
    // Never edit a line of this list: numbers are the ABI. New statuses come after 13.
    let frozen = [
        ("TRYVOX_OK", 0),
        ("TRYVOX_NOT_FOUND", 1),
        ("TRYVOX_ALREADY_ENDED", 2),
        ("TRYVOX_INVALID_ARGUMENT", 3),
        ("TRYVOX_UNAUTHORIZED", 4),
        ("TRYVOX_FORBIDDEN", 5),
        ("TRYVOX_RATE_LIMITED", 6),
        ("TRYVOX_SERVER_ERROR", 7),
        ("TRYVOX_TIMEOUT", 8),
        ("TRYVOX_NETWORK_ERROR", 9),
        ("TRYVOX_TLS_ERROR", 10),
        ("TRYVOX_PROTOCOL_ERROR", 11),
        ("TRYVOX_INTERNAL_ERROR", 12),
        ("TRYVOX_BUSY", 13),
    ];
    let header = header_statuses();
    for (name, value) in frozen {
        assert!(
            header.iter().any(|(n, v)| n == name && *v == value),
            "{name} = {value} is missing from include/tryvox.h: {header:?}"
        );
    }
    for (i, (name, value)) in header.iter().enumerate() {
        assert_eq!(*value, i as i32, "{name}: numbers run from 0 without a gap");
    }
}

#[test]
fn core_table_is_the_header() {
    let core: Vec<(String, i32)> = tryvox_core::Status::ALL
        .iter()
        .map(|s| (c_name(&format!("{s:?}")), s.code()))
        .collect();
    assert_same("tryvox-core's Status", core);
}

#[test]
fn go_binding_lists_every_status() {
    // `NotFound Status = C.TRYVOX_NOT_FOUND`: the value is the header's, via cgo.
    let go = read("bindings/go/tryvox/tryvox.go");
    let header = header_statuses();
    let found: Vec<(String, i32)> = go
        .lines()
        .filter_map(|l| {
            let (name, c) = l.trim().split_once(" Status = C.")?;
            assert_eq!(c_name(name.trim()), c, "Go name {name} for {c}");
            let value = header.iter().find(|(n, _)| n == c)?.1;
            Some((c.to_owned(), value))
        })
        .collect();
    assert_same("Go", found);
}

#[test]
fn csharp_binding_lists_every_status() {
    let cs = read("bindings/csharp/Tryvox.cs");
    let start = cs.find("public enum Status").expect("enum Status");
    let end = start + cs[start..].find('}').unwrap();
    let found = cs[start..end]
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().trim_end_matches(',').split_once(" = ")?;
            Some((c_name(name), value.parse().ok()?))
        })
        .collect();
    assert_same("C#", found);
}

#[test]
fn python_binding_lists_every_status() {
    // `OK, NOT_FOUND, ... = range(N)`, possibly over several lines.
    let py = read("bindings/python/src/tryvox/__init__.py");
    let start = py.find("\nOK, ").expect("status tuple") + 1;
    let end = start + py[start..].find("= range(").unwrap();
    let names: Vec<&str> = py[start..end]
        .split([',', '\\', '\n'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let range: usize = py[end + "= range(".len()..]
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(names.len(), range, "Python: names and range({range}) agree");
    let found = names
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("TRYVOX_{n}"), i as i32))
        .collect();
    assert_same("Python", found);
}

#[test]
fn cpp_binding_lists_every_status() {
    let hpp = read("include/tryvox.hpp");
    let start = hpp
        .find("enum class status : int {")
        .expect("enum class status");
    let end = start + hpp[start..].find("};").unwrap();
    let header = header_statuses();
    let found = hpp[start..end]
        .lines()
        .filter_map(|l| {
            let (name, c) = l.trim().trim_end_matches(',').split_once(" = ")?;
            assert_eq!(c_name(name), c, "C++ name {name} for {c}");
            let value = header.iter().find(|(n, _)| n == c)?.1;
            Some((c.to_owned(), value))
        })
        .collect();
    assert_same("C++", found);
}
