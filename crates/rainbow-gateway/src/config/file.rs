//! Config files: the original's INI dialect and TOML, both read into
//! [`Settings`].
//!
//! INI follows Python's ConfigParser as the original server used it: a
//! `[main]` section, `key = value` or `key: value`, keys case-insensitive,
//! full-line comments with `;` or `#`, and inline comments after whitespace
//! (`http_port = 1984 ; optional`). Later features have sections of their own
//! (`[cluster]`, see [`SECTIONS`]); a key is written in its own section or in
//! `[main]`, and a key in the wrong section is an error naming the right one.
//! TOML takes the same keys at the top level or in tables of the same names.
//! A file whose name ends in `.toml` is TOML; anything else is INI. Typing and
//! validation are in the parent module.

use std::path::Path;

use super::{ConfigError, KEYS, Origin, SECTIONS, Settings};

/// Checks that `key` may be written in `section`: its own section or `main`.
/// Unknown keys pass here and are reported by the typed check.
fn check_section(key: &str, section: &str) -> Result<(), String> {
    let key = key.trim().to_ascii_lowercase();
    match KEYS.iter().find(|k| k.name == key) {
        Some(k) if k.section != section && section != "main" => {
            Err(format!("`{key}` belongs in [{}], not [{section}]", k.section))
        }
        _ => Ok(()),
    }
}

fn known_section(name: &str) -> Result<(), String> {
    if SECTIONS.contains(&name) {
        Ok(())
    } else {
        let known: Vec<String> = SECTIONS.iter().map(|s| format!("[{s}]")).collect();
        Err(format!("unknown section [{name}]; the gateway reads {}", known.join(", ")))
    }
}

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
            known_section(&name).map_err(|problem| err(line_no, problem))?;
            section = Some(name);
            continue;
        }
        let Some(at) = line.find(['=', ':']) else {
            return Err(err(line_no, format!("expected `key = value`, got {line:?}")));
        };
        let Some(section) = section.as_deref() else {
            return Err(err(line_no, "key outside a section; put keys under [main]".to_string()));
        };
        let key = line[..at].trim();
        check_section(key, section).map_err(|problem| err(line_no, problem))?;
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
        match value {
            toml::Value::Table(table) => {
                let problem = |problem| ConfigError::File { path: path.to_string(), problem };
                known_section(key).map_err(problem)?;
                for (k, v) in table {
                    check_section(k, key).map_err(problem)?;
                    settings.set(k, &toml_scalar(path, k, v)?, origin.clone());
                }
            }
            _ => {
                check_section(key, "main").map_err(|problem| ConfigError::File { path: path.to_string(), problem })?;
                settings.set(key, &toml_scalar(path, key, value)?, origin.clone())
            }
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
        assert!(err.contains("[other]") && err.contains("[cluster]"), "{err}");
        let err = parse_ini("[cluster]\nhttp_port = 1\n", "r.ini").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("belongs in [main]"), "{err}");
    }

    #[test]
    fn cluster_keys_go_in_their_section_or_main() {
        let text = "[main]\nsecurity_token = t\ncluster_name = prod\n[cluster]\nredis_url = redis://127.0.0.1:6379/0\n";
        let c = Config::from_settings(&parse_ini(text, "r.ini").unwrap()).unwrap();
        assert_eq!(c.cluster_name, "prod");
        assert_eq!(c.redis_url.as_ref().map(|u| u.as_str()), Some("redis://127.0.0.1:6379/0"));
        let flat = "[main]\nsecurity_token = t\nredis_url = redis://h/\n";
        assert!(Config::from_settings(&parse_ini(flat, "r.ini").unwrap()).unwrap().redis_url.is_some());
        let s = parse_toml("security_token = \"t\"\n[cluster]\nredis_url = \"redis://h:1/\"\n", "r.toml").unwrap();
        assert!(Config::from_settings(&s).unwrap().redis_url.is_some());
        let err = parse_toml("[cluster]\nhttp_port = 1\n", "r.toml").unwrap_err().to_string();
        assert!(err.contains("belongs in [main]"), "{err}");
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
