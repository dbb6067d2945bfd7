#![no_main]
//! The Rust merge (memory and embedded stores) against the `json-patch`
//! crate, on compact JSON as the proxy hands it over.

mod json;

libfuzzer_sys::fuzz_target!(|case: json::Case| {
    if case.refused_by_the_proxy() {
        return;
    }
    let (data, patches) = case.texts();
    let patches: Vec<&str> = patches.iter().map(String::as_str).collect();
    let ours = sessiongate::fuzzing::merge_patch(&data, &patches).expect("objects parse");
    assert_eq!(
        serde_json::Value::Object(ours),
        case.reference(),
        "{data} {patches:?}"
    );
});
