#![no_main]
use cordon_protocol::{MembershipResponse, Limits, decode};
libfuzzer_sys::fuzz_target!(|data: &[u8]| { let l = Limits::default(); let _ = decode::<MembershipResponse>(data, l.membership_max_response_bytes, &l); });
