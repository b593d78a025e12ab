//! A `POST /api/docs/{id}/text` body, parsed and applied as the server does.
//! See `tandem_fuzz::text_edit` for the path and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandem_fuzz::text_edit(data);
});
