//! The one rule for names that come from outside, and the bound on passwords.
//!
//! Users, groups, identity providers, access keys and destinations are named by people, by
//! identity providers and by token claims, and every name ends up in an `Impersonate-*` header,
//! an audit line, a log or a terminal. [`validate_name`] is the rule all of them keep, wherever
//! the name comes from (the policy file, the control API, a token); [`validate_subject_name`]
//! adds what only user and group names need (Kubernetes' reserved `system:` names). Each
//! refusal says which rule the name breaks, and never repeats more than the first 64 characters
//! of it.
//!
//! [`validate_password_length`] bounds a password before anything hashes it.

use unicode_normalization::is_nfc;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

pub use super::NameError;

/// The longest name accepted, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 256;

/// The longest password accepted, in bytes of UTF-8.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The prefix of names only Kubernetes itself may use.
pub const RESERVED_PREFIX: &str = "system:";

/// Checks a name that came from outside. A name is accepted only if it
///
/// 1. is not empty;
/// 2. is at most [`MAX_NAME_BYTES`] bytes;
/// 3. holds no control character (Unicode category Cc: C0, DEL, C1);
/// 4. holds no invisible format character (Unicode category Cf): bidirectional embeddings,
///    overrides, isolates and marks (U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C),
///    zero-width characters (U+200B–U+200D, U+2060), the byte order mark (U+FEFF), the soft
///    hyphen, tag characters and the rest of Cf;
/// 5. neither starts nor ends with white space (Unicode `White_Space`);
/// 6. is in Unicode Normalization Form C, so that one name has one spelling.
///
/// The first rule broken is the one reported. The length is checked before anything looks at
/// the characters, so a long name costs nothing to refuse.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong {
            name: clip(name),
            len: name.len(),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter(clip(name)));
    }
    if let Some(character) = name.chars().find(|c| is_format(*c)) {
        return Err(NameError::FormatCharacter {
            name: clip(name),
            character,
        });
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(NameError::SurroundingWhiteSpace(clip(name)));
    }
    if !is_nfc(name) {
        return Err(NameError::NotNormalized(clip(name)));
    }
    Ok(())
}

/// Checks a user or group name that came from outside: [`validate_name`], and not in
/// Kubernetes' reserved `system:` namespace of names.
pub fn validate_subject_name(name: &str) -> Result<(), NameError> {
    validate_name(name)?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(NameError::Reserved(clip(name)));
    }
    Ok(())
}

/// A password longer than [`MAX_PASSWORD_BYTES`]. Holds only the length, never the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the password is {len} bytes, more than the {max} allowed", max = MAX_PASSWORD_BYTES)]
pub struct PasswordTooLong {
    /// The password's length in bytes.
    pub len: usize,
}

/// Checks that a password is at most [`MAX_PASSWORD_BYTES`] bytes, so that a caller can refuse
/// a long one before hashing it. Looks at the length only.
pub fn validate_password_length(password: &str) -> Result<(), PasswordTooLong> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordTooLong {
            len: password.len(),
        });
    }
    Ok(())
}

