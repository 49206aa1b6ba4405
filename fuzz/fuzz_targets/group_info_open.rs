//! `group_info_open`: see `chatroom_fuzz_checks::group_info_open` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::group_info_open::check(data));
