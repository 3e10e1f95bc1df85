#![no_main]
// The body and its properties: ivrgate_fuzz_props::soap.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ivrgate_fuzz_props::soap(data));
