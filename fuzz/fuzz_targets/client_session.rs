//! `client_session`: see `chatroom_fuzz_checks::client_session` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::client_session::check(data));
