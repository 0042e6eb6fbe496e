//! `annal serve --config FILE` (or `ANNAL_CONFIG`): settings from a TOML file whose keys
//! are the long flags of `annal serve` (`listen = "127.0.0.1:2113"`, `max_page = 5000`,
//! `allow_anonymous = true`, …).
//!
//! Precedence: a flag on the command line, then its `ANNAL_*` environment variable, then
//! the file, then the built-in default. The file is applied by adding the flags it sets
//! to the command line, where neither a flag nor its environment variable already did.

use super::CliError;
use std::ffi::OsString;

/// The keys a config file may set: (key, the flag's environment variable, is a switch).
const KEYS: &[(&str, &str, bool)] = &[
    ("store", "ANNAL_STORE", false),
    ("read_store", "ANNAL_READ_STORE", false),
    ("read_store_wait", "ANNAL_READ_STORE_WAIT", false),
    ("data", "ANNAL_DATA", false),
    ("listen", "ANNAL_LISTEN", false),
    ("advertise", "ANNAL_ADVERTISE", false),
    ("allow_anonymous", "ANNAL_ALLOW_ANONYMOUS", true),
    ("metrics_public", "ANNAL_METRICS_PUBLIC", true),
    ("tokens_file", "ANNAL_TOKENS_FILE", false),
    ("max_body_bytes", "ANNAL_MAX_BODY_BYTES", false),
    ("max_page", "ANNAL_MAX_PAGE", false),
    ("max_connections", "ANNAL_MAX_CONNECTIONS", false),
    ("header_read_timeout", "ANNAL_HEADER_READ_TIMEOUT", false),
    ("body_read_timeout", "ANNAL_BODY_READ_TIMEOUT", false),
    ("keep_alive", "ANNAL_KEEP_ALIVE", false),
    ("send_timeout", "ANNAL_SEND_TIMEOUT", false),
    ("read_ahead_mib", "ANNAL_READ_AHEAD_MIB", false),
    ("digest_dir", "ANNAL_DIGEST_DIR", false),
    ("digest_every", "ANNAL_DIGEST_EVERY", false),
    ("max_event_bytes", "ANNAL_MAX_EVENT_BYTES", false),
    ("max_batch_events", "ANNAL_MAX_BATCH_EVENTS", false),
    ("log_json", "ANNAL_LOG_JSON", true),
    ("tls_cert", "ANNAL_TLS_CERT", false),
    ("tls_key", "ANNAL_TLS_KEY", false),
];

/// Expands `--config FILE` (or `ANNAL_CONFIG`) of `annal serve` into flags.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, CliError> {
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if text.get(1).map(String::as_str) != Some("serve") {
        return Ok(args);
    }
    let mut path = std::env::var("ANNAL_CONFIG").ok();
    let mut rest = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        match text[i].as_str() {
            "--config" => {
                path = Some(
                    text.get(i + 1)
                        .cloned()
                        .ok_or_else(|| CliError::Usage("--config needs a file".into()))?,
                );
                i += 2;
            }
            a if a.starts_with("--config=") => {
                path = Some(a["--config=".len()..].to_owned());
                i += 1;
            }
            _ => {
                rest.push(args[i].clone());
                i += 1;
            }
        }
    }
    let Some(path) = path else { return Ok(rest) };
    let raw = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Usage(format!("cannot read config file {path}: {e}")))?;
    let table: toml::Table = raw
        .parse()
        .map_err(|e| CliError::Usage(format!("config file {path}: {e}")))?;
    for (key, value) in &table {
        let Some((_, env, switch)) = KEYS.iter().find(|(k, _, _)| k == key) else {
            let known: Vec<_> = KEYS.iter().map(|(k, _, _)| *k).collect();
            return Err(CliError::Usage(format!(
                "config file {path}: unknown key '{key}' (known: {})",
                known.join(", ")
            )));
        };
        let flag = format!("--{}", key.replace('_', "-"));
        let given = text
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        if given || std::env::var_os(env).is_some() {
            continue;
        }
        match (switch, value) {
            (true, toml::Value::Boolean(true)) => rest.push(flag.into()),
            (true, toml::Value::Boolean(false)) => {}
            (true, other) => {
                return Err(CliError::Usage(format!(
                    "config file {path}: {key} must be true or false, not {other:?}"
                )));
            }
            (false, toml::Value::String(s)) => rest.extend([flag.into(), s.into()]),
            (false, toml::Value::Integer(n)) => rest.extend([flag.into(), n.to_string().into()]),
            (false, other) => {
                return Err(CliError::Usage(format!(
                    "config file {path}: {key} must be a string or a number, not {other:?}"
                )));
            }
        }
    }
    Ok(rest)
}
