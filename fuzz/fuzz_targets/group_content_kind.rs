//! `group_content_kind`: see `chatroom_fuzz_checks::group_content_kind` for the input format and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatroom_fuzz_checks::group_content_kind::check(data));
