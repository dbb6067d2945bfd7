#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessiongate::fuzzing::resp_reply(data));
