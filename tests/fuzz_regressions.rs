//! Replays every input kept under fuzz/regressions/<target>/ (crashes the fuzzers found, and a few seeds)
//! through the fuzz targets' properties, so a fixed bug stays fixed without a fuzzer.

#[path = "common/fuzz_checks.rs"]
mod fuzz_checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        check(&std::fs::read(&path).unwrap());
        n += 1;
    }
    n
}

#[test]
fn checkpoint_regressions() {
    assert!(replay("checkpoint", fuzz_checks::checkpoint) > 0);
}

#[test]
fn kernel_regressions() {
    assert!(replay("kernels", fuzz_checks::kernels) > 0);
}

#[test]
fn embedding_regressions() {
    assert!(replay("embedding", fuzz_checks::embedding) > 0);
    // Some of the inputs are accepted steps, so the model comparison runs, and some refused ones.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/embedding");
    let outcomes: Vec<bool> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| fuzz_checks::embedding_accepted(&std::fs::read(e.unwrap().path()).unwrap()))
        .collect();
    assert!(
        outcomes.contains(&true) && outcomes.contains(&false),
        "{outcomes:?}"
    );
}
