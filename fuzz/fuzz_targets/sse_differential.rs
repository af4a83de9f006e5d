#![no_main]
#[path = "../../tests/fuzz_corpus/sse_reference.rs"]
mod sse_reference;
libfuzzer_sys::fuzz_target!(|data: &[u8]| sse_reference::check(data));
