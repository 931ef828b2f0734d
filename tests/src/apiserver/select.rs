//! Label and field selectors.

use serde_json::Value;

use super::status::Status;

/// A parsed `labelSelector` and `fieldSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    labels: Vec<LabelRequirement>,
    fields: Vec<(String, bool, String)>,
}

#[derive(Debug, Clone)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, Status> {
        let mut selector = Self::default();
        for requirement in split_top_level(labels.unwrap_or_default()) {
            selector.labels.push(parse_label_requirement(&requirement)?);
        }
        for requirement in fields
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            let (path, equal, value) = if let Some((p, v)) = requirement.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = requirement.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = requirement.split_once('=') {
                (p, true, v)
            } else {
                return Err(Status::bad_request(format!(
                    "invalid selector: '{requirement}'; can't understand '{requirement}'"
                )));
            };
            selector
                .fields
                .push((path.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(selector)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::NotExists(key) => label(key).is_none(),
            LabelRequirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            LabelRequirement::NotIn(key, values) => {
                label(key).is_none_or(|v| !values.iter().any(|x| x == v))
            }
        });
        labels_match
            && self.fields.iter().all(|(path, equal, value)| {
                let found = path
                    .split('.')
                    .try_fold(object, |v, key| v.get(key))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default();
                (found == *value) == *equal
            })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in input.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_label_requirement(text: &str) -> Result<LabelRequirement, Status> {
    let bad = || {
        Status::bad_request(format!(
            "unable to parse requirement: found '{text}', expected: valid label requirement"
        ))
    };
    if let Some(key) = text.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(key.trim().to_owned()));
    }
    let words: Vec<&str> = text.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim_start();
        for (op, negate) in [("notin", true), ("in", false)] {
            if let Some(list) = rest.strip_prefix(op) {
                let list = list.trim();
                let list = list
                    .strip_prefix('(')
                    .and_then(|l| l.strip_suffix(')'))
                    .ok_or_else(bad)?;
                let values = list.split(',').map(|v| v.trim().to_owned()).collect();
                let key = (*key).to_owned();
                return Ok(if negate {
                    LabelRequirement::NotIn(key, values)
                } else {
                    LabelRequirement::In(key, values)
                });
            }
        }
    }
    if let Some((key, value)) = text.split_once("!=") {
        return Ok(LabelRequirement::NotIn(
            key.trim().to_owned(),
            vec![value.trim().to_owned()],
        ));
    }
    if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(LabelRequirement::In(
            key.trim().to_owned(),
            vec![value.trim().to_owned()],
        ));
    }
    if text.contains(['<', '>', ' ', '(', ')']) {
        return Err(bad());
    }
    Ok(LabelRequirement::Exists(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: &Value) -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "default", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_requirements() {
        let p = pod(&json!({"app": "web", "tier": "front"}));
        let m = |s: &str| Selector::parse(Some(s), None).expect("valid").matches(&p);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("!missing"));
        assert!(!m("missing"));
        assert!(m("missing notin (x)"));
    }

    #[test]
    fn field_requirements() {
        let p = pod(&json!({}));
        let m = |s: &str| Selector::parse(None, Some(s)).expect("valid").matches(&p);
        assert!(m("metadata.name=web-1"));
        assert!(!m("metadata.name=web-2"));
        assert!(m("metadata.name!=web-2,status.phase=Running"));
    }

    #[test]
    fn bad_selectors_are_refused() {
        assert!(Selector::parse(Some("app in web"), None).is_err());
        assert!(Selector::parse(None, Some("nonsense")).is_err());
    }
}
