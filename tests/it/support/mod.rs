//! Helpers shared by the integration tests: paths, the independent Python tools, temp configs.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `convenor` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_convenor"))
}

/// The Python interpreter with the test tools installed (see tests/run.sh). A missing one is a
/// failure with instructions, never a skip.
pub fn python() -> PathBuf {
    let p = std::env::var_os("CONVENOR_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-venv/bin/python3"));
    assert!(
        p.exists(),
        "no Python with the test tools at {}: run the tests with `bash tests/run.sh`",
        p.display()
    );
    p
}

/// Runs `tests/tools/<script>` with the test Python, feeding `stdin`, and returns its output;
/// panics with its stderr when it fails.
pub fn run_tool(script: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(python())
        .arg(repo().join("tests/tools").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python tool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("python tool output");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The shipped example config's text.
pub fn example_config_text() -> String {
    std::fs::read_to_string(repo().join("config/lednet.toml")).expect("read config/lednet.toml")
}

/// The example config with the June meeting (2023-06-07) moved from 10:00 to 08:45: a move,
/// so its SEQUENCE rises.
pub fn june_moved() -> String {
    let original = example_config_text();
    let june = "date = 2023-06-07\nstart = \"10:00\"";
    let moved = original.replacen(june, "date = 2023-06-07\nstart = \"08:45\"", 1);
    assert_ne!(
        moved, original,
        "the example config has the June meeting at 10:00"
    );
    moved
}

/// Writes a config into `dir` (a temp dir), pointing templates at the repository's templates and
/// the state directory into `dir/state`. Returns the config's path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let templates = repo().join("templates");
    let text = text.replace(
        "# templates_dir = \"templates\"",
        &format!("templates_dir = \"{}\"", templates.display()),
    );
    let text = if text.contains("[state]\ndir") {
        text
    } else {
        text.replace(
            "# [state]\n# dir = \"state\"",
            &format!("[state]\ndir = \"{}\"", dir.join("state").display()),
        )
    };
    let path = dir.join("convenor.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs the binary with arguments from the repository root and returns its output. The state
/// directory is a fresh empty one (via `$STATE_DIRECTORY`, which a config without `[state] dir`
/// follows), so a `./state` left by `cargo run -- serve` never leaks into a test.
pub fn convenor(args: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("state tempdir");
    Command::new(binary())
        .args(args)
        .current_dir(repo())
        .env("STATE_DIRECTORY", state.path())
        .output()
        .expect("run convenor")
}

/// The shipped config with `n` more meetings of its shape (ids `m0`, `m1`...), on the weekdays
/// of 2027 from its first Monday, so no weekend or clock-change warning joins in. 700 of them
/// make each feed about 900 KiB (every meeting concerns every priority).
pub fn config_with_meetings(n: usize) -> String {
    use std::fmt::Write as _;
    let mut text = example_config_text();
    let days = std::iter::successors(Some(jiff::civil::date(2027, 1, 4)), |d| d.tomorrow().ok())
        .filter(|d| d.weekday().to_monday_one_offset() <= 5);
    for (i, day) in days.take(n).enumerate() {
        let _ = write!(
            text,
            "\n[[meeting]]\nid = \"m{i}\"\ndate = {day}\nstart = \"10:00\"\nend = \"12:30\"\n\
             title = \"LEDNet meeting {i}\"\nlocation = \"Room {i}, City Hall, London\"\n"
        );
    }
    text
}

/// Copies the shipped templates into `dir/templates`, applies `edit` to one file (which must
/// change it), and returns the copy's directory.
pub fn templates_with(dir: &Path, file: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let to = dir.join("templates");
    for set in std::fs::read_dir(repo().join("templates")).expect("templates") {
        let set = set.expect("entry").path();
        let dest = to.join(set.file_name().expect("name"));
        std::fs::create_dir_all(&dest).expect("mkdir");
        for f in std::fs::read_dir(&set).expect("set") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, dest.join(f.file_name().expect("name"))).expect("copy");
        }
    }
    let path = to.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing in {file}");
    std::fs::write(&path, edited).expect("write");
    to
}

/// An HTTP client that does not follow redirects, so a test sees each 303 and its Location.
pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The arguments of `convenor agenda add` for one proposal (Ada Lovelace of Camden, presenting
/// for 15 minutes) to `meeting` under `priority`, titled `title`.
pub fn agenda_add_args<'a>(meeting: &'a str, priority: &'a str, title: &'a str) -> Vec<&'a str> {
    vec![
        "agenda",
        "add",
        "--meeting",
        meeting,
        "--priority",
        priority,
        "--name",
        "Ada Lovelace",
        "--organisation",
        "Camden",
        "--email",
        "ada@camden.example",
        "--title",
        title,
        "--summary",
        "What we learnt.",
        "--presents",
        "--minutes",
        "15",
    ]
}
