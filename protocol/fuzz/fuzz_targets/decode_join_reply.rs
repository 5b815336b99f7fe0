#![no_main]
use cordon_protocol::{JoinReply, Limits, decode};
libfuzzer_sys::fuzz_target!(|data: &[u8]| { let l = Limits::default(); let _ = decode::<JoinReply>(data, l.join_max_response_bytes, &l); });
