//! `envelope_open`: see `chatroom_fuzz_checks::envelope_open` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::envelope_open::check(data));
