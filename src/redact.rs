//! Credential redaction. Every URL that leaves the process (logs, `/status`, metric labels, error
//! text) goes through `url()` first; `secrets()` scrubs known secret values out of free text such as
//! a library's error message.

/// Replaces the password (and keeps the user name) of a URL: `rtsp://user:***@host/…`. Query
/// parameters named like secrets (`password`, `token`, `secret`, `key`) are masked too. Text that is
/// not a URL is scrubbed of any `user:pass@` authority it contains.
pub fn url(raw: &str) -> String {
    // Free text that merely contains (or starts with) a URL is scrubbed, not re-encoded as a URL.
    if raw.contains(char::is_whitespace) {
        return scrub_authority(raw);
    }
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let masked: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let secret = ["pass", "token", "secret", "key"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s));
                    (
                        k.into_owned(),
                        if secret {
                            "***".to_string()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            if !masked.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(masked);
            }
            u.to_string()
        }
        Err(_) => scrub_authority(raw),
    }
}

/// Removes each of `secrets` (non-empty ones) from `text`.
pub fn secrets(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 2) {
        out = out.replace(s, "***");
    }
    out
}

fn scrub_authority(text: &str) -> String {
    // `scheme://user:pass@` anywhere in free text.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    /// Ensures a password in a URL's authority never survives redaction.
    #[test]
    fn url_password_is_masked() {
        let r = super::url("rtsp://admin:hunter2@10.0.0.5:554/stream1");
        assert_eq!(r, "rtsp://admin:***@10.0.0.5:554/stream1");
    }

    /// Ensures secret-looking query parameters are masked and others kept.
    #[test]
    fn secret_query_params_are_masked() {
        let r = super::url("synthetic://?seed=3&token=abc123");
        assert!(r.contains("seed=3") && !r.contains("abc123"), "{r}");
    }

    /// Ensures free text with an embedded URL is scrubbed too, and text starting with a URL is
    /// left readable (not percent-encoded).
    #[test]
    fn free_text_is_scrubbed() {
        let r = super::url("rtsp://u:pw1@cam/video: DESCRIBE failed");
        assert_eq!(r, "rtsp://u:***@cam/video: DESCRIBE failed");
        let r = super::url("connect to rtsp://u:s3cret@cam/x failed");
        assert!(!r.contains("s3cret") && r.contains("u:***@cam"), "{r}");
        assert_eq!(
            super::secrets("bad password s3cret", &["s3cret"]),
            "bad password ***"
        );
    }
}
