//! The fake container behind `exec` and `attach`: a handful of commands, interpreted, so that
//! end-to-end tests can check stdout, stderr, stdin and exit codes without a container runtime.
//!
//! | command | behaviour |
//! | --- | --- |
//! | `echo ARGS…` | ARGS joined by spaces and a newline on stdout; exit 0 |
//! | `stderr-echo ARGS…` | the same on stderr |
//! | `cat`, or no command (`attach`) | stdin to stdout until stdin ends; exit 0 |
//! | `true` / `false` | exit 0 / 1 |
//! | `sh -c 'exit N'` | exit N; `sh -c 'WORDS'` runs WORDS split on whitespace (no quoting) |
//! | `tar cf - PATH` (`kubectl cp` from the pod) | a tar of one file, PATH, holding `contents of PATH\n` |
//! | `tar -xmf - …` (`kubectl cp` to the pod) | reads a tar from stdin and lists its files on stderr (`x NAME SIZE`); exit 2 if it is not one |
//! | `test -d PATH` | exit 0 for `/`, `/tmp` and paths ending in `/` (directories), else 1 |
//!
//! There is no file system: what `kubectl cp` uploads is checked and dropped.
//! | anything else | a message on stderr; exit 127 |

use std::fmt::Write as _;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::tar;

/// Something the process wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A command line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Program {
    Echo(String),
    StderrEcho(String),
    Cat,
    Exit(u8),
    /// A shell's complaint (on stderr) and its exit code.
    Fail(String, u8),
    /// `tar cf - PATH`: the archive to write on stdout.
    TarCreate(String),
    /// `tar x…f -`: read an archive from stdin.
    TarExtract,
}

/// Interprets a command line.
pub(crate) fn parse<S: AsRef<str>>(argv: &[S]) -> Program {
    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    match argv.as_slice() {
        ["echo", args @ ..] => Program::Echo(format!("{}\n", args.join(" "))),
        ["stderr-echo", args @ ..] => Program::StderrEcho(format!("{}\n", args.join(" "))),
        // No command is attach, to the container's main process, which echoes its stdin.
        ["cat"] | [] => Program::Cat,
        ["true" | "exit"] => Program::Exit(0),
        ["false"] => Program::Exit(1),
        ["exit", code] => match code.parse::<u8>() {
            Ok(code) => Program::Exit(code),
            Err(_) => Program::Fail(format!("sh: exit: Illegal number: {code}\n"), 2),
        },
        ["sh" | "/bin/sh" | "bash" | "/bin/bash", "-c", script, ..] => {
            let words: Vec<&str> = script.split_whitespace().collect();
            if words.is_empty() {
                Program::Exit(0)
            } else {
                parse(&words)
            }
        }
        ["tar", "cf" | "-cf", "-", path] => Program::TarCreate((*path).to_owned()),
        ["tar", args @ ..] if args.iter().any(|a| is_extract_flag(a)) && args.contains(&"-") => {
            Program::TarExtract
        }
        ["test", "-d", path] => {
            let dir = matches!(*path, "/" | "/tmp") || path.ends_with('/');
            Program::Exit(u8::from(!dir))
        }
        [command, ..] => Program::Fail(format!("sh: {command}: not found\n"), 127),
    }
}

/// A bundled tar flag that extracts (`-xmf`, `xf`), as opposed to an option or a path.
fn is_extract_flag(arg: &str) -> bool {
    let flags = arg.strip_prefix('-').unwrap_or(arg);
    !arg.starts_with("--") && flags.contains('x') && flags.bytes().all(|b| b.is_ascii_alphabetic())
}

/// The most `tar x` reads from stdin.
const MAX_ARCHIVE: usize = 64 << 20;

