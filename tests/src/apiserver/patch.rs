//! The patch formats kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and
//! strategic merge patch, which the stand-in approximates: lists of objects that all carry a
//! merge key (`name`, `containerPort`, `mountPath`) merge by that key, `$patch: delete|replace`
//! and `$setElementOrder` are honoured, other directives are dropped, other lists are replaced.

use serde_json::{Map, Value};

/// RFC 7386.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object just above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

const MERGE_KEYS: [&str; 3] = ["name", "containerPort", "mountPath"];

/// The stand-in's strategic merge patch (see the module documentation).
pub fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(&Value::Object(patch.clone()));
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let object = target.as_object_mut().expect("made an object just above");
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                object.remove(key);
            }
            Value::Array(items) => {
                let current = object.entry(key.clone()).or_insert(Value::Null);
                let order = patch.get(&format!("$setElementOrder/{key}"));
                merge_list(current, items, order);
            }
            Value::Object(_) => {
                if value.get("$patch").and_then(Value::as_str) == Some("delete") {
                    object.remove(key);
                } else {
                    strategic(object.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
            _ => {
                object.insert(key.clone(), value.clone());
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Some(remove)) =
                (object.get_mut(field), value.as_array())
        {
            list.retain(|item| !remove.contains(item));
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        object.retain(|key, _| keep.iter().any(|k| k == key));
    }
}

fn merge_key(items: &[Value]) -> Option<&'static str> {
    MERGE_KEYS
        .into_iter()
        .find(|key| !items.is_empty() && items.iter().all(|item| item.get(*key).is_some()))
}

fn merge_list(current: &mut Value, items: &[Value], order: Option<&Value>) {
    let existing = current.as_array().cloned().unwrap_or_default();
    let Some(key) = merge_key(items).filter(|key| existing.iter().all(|e| e.get(*key).is_some()))
    else {
        *current = Value::Array(items.iter().map(without_directives).collect());
        return;
    };
    let mut merged = existing;
    for item in items {
        let position = merged.iter().position(|e| e.get(key) == item.get(key));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                merged.remove(i);
            }
            (Some(i), false) => strategic(&mut merged[i], item),
            (None, false) => merged.push(without_directives(item)),
            (None, true) => {}
        }
    }
    if let Some(Value::Array(order)) = order {
        let rank = |item: &Value| {
            order
                .iter()
                .position(|o| o.get(key) == item.get(key))
                .unwrap_or(usize::MAX)
        };
        merged.sort_by_key(rank);
    }
    *current = Value::Array(merged);
}

fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), without_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

/// RFC 6902. On error the target may be partly patched; callers patch a copy.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    for op in ops {
        let name = op["op"].as_str().ok_or("operation without op")?;
        let path = op["path"].as_str().ok_or("operation without path")?;
        match name {
            "add" => add(
                target,
                path,
                op.get("value").ok_or("add without value")?.clone(),
            )?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(
                    target,
                    path,
                    op.get("value").ok_or("replace without value")?.clone(),
                )?;
            }
            "test" => {
                if target.pointer(path) != op.get("value") {
                    return Err(format!("testing value {path} failed"));
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or("move or copy without from")?;
                let value = if name == "move" {
                    remove(target, from)?
                } else {
                    target
                        .pointer(from)
                        .cloned()
                        .ok_or_else(|| format!("missing value at {from}"))?
                };
                add(target, path, value)?;
            }
            other => return Err(format!("unexpected operation {other:?}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid path {path:?}"))?;
    Ok((
        parent.to_owned(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(list)) => {
            let index = if last == "-" {
                list.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= list.len())
                    .ok_or_else(|| format!("index out of range at {path}"))?
            };
            list.insert(index, value);
            Ok(())
        }
        _ => Err(format!("missing parent of {path}")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("missing value at {path}");
    match target.pointer_mut(&parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(missing),
        Some(Value::Array(list)) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < list.len())
                .ok_or_else(missing)?;
            Ok(list.remove(index))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(&mut doc, &json!({"a": null, "b": {"c": 4}, "l": [3]}));
        assert_eq!(doc, json!({"b": {"c": 4, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "s:1"},
        ]}});
        strategic(
            &mut doc,
            &json!({"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
                "containers": [{"name": "app", "image": "a:2"}, {"name": "side", "$patch": "delete"}],
            }}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"containers": [{"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]}]}})
        );
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "3"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "remove", "path": "/list/0"},
                {"op": "test", "path": "/list/0", "value": 2},
            ]),
        )
        .expect("valid patch");
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a": "3", "b/c": "2"}}, "list": [2, 3]})
        );
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
