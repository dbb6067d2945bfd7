#![no_main]
//! The Redis store's Lua merge (src/store/redis/merge.lua, run in a real
//! redis-server at $FUZZ_REDIS_URL) against the Rust merge: the same input
//! gives the same session, or both refuse it.

mod json;

use std::sync::{Mutex, OnceLock};

const DIFF_SCRIPT: &str = r#"
local ok, out = pcall(function()
  local data = parse(ARGV[1])
  for i = 2, #ARGV do merge(data, parse(ARGV[i])) end
  return serialize(data)
end)
if ok then return {'ok', out} end
return {'refused', tostring(out)}
"#;

fn connect() -> redis::Connection {
    let url = std::env::var("FUZZ_REDIS_URL")
        .expect("set FUZZ_REDIS_URL to a redis-server for this target (fuzz/run.sh does)");
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("redis-server at FUZZ_REDIS_URL answers")
}

fn redis() -> &'static Mutex<(redis::Connection, redis::Script)> {
    static CONN: OnceLock<Mutex<(redis::Connection, redis::Script)>> = OnceLock::new();
    CONN.get_or_init(|| {
        let conn = connect();
        let source = format!(
            "{}\n{}",
            include_str!("../../src/store/redis/merge.lua"),
            DIFF_SCRIPT
        );
        Mutex::new((conn, redis::Script::new(&source)))
    })
}

libfuzzer_sys::fuzz_target!(|case: json::Case| {
    if case.refused_by_the_proxy() {
        return;
    }
    let (data, patches) = case.texts();
    let ours = {
        let refs: Vec<&str> = patches.iter().map(String::as_str).collect();
        sessiongate::fuzzing::merge_patch(&data, &refs)
    };
    let mut guard = redis().lock().unwrap();
    let (conn, script) = &mut *guard;
    let mut invocation = script.prepare_invoke();
    invocation.arg(&data);
    for p in &patches {
        invocation.arg(p);
    }
    // libFuzzer's timer signal can interrupt the blocking read (EINTR),
    // leaving the connection mid-reply: a fresh one runs the (pure) script
    // again.
    let reply: Vec<String> = match invocation.invoke(conn) {
        Ok(reply) => reply,
        Err(e) if e.is_io_error() => {
            *conn = connect();
            invocation.invoke(conn).expect("the script runs")
        }
        Err(e) => panic!("the script runs: {e}"),
    };
    match (reply[0].as_str(), ours) {
        ("ok", Some(ours)) => {
            let lua: serde_json::Value = serde_json::from_str(&reply[1])
                .unwrap_or_else(|e| panic!("Lua wrote invalid JSON {:?}: {e}", reply[1]));
            assert_eq!(lua, serde_json::Value::Object(ours), "{data} {patches:?}");
        }
        ("refused", None) => {}
        (lua, ours) => panic!("Lua {lua} {reply:?}, Rust {ours:?}: {data} {patches:?}"),
    }
});
