//! Loading a config: file text → `${VAR}` interpolation → TOML → `FRAMEWIRE__SECTION__KEY`
//! environment overrides → typed `Config` → semantic checks. Every problem found is reported with
//! the file and the key path (`cameras[1].sample_fps`), so `framewire validate` tells an operator
//! exactly what to fix.

use super::{Config, Role, SourceUrl};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

/// One thing wrong with a config, at a key path.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// `cameras[0].url`, or empty for the document as a whole.
    pub key: String,
    pub message: String,
}

/// Everything wrong with one config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file, or `<defaults>` when none was given.
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the configuration",
            self.source,
            self.problems.len()
        )?;
        for p in &self.problems {
            if p.key.is_empty() {
                writeln!(f, "  {}: {}", self.source, p.message)?;
            } else {
                writeln!(f, "  {}: {}: {}", self.source, p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Loads `path` (or the built-in defaults when `None`), with environment overrides, and validates
/// it for `role`.
pub fn load(path: Option<&Path>, role: Role) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    match path {
        None => load_str("", "<defaults>", role, &env),
        Some(p) => {
            let name = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                source: name.clone(),
                problems: vec![Problem {
                    key: String::new(),
                    message: format!("cannot read the file: {e}"),
                }],
            })?;
            load_str(&text, &name, role, &env)
        }
    }
}

/// Loads a config from TOML text. `env` supplies both `${VAR}` values and `FRAMEWIRE__…` overrides.
pub fn load_str(
    text: &str,
    source: &str,
    role: Role,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        source: source.to_string(),
        problems,
    };
    let text = interpolate_values(text, env).map_err(fail)?;

    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("FRAMEWIRE__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let has_file = !text.trim().is_empty();
    let mut builder = config::Config::builder();
    if has_file {
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    let built = builder
        .add_source(
            config::Environment::with_prefix("FRAMEWIRE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| {
            fail(vec![Problem {
                key: String::new(),
                message: e.to_string(),
            }])
        })?;

    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    let mut track = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(built, &mut track);
    let parsed: Result<Config, _> = serde_path_to_error::deserialize(de);
    for key in unknown {
        problems.push(Problem {
            key: bracket_indices(&key),
            message: "unknown key (see etc/framewire.toml for the keys there are)".into(),
        });
    }
    let cfg = match parsed {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let message = tidy(&e.into_inner().to_string());
            problems.push(missing_field(&key, &message).unwrap_or(Problem { key, message }));
            None
        }
    };
    if let Some(cfg) = &cfg {
        problems.extend(validate(cfg, role));
    }
    match cfg {
        Some(cfg) if problems.is_empty() => Ok(cfg),
        _ => Err(fail(problems)),
    }
}

/// `cameras.0.fsp` (serde_ignored's form) → `cameras[0].fsp`.
fn bracket_indices(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// `config` reports a missing field as `missing configuration field "cameras[0]url"`; name the
/// full key instead.
fn missing_field(parent: &str, message: &str) -> Option<Problem> {
    let quoted = message
        .strip_prefix("missing configuration field \"")?
        .strip_suffix('"')?;
    let field = quoted.rsplit([']', '.']).next().filter(|f| !f.is_empty())?;
    let key = if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    };
    Some(Problem {
        key,
        message: "required key is missing".into(),
    })
}

/// `config`'s messages repeat the key; keep only what went wrong.
fn tidy(msg: &str) -> String {
    match msg.find(" for key ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Parses the TOML and replaces `${VAR}` in every string value (never in comments or keys);
/// returns the TOML text again for the layered loader. A syntax error, or an unset variable, is a
/// problem naming where it is (the key; for an unset variable its name, never a value).
fn interpolate_values(text: &str, env: &[(String, String)]) -> Result<String, Vec<Problem>> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![Problem {
            key: String::new(),
            message: e.to_string().trim().to_string(),
        }]
    })?;
    let mut problems = Vec::new();
    for (k, v) in table.iter_mut() {
        interpolate_value(k, v, env, &mut problems);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    toml::to_string(&table).map_err(|e| {
        vec![Problem {
            key: String::new(),
            message: e.to_string(),
        }]
    })
}