/// Runs `argv` with `stdin` (which ends when the client closes it) and sends what it writes to
/// `output`. Returns the exit code. A closed `output` (the client left) ends it early.
pub(crate) async fn run<S: AsRef<str>>(
    argv: &[S],
    mut stdin: mpsc::UnboundedReceiver<Bytes>,
    output: mpsc::Sender<Output>,
) -> u8 {
    match parse(argv) {
        Program::Echo(line) => {
            let _ = output.send(Output::Stdout(Bytes::from(line))).await;
            0
        }
        Program::StderrEcho(line) => {
            let _ = output.send(Output::Stderr(Bytes::from(line))).await;
            0
        }
        Program::Cat => {
            while let Some(data) = stdin.recv().await {
                if output.send(Output::Stdout(data)).await.is_err() {
                    break;
                }
            }
            0
        }
        Program::Exit(code) => code,
        Program::TarCreate(path) => {
            // GNU tar drops the leading `/` from member names, and kubectl expects that.
            let name = path.trim_start_matches('/');
            let archive = tar::archive_one(name, format!("contents of {path}\n").as_bytes());
            let _ = output.send(Output::Stdout(Bytes::from(archive))).await;
            0
        }
        Program::TarExtract => {
            let mut archive = Vec::new();
            while let Some(data) = stdin.recv().await {
                if archive.len() + data.len() > MAX_ARCHIVE {
                    let message = "tar: archive too large for the stand-in\n";
                    let _ = output.send(Output::Stderr(Bytes::from(message))).await;
                    return 2;
                }
                archive.extend_from_slice(&data);
            }
            match tar::entries(&archive) {
                Ok(entries) => {
                    let mut listing = String::new();
                    for entry in &entries {
                        let _ = writeln!(listing, "x {} {}", entry.name, entry.data.len());
                    }
                    if !listing.is_empty() {
                        let _ = output.send(Output::Stderr(Bytes::from(listing))).await;
                    }
                    0
                }
                Err(error) => {
                    let message = format!("tar: {error}\n");
                    let _ = output.send(Output::Stderr(Bytes::from(message))).await;
                    2
                }
            }
        }
        Program::Fail(message, code) => {
            let _ = output.send(Output::Stderr(Bytes::from(message))).await;
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_understood() {
        assert_eq!(
            parse(&["echo", "hi", "there"]),
            Program::Echo("hi there\n".into())
        );
        assert_eq!(parse(&["echo"]), Program::Echo("\n".into()));
        assert_eq!(
            parse(&["stderr-echo", "oops"]),
            Program::StderrEcho("oops\n".into())
        );
        assert_eq!(parse(&["cat"]), Program::Cat);
        assert_eq!(parse(&["false"]), Program::Exit(1));
        assert_eq!(parse(&["sh", "-c", "exit 3"]), Program::Exit(3));
        assert_eq!(
            parse(&["sh", "-c", "echo a  b"]),
            Program::Echo("a b\n".into())
        );
        assert_eq!(
            parse(&["sh", "-c", "exit 300"]),
            Program::Fail("sh: exit: Illegal number: 300\n".into(), 2)
        );
        assert_eq!(
            parse(&["ls", "/"]),
            Program::Fail("sh: ls: not found\n".into(), 127)
        );
        assert_eq!(parse::<&str>(&[]), Program::Cat, "attach");
        assert_eq!(
            parse(&["tar", "cf", "-", "/tmp/a"]),
            Program::TarCreate("/tmp/a".into())
        );
        assert_eq!(
            parse(&["tar", "--no-same-owner", "-xmf", "-", "-C", "/tmp/x"]),
            Program::TarExtract
        );
        assert_eq!(parse(&["tar", "-xmf", "-"]), Program::TarExtract);
        assert_eq!(parse(&["test", "-d", "/tmp"]), Program::Exit(0));
        assert_eq!(parse(&["test", "-d", "/tmp/file"]), Program::Exit(1));
    }

    #[tokio::test]
    async fn cat_copies_stdin_until_it_ends() {
        let (stdin_tx, stdin) = mpsc::unbounded_channel();
        let (output, mut written) = mpsc::channel(8);
        stdin_tx.send(Bytes::from_static(b"one")).expect("open");
        stdin_tx.send(Bytes::from_static(b"two")).expect("open");
        drop(stdin_tx);
        assert_eq!(run(&["cat"], stdin, output).await, 0);
        assert_eq!(
            written.recv().await,
            Some(Output::Stdout(Bytes::from_static(b"one")))
        );
        assert_eq!(
            written.recv().await,
            Some(Output::Stdout(Bytes::from_static(b"two")))
        );
        assert_eq!(written.recv().await, None);
    }

    #[tokio::test]
    async fn tar_extract_lists_what_it_read() {
        let (stdin_tx, stdin) = mpsc::unbounded_channel();
        let (output, mut written) = mpsc::channel(8);
        let archive = tar::archive_one("tmp/up.txt", b"12345");
        let (first, second) = archive.split_at(700);
        stdin_tx.send(Bytes::copy_from_slice(first)).expect("open");
        stdin_tx.send(Bytes::copy_from_slice(second)).expect("open");
        drop(stdin_tx);
        assert_eq!(run(&["tar", "-xmf", "-"], stdin, output).await, 0);
        assert_eq!(
            written.recv().await,
            Some(Output::Stderr(Bytes::from_static(b"x tmp/up.txt 5\n")))
        );

        let (stdin_tx, stdin) = mpsc::unbounded_channel();
        let (output, mut written) = mpsc::channel(8);
        stdin_tx.send(Bytes::from_static(&[1; 512])).expect("open");
        drop(stdin_tx);
        assert_eq!(run(&["tar", "xf", "-"], stdin, output).await, 2);
        assert!(matches!(written.recv().await, Some(Output::Stderr(_))));
    }
}
