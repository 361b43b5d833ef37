//! `conduit demo` end to end: the real binary seeds both simulators, runs all three
//! workflows, makes incremental changes and exits 0 only when the destinations match.

use std::process::Command;

use conduit_e2e::conduit_binary;

#[test]
fn demo_verifies_the_destinations_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(conduit_binary())
        .args([
            "demo",
            "--contacts",
            "1500",
            "--events",
            "120",
            "--timeout-secs",
            "240",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("conduit demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("VERIFIED: the destinations match the sources."),
        "{stdout}"
    );
    assert!(stdout.contains("profiles in Campaign"), "{stdout}");
    assert!(dir.path().join("conduit.toml").exists());
}
