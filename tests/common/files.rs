//! Helpers for the tests that write checkpoint files and bytes (tests/checkpoint.rs, tests/embedding_checkpoint.rs,
//! tests/hardening.rs), included through `#[path]`.

/// A fresh directory named `adagrad-{name}-…` under the temporary directory, removed when dropped — also when the
/// test fails, so that failing runs (mutation testing runs thousands) leave nothing behind.
#[allow(dead_code)]
pub fn tmpdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("adagrad-{name}-"))
        .tempdir()
        .unwrap()
}

/// Recomputes a checkpoint's CRC (its last four bytes) after a test edited it, so the load reaches the checks
/// behind the checksum.
#[allow(dead_code)]
pub fn fix_crc(b: &mut [u8]) {
    let n = b.len();
    let crc = crc32fast::hash(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
}
