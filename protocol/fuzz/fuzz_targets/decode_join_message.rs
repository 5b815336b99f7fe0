#![no_main]
use cordon_protocol::{JoinMessage, Limits, decode};
libfuzzer_sys::fuzz_target!(|data: &[u8]| { let l = Limits::default(); let _ = decode::<JoinMessage>(data, l.join_max_request_bytes, &l); });
