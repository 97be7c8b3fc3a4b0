//! Snowflake SQL API answers: an HTTP status and a body through the client's decoder
//! (`decode_response`: result set metadata, rows, every cell by its column type, 202 and the
//! error bodies). The first byte picks the status; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::warehouse::snowflake::decode_response;

/// The statuses the client tells apart, then a few it does not.
const STATUSES: [u16; 12] = [200, 202, 400, 401, 403, 404, 408, 422, 429, 500, 503, 302];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let status = match STATUSES.get(usize::from(pick)) {
        Some(&status) => status,
        // Any other number, valid or not, from the next two bytes.
        None => match body {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => u16::from(pick),
        },
    };
    if let Ok(Some(result)) = decode_response(status, body) {
        for row in &result.rows {
            assert_eq!(row.len(), result.columns.len());
        }
    }
});
