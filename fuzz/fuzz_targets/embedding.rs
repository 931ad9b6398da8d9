//! Fuzz target: embedding steps (id, offset and weight parsing, the whole step) against a model, and the
//! embedding checkpoint loader.
#![no_main]

#[path = "../../tests/common/fuzz_checks.rs"]
#[allow(dead_code)] // each target uses one of the checks
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::embedding(data));
