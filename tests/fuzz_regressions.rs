//! Every input under `fuzz/seeds/` and `fuzz/regressions/` (the inputs a
//! fuzz target ever found a fault with) runs through its target's property
//! check again, so a fixed fault stays fixed without a fuzzer.

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

fn replay(target: &str, check: fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no inputs for {target}");
    for (name, data) in all {
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{name} fails {target}'s properties");
    }
}

#[test]
fn request_head_inputs_hold() {
    replay("request_head", sessiongate::fuzzing::request_head);
}

#[test]
fn response_head_inputs_hold() {
    replay("response_head", sessiongate::fuzzing::response_head);
}

#[test]
fn chunked_inputs_hold() {
    replay("chunked", sessiongate::fuzzing::chunked);
}

#[test]
fn cookie_inputs_hold() {
    replay("cookie", sessiongate::fuzzing::cookie);
}

#[test]
fn path_and_route_inputs_hold() {
    replay("path_and_route", sessiongate::fuzzing::path_and_route);
}

#[test]
fn config_inputs_hold() {
    replay("config", sessiongate::fuzzing::config);
}

#[test]
fn proxy_header_inputs_hold() {
    replay("proxy_header", sessiongate::fuzzing::proxy_header);
}

#[test]
fn resp_reply_inputs_hold() {
    replay("resp_reply", sessiongate::fuzzing::resp_reply);
}
