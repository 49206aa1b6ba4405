//! `handshake_initiator`: see `chatroom_fuzz_checks::handshake_initiator` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::handshake_initiator::check(data));
