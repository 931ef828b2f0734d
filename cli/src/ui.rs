//! Everything the user sees besides data: error reports (`error:` / `caused by:` / `hint:`),
//! colours (off with NO_COLOR or when stderr is not a terminal), prompts, and the one place that
//! writes data to stdout.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write};

use anyhow::{Result, anyhow};

/// An error carrying advice for the user, shown as `hint:` after the error and its causes.
/// It displays as the error it wraps, so the chain reads the same with or without it.
#[derive(Debug)]
pub struct Hint {
    error: anyhow::Error,
    hint: String,
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.error, f)
    }
}

impl std::error::Error for Hint {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Adds a hint to an error.
pub fn hint(error: impl Into<anyhow::Error>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hint {
        error: error.into(),
        hint: hint.into(),
    })
}

pub trait HintExt<T> {
    /// Adds a hint to the error, if any.
    fn hint(self, hint: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> HintExt<T> for std::result::Result<T, E> {
    fn hint(self, text: impl Into<String>) -> Result<T> {
        self.map_err(|e| hint(e, text))
    }
}

/// A mistake in how the command was called: exit code 2, like clap's own usage errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// The exit code for an error: 2 for usage errors, 1 for everything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if is_usage(error) { 2 } else { 1 }
}

fn is_usage(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<Usage>().is_some()
            || e.downcast_ref::<Hint>().is_some_and(|h| is_usage(&h.error))
    })
}

/// Whether to colour stderr: a terminal, and NO_COLOR unset or empty (https://no-color.org).
pub fn color_stderr() -> bool {
    no_color_unset() && std::io::stderr().is_terminal()
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Renders an error report: the error, each cause, and the hints.
pub fn render_error(error: &anyhow::Error, color: bool) -> String {
    let (red, cyan, bold, reset) = if color {
        ("\x1b[1;31m", "\x1b[1;36m", "\x1b[1m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let mut out = String::new();
    let mut hints = Vec::new();
    for (i, cause) in error.chain().enumerate() {
        if let Some(h) = cause.downcast_ref::<Hint>() {
            hints.push(h.hint.clone());
        }
        let text = cause.to_string();
        // A wrapper that displays as the error it wraps would repeat the line.
        if i > 0 && out.ends_with(&format!("{text}\n")) {
            continue;
        }
        if i == 0 {
            let _ = writeln!(out, "{red}error:{reset} {text}");
        } else {
            let _ = writeln!(out, "{bold}caused by:{reset} {text}");
        }
    }
    for h in hints {
        let _ = writeln!(out, "{cyan}hint:{reset} {h}");
    }
    out
}

/// Prints an error report on stderr.
pub fn report(error: &anyhow::Error) {
    let text = render_error(error, color_stderr());
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A warning on stderr.
pub fn warn(message: impl fmt::Display) {
    let (yellow, reset) = if color_stderr() {
        ("\x1b[1;33m", "\x1b[0m")
    } else {
        ("", "")
    };
    eprintln!("{yellow}warning:{reset} {message}");
}

/// Writes data to stdout. A closed pipe (`infra list | head -1`) is not an error.
pub fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| anyhow!("writing to standard output: {e}")),
    }
}

/// Prompts, refused when the caller asked for none or nobody is at a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Prompter {
    pub non_interactive: bool,
}

impl Prompter {
    /// Fails with a hint when the prompt `what` cannot be shown.
    pub fn check(self, what: &str, flag_hint: &str) -> Result<()> {
        if self.non_interactive {
            return Err(hint(
                usage(format!(
                    "the question {what:?} needs an answer, and --non-interactive forbids asking"
                )),
                flag_hint.to_owned(),
            ));
        }
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Err(hint(
                usage(format!(
                    "the question {what:?} needs an answer, and there is no terminal to ask on"
                )),
                flag_hint.to_owned(),
            ));
        }
        Ok(())
    }

    fn theme() -> Box<dyn dialoguer::theme::Theme> {
        if no_color_unset() {
            Box::new(dialoguer::theme::ColorfulTheme::default())
        } else {
            Box::new(dialoguer::theme::SimpleTheme)
        }
    }

    /// Choose one of `items`; `what` names the choice in errors.
    pub fn select(
        self,
        prompt: &str,
        items: &[String],
        default: usize,
        flag_hint: &str,
    ) -> Result<usize> {
        self.check(prompt, flag_hint)?;
        let theme = Self::theme();
        dialoguer::Select::with_theme(&*theme)
            .with_prompt(prompt)
            .items(items)
            .default(default)
            .interact()
            .map_err(|e| anyhow!("prompt {prompt:?}: {e}"))
    }

    pub fn confirm(self, prompt: &str, flag_hint: &str) -> Result<bool> {
        self.check(prompt, flag_hint)?;
        let theme = Self::theme();
        dialoguer::Confirm::with_theme(&*theme)
            .with_prompt(prompt)
            .default(false)
            .interact()
            .map_err(|e| anyhow!("prompt {prompt:?}: {e}"))
    }

    pub fn input(self, prompt: &str, flag_hint: &str) -> Result<String> {
        self.check(prompt, flag_hint)?;
        let theme = Self::theme();
        dialoguer::Input::<String>::with_theme(&*theme)
            .with_prompt(prompt)
            .interact_text()
            .map_err(|e| anyhow!("prompt {prompt:?}: {e}"))
    }

    pub fn password(self, prompt: &str, confirm: bool, flag_hint: &str) -> Result<String> {
        self.check(prompt, flag_hint)?;
        let theme = Self::theme();
        let mut p = dialoguer::Password::with_theme(&*theme).with_prompt(prompt);
        if confirm {
            p = p.with_confirmation("Repeat the password", "the passwords differ");
        }
        p.interact().map_err(|e| anyhow!("prompt {prompt:?}: {e}"))
    }
}

/// Reads the first line of stdin, without its line ending (for `--password-stdin`).
pub fn read_stdin_line(what: &str) -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| anyhow!("reading {what} from standard input: {e}"))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(usage(format!("{what} on standard input is empty")));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn error_report_has_causes_and_hints_in_order() {
        let root = std::io::Error::other("connection refused");
        let err = Err::<(), _>(root)
            .context("connecting to https://infra.example.com")
            .hint("is the server running? `infra login SERVER` picks another")
            .context("listing grants")
            .expect_err("an error");
        assert_eq!(
            render_error(&err, false),
            "error: listing grants\n\
             caused by: connecting to https://infra.example.com\n\
             caused by: connection refused\n\
             hint: is the server running? `infra login SERVER` picks another\n"
        );
        assert_eq!(exit_code(&err), 1);
    }

    #[test]
    fn usage_errors_exit_2() {
        let err = usage("grants add needs a user and a resource");
        assert_eq!(exit_code(&err), 2);
        let hinted = hint(usage("cannot ask"), "pass --user").context("logging in");
        assert_eq!(exit_code(&hinted), 2, "also under a hint and a context");
        assert_eq!(
            render_error(&err, false),
            "error: grants add needs a user and a resource\n"
        );
    }
}
