//! Config files: the original's INI dialect and TOML, both read into
//! [`Settings`].
//!
//! INI follows Python's ConfigParser as the original server used it: a
//! `[main]` section, `key = value` or `key: value`, keys case-insensitive,
//! full-line comments with `;` or `#`, and inline comments after whitespace
//! (`http_port = 1984 ; optional`). TOML takes the same keys at the top level
//! or in a `[main]` table. A file whose name ends in `.toml` is TOML; anything
//! else is INI. Typing and validation are in the parent module.

use std::path::Path;

use super::{ConfigError, Origin, Settings};

/// Reads a config file by path.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::File { path: shown.clone(), problem: e.to_string() })?;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml")) {
        parse_toml(&text, &shown)
    } else {
        parse_ini(&text, &shown)
    }
}

/// Parses the INI dialect. `path` is only used in messages.
pub fn parse_ini(text: &str, path: &str) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    let mut section: Option<String> = None;
    let err = |line: usize, problem: String| ConfigError::File {
        path: path.to_string(),
        problem: format!("line {line}: {problem}"),
    };
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name =
                rest.strip_suffix(']').ok_or_else(|| err(line_no, format!("unclosed section header {line:?}")))?;
            let name = name.trim().to_ascii_lowercase();
            if name != "main" {
                return Err(err(line_no, format!("unknown section [{name}]; the gateway reads [main]")));
            }
            section = Some(name);
            continue;
        }
        let Some(at) = line.find(['=', ':']) else {
            return Err(err(line_no, format!("expected `key = value`, got {line:?}")));
        };
        if section.is_none() {
            return Err(err(line_no, "key outside a section; put keys under [main]".to_string()));
        }
        let key = line[..at].trim();
        let value = strip_inline_comment(line[at + 1..].trim());
        settings.set(key, value, Origin::File(path.to_string()));
    }
    Ok(settings)
}

fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for i in 1..bytes.len() {
        if (bytes[i] == b';' || bytes[i] == b'#') && bytes[i - 1].is_ascii_whitespace() {
            return value[..i].trim_end();
        }
    }
    value
}

/// Parses a TOML config. `path` is only used in messages.
pub fn parse_toml(text: &str, path: &str) -> Result<Settings, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File { path: path.to_string(), problem: e.to_string() })?;
    let mut settings = Settings::default();
    let origin = Origin::File(path.to_string());
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("main", toml::Value::Table(main)) => {
                for (k, v) in main {
                    settings.set(k, &toml_scalar(path, k, v)?, origin.clone());
                }
            }
            (_, toml::Value::Table(_)) => {
                return Err(ConfigError::File {
                    path: path.to_string(),
                    problem: format!("unknown table [{key}]; put keys at the top level or under [main]"),
                });
            }
            _ => settings.set(key, &toml_scalar(path, key, value)?, origin.clone()),
        }
    }
    Ok(settings)
}

fn toml_scalar(path: &str, key: &str, value: &toml::Value) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(ConfigError::File {
            path: path.to_string(),
            problem: format!("`{key}` must be a string, number or boolean"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn reads_the_original_rainbow_ini() {
        let text = "[main]\nsecurity_token = qwe123\nconnect_url = http://localhost:8000/rainbow/connect/\n\
                    close_url = http://localhost:8000/rainbow/close/\n\
                    forward_url = http://localhost:8000/rainbow/message/{message_type}/\n\
                    http_port = 1984          ; optional\ncluster_name = prod       ; optional: nodes only cluster with the same name\n";
        let c = Config::from_settings(&parse_ini(text, "rainbow.ini").unwrap()).unwrap();
        assert_eq!(c.security_token, "qwe123");
        assert_eq!(c.http_port, 1984);
        assert_eq!(c.cluster_name, "prod");
        assert_eq!(c.forward_url_for(3).unwrap(), "http://localhost:8000/rainbow/message/3/");
    }

    #[test]
    fn ini_errors_carry_line_numbers() {
        let err = parse_ini("[main]\njunk\n", "r.ini").unwrap_err().to_string();
        assert!(err.contains("r.ini") && err.contains("line 2"), "{err}");
        let err = parse_ini("[other]\n", "r.ini").unwrap_err().to_string();
        assert!(err.contains("[other]"), "{err}");
    }

    #[test]
    fn toml_takes_the_same_keys() {
        let s = parse_toml("security_token = \"t\"\n[main]\nhttp_port = 2000\nforward_timeout = \"2s\"\n", "r.toml")
            .unwrap();
        let c = Config::from_settings(&s).unwrap();
        assert_eq!(c.http_port, 2000);
        assert_eq!(c.forward_timeout, std::time::Duration::from_secs(2));
    }
}
