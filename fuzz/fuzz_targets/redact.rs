#![no_main]
// The body and its properties: ivrgate_fuzz_props::redact.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ivrgate_fuzz_props::redact(data));
