//! `framewire validate` names the file and the key of each problem.

use crate::common::*;
use std::process::Command;

fn validate(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("framewire.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().unwrap_or(-1),
        stderr,
        path.display().to_string(),
    )
}

/// Ensures a wrong type is reported with the file and the key, and exits non-zero.
#[test]
fn wrong_type() {
    let (code, err, path) =
        validate("[[cameras]]\nid = \"a\"\nurl = \"synthetic://\"\nsample_fps = \"fast\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{path}: cameras[0].sample_fps")),
        "{err}"
    );
}

/// Ensures an unknown key is reported with the file and its full path.
#[test]
fn unknown_key() {
    let (code, err, path) = validate("[kafka]\nbrokerz = \"x:9092\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{path}: kafka.brokerz: unknown key")),
        "{err}"
    );
}

/// Ensures a missing required value is reported with the file and the key.
#[test]
fn missing_required_value() {
    let (code, err, path) = validate("[[cameras]]\nurl = \"synthetic://\"\n");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{path}: cameras[0].id: required key is missing")),
        "{err}"
    );
}

/// Ensures the shipped example config, and no config at all, are valid.
#[test]
fn shipped_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/framewire.toml");
    let out = Command::new(bin())
        .args(["validate", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin()).arg("validate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ensures `media.jpeg_codec = "libjpeg-turbo"` fails validation on a host without the library
/// (here `FRAMEWIRE_TURBOJPEG` points at a missing file), naming the key and what to install,
/// while `auto` and `rust` stay valid there; an unknown codec names the key.
#[test]
fn required_libjpeg_turbo_missing() {
    let dir = tempfile::tempdir().unwrap();
    let run = |codec: &str| {
        let path = dir.path().join(format!("{codec}.toml"));
        std::fs::write(&path, format!("[media]\njpeg_codec = \"{codec}\"\n")).unwrap();
        let out = Command::new(bin())
            .args(["validate", "--config"])
            .arg(&path)
            .env(
                "FRAMEWIRE_TURBOJPEG",
                dir.path().join("no-libturbojpeg.so.0"),
            )
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            path.display().to_string(),
        )
    };
    let (code, err, path) = run("libjpeg-turbo");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{path}: media.jpeg_codec")), "{err}");
    assert!(err.contains("no-libturbojpeg.so.0 not loadable"), "{err}");
    assert!(err.contains("libturbojpeg0"), "{err}");
    for ok in ["auto", "rust"] {
        let (code, err, _) = run(ok);
        assert_eq!(code, 0, "{ok}: {err}");
    }
    let (code, err, path) = run("turbo");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{path}: media.jpeg_codec")), "{err}");
}
