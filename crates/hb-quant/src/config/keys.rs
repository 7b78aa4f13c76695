//! Reading YAML mappings key by key: unknown keys become errors naming the
//! closest valid key; values are coerced the way Horizon configs write them.

use super::ConfigError;
use serde_yaml::Value;

/// A YAML mapping being read, with the keys it may contain.
pub struct Section<'a> {
    /// Dotted path for messages, e.g. `model_parameters`.
    pub path: String,
    map: Vec<(String, &'a Value)>,
}

impl<'a> Section<'a> {
    /// Wraps `value` (a mapping, or null for an empty group) and checks its
    /// keys against `known`.
    pub fn new(path: &str, value: Option<&'a Value>, known: &[&str]) -> Result<Self, ConfigError> {
        let mut map = Vec::new();
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let key = scalar_text(k)
                        .ok_or_else(|| ConfigError::invalid(path, "keys must be strings"))?;
                    if !known.contains(&key.as_str()) {
                        return Err(ConfigError::UnknownKey {
                            key: format!("{path}.{key}"),
                            suggestion: closest(&key, known),
                        });
                    }
                    map.push((key, v));
                }
            }
            Some(_) => {
                return Err(ConfigError::invalid(
                    path,
                    "must be a mapping of key: value",
                ))
            }
        }
        Ok(Section {
            path: path.to_string(),
            map,
        })
    }

    /// The raw value of `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }

    /// Keys present, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.iter().map(|(k, _)| k.as_str())
    }

    fn where_(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// A scalar as text (numbers and bools are formatted).
    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => scalar_text(v)
                .map(Some)
                .ok_or_else(|| ConfigError::invalid(&self.where_(key), "must be a single value")),
        }
    }

    /// A `;`-separated list (also accepts a YAML sequence); empty items kept.
    pub fn list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| {
                    scalar_text(v).ok_or_else(|| {
                        ConfigError::invalid(&self.where_(key), "list items must be values")
                    })
                })
                .collect(),
            Some(v) => {
                let s = scalar_text(v).ok_or_else(|| {
                    ConfigError::invalid(&self.where_(key), "must be a value or a list")
                })?;
                Ok(split_inputs(&s))
            }
        }
    }

    /// A boolean (`true/false`, `True/False`, `yes/no`, `1/0`).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse_bool(&s).map(Some).ok_or_else(|| {
                ConfigError::invalid(&self.where_(key), &format!("'{s}' is not true/false"))
            }),
        }
    }

    /// A number.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => s.trim().parse().map(Some).map_err(|_| {
                ConfigError::invalid(&self.where_(key), &format!("'{s}' is not a number"))
            }),
        }
    }

    /// A non-negative integer.
    pub fn usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => s.trim().parse().map(Some).map_err(|_| {
                ConfigError::invalid(&self.where_(key), &format!("'{s}' is not a whole number"))
            }),
        }
    }

    /// An error about `key` of this section.
    pub fn err(&self, key: &str, msg: &str) -> ConfigError {
        ConfigError::invalid(&self.where_(key), msg)
    }
}

/// Text of a scalar YAML value.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Splits a multi-input value at `;` (trimmed; a trailing `;` is ignored).
pub fn split_inputs(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split(';').map(|p| p.trim().to_string()).collect();
    if v.len() > 1 && v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    if v.len() == 1 && v[0].is_empty() {
        v.clear();
    }
    v
}

/// Numbers of one input's per-channel value, separated by spaces or commas.
pub fn split_numbers(s: &str) -> Result<Vec<f32>, String> {
    s.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<f32>()
                .map_err(|_| format!("'{p}' is not a number"))
        })
        .collect()
}

/// Parses the boolean spellings configs use.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// The closest of `known` to `key` (Jaro-Winkler), if reasonably close.
pub fn closest(key: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&key.to_ascii_lowercase(), k), *k))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_string())
}
