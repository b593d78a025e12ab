//! A WebSocket binary frame from a client, through everything the server does with it.
//! See `tandem_fuzz::sync_message` for the path and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandem_fuzz::sync_message(data);
});
