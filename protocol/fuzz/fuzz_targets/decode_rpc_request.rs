#![no_main]
use cordon_protocol::{Limits, RpcRequest, decode};
libfuzzer_sys::fuzz_target!(|data: &[u8]| { let l = Limits::default(); let _ = decode::<RpcRequest>(data, l.rpc_max_request_bytes, &l); });
