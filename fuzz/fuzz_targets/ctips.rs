#![no_main]
// The body and its properties: ivrgate_fuzz_props::ctips.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ivrgate_fuzz_props::ctips(data));
