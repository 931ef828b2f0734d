//! The apiserver's wording of denials: the reason of a [`Decision::Deny`](super::Decision::Deny)
//! and the message of the 403 `Status`, with strings quoted as Go quotes them.

use std::fmt::Write as _;

use crate::attributes::Attributes;

/// The apiserver's `forbiddenMessage`: what a denied request was not allowed to do.
///
/// - `User "u" cannot get path "/healthz"`
/// - `User "u" cannot list resource "pods" in API group "" in the namespace "web"`
/// - `User "u" cannot list resource "nodes" in API group "" at the cluster scope`
///
/// The resource includes `/subresource` when there is one. Strings are quoted as Go's `%q`
/// quotes them.
pub fn forbidden_message(user: &str, attrs: &Attributes) -> String {
    match attrs {
        Attributes::NonResource(n) => format!(
            "User {} cannot {} path {}",
            go_quote(user),
            n.verb,
            go_quote(&n.path)
        ),
        Attributes::Resource(r) => {
            let resource = match r.subresource.as_deref() {
                Some(sub) if !sub.is_empty() => format!("{}/{sub}", r.resource),
                _ => r.resource.clone(),
            };
            let start = format!(
                "User {} cannot {} resource {} in API group {}",
                go_quote(user),
                r.verb,
                go_quote(&resource),
                go_quote(&r.api_group)
            );
            match r.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => {
                    format!("{start} in the namespace {}", go_quote(ns))
                }
                _ => format!("{start} at the cluster scope"),
            }
        }
    }
}

/// The message of the 403 `Status` the apiserver sends for a denied request, as its
/// `responsewriters.Forbidden` and `errors.NewForbidden` build it:
///
/// - `pods "foo" is forbidden: User "u" cannot get resource "pods" in API group "" in the namespace "ns"`
/// - `deployments.apps is forbidden: User "u" cannot list resource "deployments" in API group "apps" ...`
/// - `forbidden: User "u" cannot get path "/healthz"` (non-resource requests)
///
/// `reason` is the authorizer's reason; when not empty it is appended as `: reason`. As the
/// apiserver does, `&`, `<` and `>` in the [`forbidden_message`] part are written as HTML
/// entities, so the message never looks like HTML.
pub fn forbidden_status_message(user: &str, attrs: &Attributes, reason: &str) -> String {
    let message = sanitize_html(&forbidden_message(user, attrs));
    let error = if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    };
    let (group, resource, name) = match attrs {
        Attributes::Resource(r) => (
            r.api_group.as_str(),
            r.resource.as_str(),
            r.name.as_deref().unwrap_or(""),
        ),
        Attributes::NonResource(_) => ("", "", ""),
    };
    if group.is_empty() && resource.is_empty() {
        return format!("forbidden: {error}");
    }
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    if name.is_empty() {
        format!("{qualified} is forbidden: {error}")
    } else {
        format!("{qualified} {} is forbidden: {error}", go_quote(name))
    }
}

/// The apiserver's sanitizer (`responsewriters`): `&`, `<`, `>` as HTML entities.
pub fn sanitize_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Quotes `s` as Go's `%q` (`strconv.Quote`) does: in double quotes, with `"` and `\` escaped,
/// `\a \b \f \n \r \t \v` for those controls, and `\xNN`, `\uNNNN` or `\UNNNNNNNN` for other
/// characters Go does not consider printable.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_is_print(c) => out.push(c),
            // Writing to a `String` cannot fail.
            c if u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if u32::from(c) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
///
/// Rust's standard library has no Unicode category tables, so this refuses what it can name:
/// controls, white space other than `' '`, the format characters (category Cf), private use
/// and noncharacters. Unassigned code points, which Go also escapes, pass through.
fn go_is_print(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_graphic();
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let n = u32::from(c);
    let format = matches!(
        n,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let private_use = matches!(n, 0xE000..=0xF8FF | 0xF_0000..=0x10_FFFF);
    let noncharacter = matches!(n, 0xFDD0..=0xFDEF) || n & 0xFFFE == 0xFFFE;
    !(format || private_use || noncharacter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::ResourceAttributes;
    use crate::decision::test_support::{res, url};

    #[test]
    fn forbidden_messages_read_like_the_apiservers() {
        let u = "u";
        assert_eq!(
            forbidden_message(u, &url("get", "/healthz")),
            r#"User "u" cannot get path "/healthz""#
        );
        assert_eq!(
            forbidden_message(u, &res("list", "pods", Some("ns"))),
            r#"User "u" cannot list resource "pods" in API group "" in the namespace "ns""#
        );
        assert_eq!(
            forbidden_message(u, &res("list", "nodes", None)),
            r#"User "u" cannot list resource "nodes" at the cluster scope"#
                .replace("at the", r#"in API group "" at the"#)
        );
        let exec = Attributes::Resource(ResourceAttributes {
            verb: "create".into(),
            api_group: String::new(),
            api_version: "v1".into(),
            namespace: Some("ns".into()),
            resource: "pods".into(),
            subresource: Some("exec".into()),
            name: Some("foo".into()),
        });
        assert_eq!(
            forbidden_message(u, &exec),
            r#"User "u" cannot create resource "pods/exec" in API group "" in the namespace "ns""#
        );
        assert_eq!(
            forbidden_status_message(u, &exec, ""),
            r#"pods "foo" is forbidden: User "u" cannot create resource "pods/exec" in API group "" in the namespace "ns""#
        );
        let deployments = Attributes::Resource(ResourceAttributes {
            verb: "list".into(),
            api_group: "apps".into(),
            api_version: "v1".into(),
            namespace: None,
            resource: "deployments".into(),
            subresource: None,
            name: None,
        });
        assert_eq!(
            forbidden_status_message(u, &deployments, "no grant"),
            r#"deployments.apps is forbidden: User "u" cannot list resource "deployments" in API group "apps" at the cluster scope: no grant"#
        );
        assert_eq!(
            forbidden_status_message(u, &url("get", "/healthz"), ""),
            r#"forbidden: User "u" cannot get path "/healthz""#
        );
        assert_eq!(
            forbidden_status_message("a<b>&c", &url("get", "/x"), "r<"),
            r#"forbidden: User "a&lt;b&gt;&amp;c" cannot get path "/x": r<"#
        );
    }

    #[test]
    fn quoting_follows_go() {
        assert_eq!(go_quote(""), r#""""#);
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(go_quote("\u{0}\u{7f}"), r#""\x00\x7f""#);
        assert_eq!(go_quote("é日本"), "\"é日本\"");
        assert_eq!(go_quote("\u{a0}\u{200b}\u{85}"), r#""\u00a0\u200b\u0085""#);
        assert_eq!(go_quote("\u{e0001}"), r#""\U000e0001""#);
    }
}
