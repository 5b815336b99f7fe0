#![no_main]
use cordon_protocol::{MembershipRequest, Limits, decode};
libfuzzer_sys::fuzz_target!(|data: &[u8]| { let l = Limits::default(); let _ = decode::<MembershipRequest>(data, l.membership_max_request_bytes, &l); });
