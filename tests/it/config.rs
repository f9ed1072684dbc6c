//! Config loading through the real binary: `check` and `plan` on good and bad files.

use crate::support::convenor;

#[test]
fn check_accepts_the_shipped_config() {
    let out = convenor(&["check", "--config", "config/lednet.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("meetings:   5"), "{stdout}");
    assert!(stdout.contains("priorities: 5"), "{stdout}");
}