fn interpolate_value(
    path: &str,
    v: &mut toml::Value,
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
) {
    match v {
        toml::Value::String(s) => match interpolate(s, env) {
            Ok(new) => *s = new,
            Err(message) => problems.push(Problem {
                key: path.to_string(),
                message,
            }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(&format!("{path}[{i}]"), item, env, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                interpolate_value(&format!("{path}.{k}"), item, env, problems);
            }
        }
        _ => {}
    }
}

/// Replaces `${VAR}` with the variable's value; `$${` stands for a literal `${`.
fn interpolate(s: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or("unterminated ${ (write $${ for a literal ${)")?;
        let name = &after[..end];
        let (_, value) = env
            .iter()
            .find(|(k, _)| k == name)
            .ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks what types cannot: ranges, uniqueness, URLs, and what the role needs.
fn validate(cfg: &Config, role: Role) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut add = |key: String, message: String| p.push(Problem { key, message });
    let mut ids = HashSet::new();
    if role.ingest() && cfg.cameras.is_empty() {
        add(
            "cameras".into(),
            format!("role {role:?} needs at least one [[cameras]] entry").to_lowercase(),
        );
    }
    for (i, cam) in cfg.cameras.iter().enumerate() {
        let key = |k: &str| format!("cameras[{i}].{k}");
        if cam.id.is_empty()
            || cam.id.len() > 64
            || !cam
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            add(
                key("id"),
                format!(
                    "{:?} must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'",
                    cam.id
                ),
            );
        } else if !ids.insert(cam.id.as_str()) {
            add(
                key("id"),
                format!("{:?} is used by another camera; ids must be unique", cam.id),
            );
        }
        let src = SourceUrl::parse(&cam.url);
        if let Err(e) = &src {
            add(
                key("url"),
                format!("{} ({})", e, crate::redact::url(&cam.url)),
            );
        }
        if !(cam.sample_fps > 0.0 && cam.sample_fps <= 120.0) {
            add(
                key("sample_fps"),
                format!("{} must be above 0 and at most 120", cam.sample_fps),
            );
        }
        for (k, v) in [("width", cam.width), ("height", cam.height)] {
            if !(16..=7680).contains(&v) || v % 2 != 0 {
                add(
                    key(k),
                    format!("{v} must be an even number from 16 to 7680"),
                );
            }
        }
        if cam.stall_timeout < std::time::Duration::from_millis(100) {
            add(key("stall_timeout"), "must be at least 100ms".into());
        }
        if !(1..=10_000).contains(&cam.queue_frames) {
            add(
                key("queue_frames"),
                format!("{} must be from 1 to 10000", cam.queue_frames),
            );
        }
        let rtsp = matches!(src, Ok(SourceUrl::Rtsp(_)));
        if !rtsp && (cam.username.is_some() || cam.password.is_some()) {
            add(
                key("username"),
                "username/password are for rtsp:// cameras".into(),
            );
        }
        if rtsp && cam.password.is_some() && cam.username.is_none() {
            add(key("username"), "a password needs a username".into());
        }
        if cam.loop_file && !matches!(src, Ok(SourceUrl::File(_))) {
            add(key("loop"), "loop is for file:// cameras".into());
        }
        if !(1..=100).contains(&cam.jpeg_quality) {
            add(
                key("jpeg_quality"),
                format!("{} must be from 1 to 100", cam.jpeg_quality),
            );
        }
    }
    if !(1..=1000).contains(&cfg.batch.frames) {
        add(
            "batch.frames".into(),
            format!("{} must be from 1 to 1000", cfg.batch.frames),
        );
    }
    if cfg.batch.max_wait.is_zero() {
        add("batch.max_wait".into(), "must be above zero".into());
    }
    let k = &cfg.kafka;
    if k.brokers.trim().is_empty() {
        add(
            "kafka.brokers".into(),
            "must be \"embedded\" or a list of host:port".into(),
        );
    } else if k.embedded() && role != Role::All {
        add(
            "kafka.brokers".into(),
            format!(
                "the embedded bus lives inside one process; role {role:?} needs a Kafka broker"
            )
            .to_lowercase(),
        );
    }
    if k.topic.is_empty()
        || k.topic.len() > 249
        || !k
            .topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        add(
            "kafka.topic".into(),
            format!("{:?} is not a valid Kafka topic name", k.topic),
        );
    }
    if !(1..=10_000).contains(&k.partitions) {
        add(
            "kafka.partitions".into(),
            format!("{} must be from 1 to 10000", k.partitions),
        );
    }
    if k.group_id.is_empty() {
        add("kafka.group_id".into(), "must not be empty".into());
    }
    if !(1..=1024).contains(&k.max_in_flight) {
        add(
            "kafka.max_in_flight".into(),
            format!("{} must be from 1 to 1024", k.max_in_flight),
        );
    }
    if !(10_000..=1_000_000_000).contains(&k.max_message_bytes) {
        add(
            "kafka.max_message_bytes".into(),
            format!("{} must be from 10000 to 1000000000", k.max_message_bytes),
        );
    }
    if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
        add(
            "kafka.compression".into(),
            format!(
                "{:?} must be one of none, gzip, snappy, lz4, zstd",
                k.compression
            ),
        );
    }
    if k.embedded_capacity == 0 {
        add(
            "kafka.embedded_capacity".into(),
            "must be above zero".into(),
        );
    }
    for reserved in [
        "enable.auto.commit",
        "group.id",
        "bootstrap.servers",
        "message.max.bytes",
        "compression.type",
    ] {
        if k.librdkafka.contains_key(reserved) {
            add(
                format!("kafka.librdkafka.\"{reserved}\""),
                "is set by framewire itself; use the [kafka] key instead".into(),
            );
        }
    }
    if cfg.inference.timeout.is_zero() {
        add("inference.timeout".into(), "must be above zero".into());
    }
    if !(1..=64).contains(&cfg.inference.workers) {
        add(
            "inference.workers".into(),
            format!("{} must be from 1 to 64", cfg.inference.workers),
        );
    }
    if !(0.0..1.0).contains(&cfg.inference.min_area_fraction) {
        add(
            "inference.min_area_fraction".into(),
            "must be from 0 up to (not including) 1".into(),
        );
    }
    let inf = &cfg.inference;
    if inf.protocol != crate::config::InferenceProtocol::Builtin {
        match url::Url::parse(&inf.url) {
            Ok(u) if u.scheme() == "http" && u.host_str().is_some() => {}
            Ok(u) if u.scheme() == "https" => add(
                "inference.url".into(),
                "https is not supported yet: reach the service over http on the private network"
                    .into(),
            ),
            _ => add(
                "inference.url".into(),
                format!(
                    "protocol {} needs an http://host:port URL of the service",
                    inf.protocol.name()
                ),
            ),
        }
    }
    if inf.breaker_failures > 0 && inf.breaker_open.is_zero() {
        add(
            "inference.breaker_open".into(),
            "must be above zero while breaker_failures is set".into(),
        );
    }
    if !inf.input_size.is_empty() && crate::config::parse_size(&inf.input_size).is_none() {
        add(
            "inference.input_size".into(),
            format!("{:?}: expected \"WxH\", e.g. \"640x640\"", inf.input_size),
        );
    }
    if inf.box_outputs.len() != 4 || inf.box_outputs.iter().any(String::is_empty) {
        add(
            "inference.box_outputs".into(),
            "must name four outputs: boxes, scores, classes, num_detections".into(),
        );
    }
    if !(0.0..1.0).contains(&inf.nms_iou) {
        add(
            "inference.nms_iou".into(),
            format!("{} must be from 0 (off) to below 1", inf.nms_iou),
        );
    }
    if inf.max_batch == 0 {
        add("inference.max_batch".into(), "must be at least 1".into());
    }
    if inf.model.is_empty() || inf.model.contains(['/', '?', '#']) {
        add(
            "inference.model".into(),
            "must be a model name without / ? #".into(),
        );
    }
    if !inf.labels_file.is_empty() && !std::path::Path::new(&inf.labels_file).is_file() {
        add(
            "inference.labels_file".into(),
            format!("{} is not a readable file", inf.labels_file),
        );
    }
    if !(1..=64).contains(&cfg.annotator.workers) {
        add(
            "annotator.workers".into(),
            format!("{} must be from 1 to 64", cfg.annotator.workers),
        );
    }
    if !(1..=100).contains(&cfg.annotator.jpeg_quality) {
        add(
            "annotator.jpeg_quality".into(),
            format!("{} must be from 1 to 100", cfg.annotator.jpeg_quality),
        );
    }
    if let Err(reason) = crate::media::jpeg::Codec::select(cfg.media.jpeg_codec) {
        add("media.jpeg_codec".into(), reason);
    }
    if cfg.media.decoders > 256 {
        add(
            "media.decoders".into(),
            format!(
                "{} must be from 0 (one decoder per camera) to 256",
                cfg.media.decoders
            ),
        );
    }
    let st = &cfg.storage;
    if st.kind == crate::config::StorageKind::S3 {
        if st.bucket.is_empty() {
            add(
                "storage.bucket".into(),
                "kind = \"s3\" needs a bucket".into(),
            );
        }
        if !["", "AES256", "aws:kms"].contains(&st.sse.as_str()) {
            add(
                "storage.sse".into(),
                format!("{:?}: expected \"AES256\" or \"aws:kms\"", st.sse),
            );
        }
        if !st.kms_key_id.is_empty() && st.sse != "aws:kms" {
            add(
                "storage.kms_key_id".into(),
                "is used only with sse = \"aws:kms\"".into(),
            );
        }
        if st.part_size < 5 * 1024 * 1024 {
            add(
                "storage.part_size".into(),
                format!(
                    "{} bytes: S3 parts are at least 5 MiB (5242880)",
                    st.part_size
                ),
            );
        }
        if st.multipart_threshold < st.part_size {
            add(
                "storage.multipart_threshold".into(),
                "must be at least part_size".into(),
            );
        }
        if !(1..=64).contains(&st.upload_concurrency) {
            add(
                "storage.upload_concurrency".into(),
                format!("{} must be from 1 to 64", st.upload_concurrency),
            );
        }
        if st.access_key_id.is_empty() != st.secret_access_key.is_empty() {
            add(
                "storage.secret_access_key".into(),
                "access_key_id and secret_access_key go together (or leave both empty for the AWS default chain)".into(),
            );
        }
        if !st.endpoint.is_empty() && url::Url::parse(&st.endpoint).is_err() {
            add(
                "storage.endpoint".into(),
                "must be a URL such as http://host:9000".into(),
            );
        }
    }
    if st.kind == crate::config::StorageKind::File
        && (role.process() || cfg.kafka.claim_check)
        && cfg.storage.path.is_empty()
    {
        add("storage.path".into(), "must name a directory".into());
    }
    if cfg.storage.prefix.starts_with('/') || cfg.storage.prefix.ends_with('/') {
        add(
            "storage.prefix".into(),
            format!("{:?} must not start or end with '/'", cfg.storage.prefix),
        );
    }
    let s = &cfg.supervisor;
    if s.backoff_initial.is_zero() || s.backoff_max < s.backoff_initial {
        add(
            "supervisor.backoff_max".into(),
            "backoff_initial must be above zero and backoff_max at least backoff_initial".into(),
        );
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        load_str(text, "test.toml", Role::All, &[])
    }

    /// Ensures no file at all gives the embedded pipeline with two synthetic cameras.
    #[test]
    fn defaults_are_valid() {
        let cfg = load("").expect("defaults valid");
        assert_eq!(cfg.cameras.len(), 2);
        assert!(cfg.kafka.embedded());
        assert_eq!(cfg.batch.frames, 25);
    }

    /// Ensures a wrong type is reported at its key path and file.
    #[test]
    fn wrong_type_names_key_and_file() {
        let e = load("[batch]\nframes = \"many\"\n").unwrap_err();
        assert_eq!(e.source, "test.toml");
        assert_eq!(e.problems[0].key, "batch.frames", "{e}");
        assert!(e.to_string().contains("test.toml: batch.frames"), "{e}");
    }

    /// Ensures every unknown key is reported with its path, nested ones included.
    #[test]
    fn unknown_keys_are_all_reported() {
        let e = load("[http]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n[[cameras]]\nid = \"a\"\nurl = \"synthetic://\"\nfsp = 3\n").unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"http.listne"), "{e}");
        assert!(keys.contains(&"cameras[0].fsp"), "{e}");
    }

    /// Ensures a missing required value is named.
    #[test]
    fn missing_required_value_is_named() {
        let e = load("[[cameras]]\nid = \"a\"\n").unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "cameras[0].url", "{e}");
        assert!(
            e.to_string()
                .contains("test.toml: cameras[0].url: required key is missing"),
            "{e}"
        );
    }

    /// Ensures semantic problems are all reported at once, each with its key.
    #[test]
    fn semantic_problems_are_all_reported() {
        let text = "[[cameras]]\nid = \"a\"\nurl = \"synthetic://\"\nsample_fps = 0\n[[cameras]]\nid = \"a\"\nurl = \"ftp://x\"\njpeg_quality = 101\n[batch]\nframes = 0\n";
        let e = load(text).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "cameras[0].sample_fps",
            "cameras[1].id",
            "cameras[1].url",
            "cameras[1].jpeg_quality",
            "batch.frames",
        ] {
            assert!(keys.contains(&k), "{k} missing from {e}");
        }
    }

    /// Ensures `${VAR}` is replaced, and an unset one is an error naming it but no value.
    #[test]
    fn interpolation() {
        let env = vec![("TOPIC".to_string(), "frames.x".to_string())];
        let cfg = load_str("[kafka]\ntopic = \"${TOPIC}\"\n", "t", Role::All, &env).unwrap();
        assert_eq!(cfg.kafka.topic, "frames.x");
        let e = load_str(
            "# ${IN_A_COMMENT}\n[kafka]\ntopic = \"${NOPE}\"\n",
            "t",
            Role::All,
            &env,
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 1, "comments are not interpolated: {e}");
        assert!(
            e.to_string()
                .contains("t: kafka.topic: environment variable NOPE is not set"),
            "{e}"
        );
        let cfg = load_str("[kafka]\ntopic = \"a$${b}\"\n", "t", Role::All, &env);
        assert!(
            cfg.is_err(),
            "literal ${{ is not a valid topic, but it must have been kept literally"
        );
    }

    /// Ensures FRAMEWIRE__SECTION__KEY overrides the file.
    #[test]
    fn env_overrides() {
        let env = vec![
            ("FRAMEWIRE__BATCH__FRAMES".to_string(), "7".to_string()),
            ("FRAMEWIRE__KAFKA__TOPIC".to_string(), "t2".to_string()),
        ];
        let cfg = load_str("[batch]\nframes = 3\n", "t", Role::All, &env).unwrap();
        assert_eq!(cfg.batch.frames, 7);
        assert_eq!(cfg.kafka.topic, "t2");
    }

    /// Ensures a role without the embedded bus's process cannot use it.
    #[test]
    fn split_roles_need_kafka() {
        let e = load_str("", "t", Role::Ingest, &[]).unwrap_err();
        assert_eq!(e.problems[0].key, "kafka.brokers");
    }
}
