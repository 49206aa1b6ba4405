//! `history_share_decode`: see `chatroom_fuzz_checks::history_share_decode` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::history_share_decode::check(data));
