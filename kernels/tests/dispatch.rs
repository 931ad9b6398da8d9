//! Path names, detection against /proc/cpuinfo (an independent source), `ADAGRAD_ISA` parsing (in child
//! processes, so the environment of this process is never changed), and the errors' messages.

use adagrad_kernels::{Isa, IsaError};
use std::process::Command;

#[test]
fn names_round_trip_through_display_and_parse() {
    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
    assert_eq!(names, ["scalar", "portable", "avx2", "avx512"]);
    assert_eq!(Isa::NAMES, names.join(", "));
    for isa in Isa::ALL {
        assert_eq!(isa.to_string(), isa.name());
        assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
        assert_eq!(
            format!("  {}\n", isa.name().to_uppercase()).parse::<Isa>(),
            Ok(isa)
        );
    }
    assert_eq!("sse9".parse::<Isa>(), Err(IsaError::Unknown("sse9".into())));
}

/// The CPU's flags as the kernel reports them, or `None` off Linux/x86-64.
fn cpu_flags() -> Option<Vec<String>> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("flags"))?;
    Some(
        line.split(':')
            .nth(1)?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn detection_agrees_with_proc_cpuinfo() {
    assert!(Isa::Scalar.is_available() && Isa::Portable.is_available());
    let Some(flags) = cpu_flags().filter(|_| cfg!(target_arch = "x86_64")) else {
        println!("skipped: no /proc/cpuinfo flags to compare with");
        return;
    };
    let has = |f: &str| flags.iter().any(|x| x == f);
    assert_eq!(Isa::Avx2.is_available(), has("avx2") && has("fma"));
    assert_eq!(Isa::Avx512.is_available(), has("avx512f"));
    let available: Vec<Isa> = Isa::available().collect();
    let expected: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    assert_eq!(available, expected);
    assert_eq!(Isa::best(), *expected.last().unwrap());
}

/// Runs `Isa::from_env()` in a child process with `ADAGRAD_ISA` set to `value` (or unset), returning what it
/// printed.
fn from_env_in_child(value: Option<&std::ffi::OsStr>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_prints_from_env",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("ADAGRAD_DISPATCH_CHILD", "1");
    match value {
        Some(v) => cmd.env("ADAGRAD_ISA", v),
        None => cmd.env_remove("ADAGRAD_ISA"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The harness prints the test's name on the same line, before the output.
    text.split("FROM_ENV=")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no result in {text}"))
        .to_string()
}

/// Not a test by itself: prints `Isa::from_env()` when run as the child of `from_env_reads_adagrad_isa`.
#[test]
fn child_prints_from_env() {
    if std::env::var_os("ADAGRAD_DISPATCH_CHILD").is_some() {
        println!("FROM_ENV={:?}", Isa::from_env());
    }
}

#[test]
fn from_env_reads_adagrad_isa() {
    let child = |v: &str| from_env_in_child(Some(v.as_ref()));
    assert_eq!(from_env_in_child(None), "Ok(None)");
    assert_eq!(child("  "), "Ok(None)");
    assert_eq!(child("scalar"), "Ok(Some(Scalar))");
    assert_eq!(child("Portable"), "Ok(Some(Portable))");
    assert_eq!(child("mmx"), "Err(Unknown(\"mmx\"))");
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = std::ffi::OsStr::from_bytes(b"avx\xff");
        assert_eq!(
            from_env_in_child(Some(bad)),
            "Err(Unknown(\"avx\u{fffd}\"))"
        );
    }
    let avx512 = if Isa::Avx512.is_available() {
        "Ok(Some(Avx512))"
    } else {
        "Err(Unavailable(Avx512))"
    };
    assert_eq!(child("avx512"), avx512);
}

#[test]
fn error_messages() {
    assert_eq!(
        IsaError::Unknown("mmx".into()).to_string(),
        "unknown ISA \"mmx\" (ADAGRAD_ISA accepts: scalar, portable, avx2, avx512)"
    );
    let names: Vec<&str> = Isa::available().map(Isa::name).collect();
    assert_eq!(
        IsaError::Unavailable(Isa::Avx512).to_string(),
        format!(
            "ISA avx512 is not available on this CPU (available: {})",
            names.join(", ")
        )
    );
}