/// Whether `c` is an invisible format character (Unicode general category Cf).
fn is_format(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// At most 64 characters of a name, for error messages.
fn clip(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization;

    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "suzie@example.com",
            "Engineering",
            "Platform Engineering",
            "okta:carl@example.com",
            "a",
            "Zoë",
            "日本語のグループ",
            "שלום",
            "مرحبا",
            "emoji 🦀",
            "x".repeat(MAX_NAME_BYTES).as_str(),
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name:?}");
            assert_eq!(validate_subject_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn an_empty_name_is_refused() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
    }

    #[test]
    fn a_name_over_256_bytes_is_refused_and_not_repeated_whole() {
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let err = validate_name(&long).expect_err("too long");
        assert!(
            matches!(&err, NameError::TooLong { len, .. } if *len == MAX_NAME_BYTES + 1),
            "{err:?}"
        );
        // Bytes, not characters: 129 two-byte characters are 258 bytes.
        assert!(matches!(
            validate_name(&"é".repeat(129)),
            Err(NameError::TooLong { len: 258, .. })
        ));
        assert_eq!(validate_name(&"é".repeat(128)), Ok(()));
        // The 1.9 MB name of the report: refused by its length, and the message stays short.
        let huge = "a".repeat(1_900_000);
        let message = validate_subject_name(&huge)
            .expect_err("too long")
            .to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("1900000 bytes"), "{message}");
        assert!(message.contains("256"), "{message}");
    }

    #[test]
    fn control_characters_are_refused() {
        for name in [
            "a\nb",
            "a\0b",
            "a\u{7f}b",
            "a\u{85}b",
            "tab\there",
            "\u{1b}[31mred",
        ] {
            assert_eq!(
                validate_name(name),
                Err(NameError::ControlCharacter(name.to_owned())),
                "{name:?}"
            );
        }
    }

    #[test]
    fn bidirectional_controls_and_invisible_characters_are_refused() {
        let named = [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}', // zero width, marks
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}', // embeddings, overrides
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}', // isolates
            '\u{FEFF}', // byte order mark
            '\u{061C}',
            '\u{00AD}',
            '\u{2060}',
            '\u{2064}',
            '\u{E0001}',
            '\u{E0041}', // other Cf
        ];
        for character in named {
            for name in [
                format!("admin{character}@example.com"),
                format!("{character}admin"),
                format!("admin{character}"),
            ] {
                assert_eq!(
                    validate_name(&name),
                    Err(NameError::FormatCharacter {
                        name: name.clone(),
                        character
                    }),
                    "{name:?}"
                );
            }
        }
        // The message names the code point and does not carry the character itself.
        let message = validate_name("moc.elpmaxe@\u{202E}evil")
            .expect_err("bidi")
            .to_string();
        assert!(message.contains("U+202E"), "{message}");
        assert!(!message.contains('\u{202E}'), "{message}");
    }

    #[test]
    fn leading_and_trailing_white_space_is_refused() {
        for name in [
            " admin",
            "admin ",
            "\u{A0}admin",
            "admin\u{3000}",
            "admin\u{2028}",
        ] {
            assert_eq!(
                validate_name(name),
                Err(NameError::SurroundingWhiteSpace(name.to_owned())),
                "{name:?}"
            );
        }
        assert_eq!(validate_name("Platform Engineering"), Ok(()));
    }

    #[test]
    fn names_not_in_nfc_are_refused() {
        // "é" as e + COMBINING ACUTE ACCENT; its NFC form is the one character U+00E9.
        let decomposed = "Zoe\u{301}";
        assert_eq!(
            validate_name(decomposed),
            Err(NameError::NotNormalized(decomposed.to_owned()))
        );
        assert_eq!(validate_name(&decomposed.nfc().collect::<String>()), Ok(()));
        // ANGSTROM SIGN normalizes to LATIN CAPITAL LETTER A WITH RING ABOVE.
        assert!(matches!(
            validate_name("\u{212B}ngstr\u{F6}m"),
            Err(NameError::NotNormalized(_))
        ));
        assert!(
            validate_name("NFC")
                .and(validate_name("\u{C5}ngstr\u{F6}m"))
                .is_ok()
        );
    }

    #[test]
    fn subject_names_keep_the_system_prefix_reserved() {
        assert_eq!(
            validate_subject_name("system:masters"),
            Err(NameError::Reserved("system:masters".into()))
        );
        // The general rule does not know about `system:`; destinations and providers may not
        // contain `:` anyway, by their own rules.
        assert_eq!(validate_name("system:masters"), Ok(()));
        // The general rule comes first.
        assert_eq!(
            validate_subject_name("system:\u{202E}x"),
            Err(NameError::FormatCharacter {
                name: "system:\u{202E}x".into(),
                character: '\u{202E}'
            })
        );
    }

    #[test]
    fn passwords_are_bounded_in_bytes() {
        assert_eq!(validate_password_length(""), Ok(()));
        assert_eq!(
            validate_password_length(&"p".repeat(MAX_PASSWORD_BYTES)),
            Ok(())
        );
        let long = "p".repeat(MAX_PASSWORD_BYTES + 1);
        let err = validate_password_length(&long).expect_err("too long");
        assert_eq!(err, PasswordTooLong { len: 1025 });
        assert_eq!(
            err.to_string(),
            "the password is 1025 bytes, more than the 1024 allowed"
        );
        // 342 three-byte characters are 1,026 bytes.
        assert!(validate_password_length(&"€".repeat(342)).is_err());
    }

    /// The rules of [`validate_name`], written out again, independently of its code: the first
    /// one `name` breaks, as the error it should give.
    fn expected(name: &str) -> Result<(), NameError> {
        let clipped: String = if name.chars().count() > 64 {
            name.chars().take(64).chain("...".chars()).collect()
        } else {
            name.to_owned()
        };
        let first_format = name
            .chars()
            .find(|c| c.general_category() == GeneralCategory::Format);
        let trimmed = name.trim_matches(char::is_whitespace);
        let normalized: String = name.nfc().collect();
        if name.is_empty() {
            Err(NameError::Empty)
        } else if name.len() > 256 {
            Err(NameError::TooLong {
                name: clipped,
                len: name.len(),
            })
        } else if name
            .chars()
            .any(|c| c.general_category() == GeneralCategory::Control)
        {
            Err(NameError::ControlCharacter(clipped))
        } else if let Some(character) = first_format {
            Err(NameError::FormatCharacter {
                name: clipped,
                character,
            })
        } else if trimmed.len() != name.len() {
            Err(NameError::SurroundingWhiteSpace(clipped))
        } else if normalized != name {
            Err(NameError::NotNormalized(clipped))
        } else {
            Ok(())
        }
    }

    /// Characters that break the rules, or sit close to them, mixed with ordinary ones.
    fn tricky_char() -> impl Strategy<Value = char> {
        prop_oneof![
            24 => proptest::char::range('a', 'z'),
            1 => any::<char>(),
            2 => prop::sample::select(vec![
                ' ', '\t', '\n', '\u{0}', '\u{7f}', '\u{85}', '\u{A0}', '\u{AD}', '\u{301}',
                '\u{61C}', '\u{200B}', '\u{200D}', '\u{200E}', '\u{2028}', '\u{202E}',
                '\u{2066}', '\u{2069}', '\u{212B}', '\u{3000}', '\u{FEFF}', '\u{E0001}', 'é',
                'e', 'Å', '한', '\u{1100}', '\u{1161}', '🦀',
            ]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn a_name_passes_iff_it_keeps_every_rule(
            prefix in prop::sample::select(vec!["", "", "system:", "okta:"]),
            chars in prop_oneof![
                8 => proptest::collection::vec(tricky_char(), 0..24),
                1 => proptest::collection::vec(tricky_char(), 240..270),
            ]
        ) {
            let name: String = prefix.chars().chain(chars).collect();
            prop_assert_eq!(validate_name(&name), expected(&name));
            let subject = validate_subject_name(&name);
            match expected(&name) {
                Ok(()) if name.starts_with("system:") => {
                    prop_assert!(matches!(subject, Err(NameError::Reserved(_))));
                }
                want => prop_assert_eq!(subject, want),
            }
        }

        #[test]
        fn any_string_is_judged_without_panicking(name in any::<String>()) {
            let result = validate_subject_name(&name);
            prop_assert_eq!(validate_name(&name), expected(&name));
            if let Err(err) = result {
                // Error messages repeat at most 64 characters of the name, escaped.
                prop_assert!(err.to_string().chars().count() < 64 * 10 + 100);
            }
        }
    }
}
