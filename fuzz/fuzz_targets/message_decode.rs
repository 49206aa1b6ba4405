//! `message_decode`: see `chatroom_fuzz_checks::message_decode` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::message_decode::check(data));
