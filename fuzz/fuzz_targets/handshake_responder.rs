//! `handshake_responder`: see `chatroom_fuzz_checks::handshake_responder` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::handshake_responder::check(data));
