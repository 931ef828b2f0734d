//! Exec and attach sessions, over WebSocket channels and over SPDY streams, played as kubelet
//! plays them: run the command once the client's streams are there, send its output, then the
//! exit status on the error channel, then close.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::container::{self, Output};
use super::websocket::{self, Event};
use super::{ExecCommand, spdy};

/// Channel numbers of the WebSocket protocols (`k8s.io/apimachinery/pkg/util/remotecommand`).
pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
pub(crate) const ERROR: u8 = 3;
// Channel 4 carries terminal resize events (JSON); we read and ignore them.
/// v5: `[CLOSE, n]` closes channel `n`.
pub(crate) const CLOSE: u8 = 255;

/// How long we wait, once done, for the client to read everything and hang up.
const GRACE: Duration = Duration::from_secs(30);

/// The remote command protocol version, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    /// `channel.k8s.io`: no exit codes, no resize.
    V1,
    /// `v2.channel.k8s.io`
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON `Status` with the exit code.
    V4,
    /// `v5.channel.k8s.io`: adds the WebSocket CLOSE signal.
    V5,
}

impl Version {
    pub(crate) fn from_name(name: &str) -> Self {
        match name {
            "v5.channel.k8s.io" => Self::V5,
            "v4.channel.k8s.io" => Self::V4,
            "v3.channel.k8s.io" => Self::V3,
            "v2.channel.k8s.io" => Self::V2,
            _ => Self::V1,
        }
    }
}

/// What the error channel carries once `argv` exited with `code`, as kubelet writes it: in v4+
/// a `metav1.Status` in Go's field order; before v4 the failure message alone, and nothing on
/// success.
pub(crate) fn exit_status(version: Version, argv: &[String], code: u8) -> Vec<u8> {
    let message = format!(
        "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
        argv.join(" ")
    );
    match (version >= Version::V4, code) {
        (true, 0) => br#"{"metadata":{},"status":"Success"}"#.to_vec(),
        (true, code) => {
            let message = serde_json::to_string(&message).expect("a string serializes");
            format!(
                r#"{{"metadata":{{}},"status":"Failure","message":{message},"reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#
            )
            .into_bytes()
        }
        (false, 0) => Vec::new(),
        (false, _) => message.into_bytes(),
    }
}

/// Runs the command; each thing it writes goes to `send` with the channel it belongs on
/// (stderr is folded into stdout under a TTY). Returns the exit code.
async fn run_command<F, Fut>(
    command: &ExecCommand,
    stdin: mpsc::UnboundedReceiver<Bytes>,
    mut send: F,
) -> u8
where
    F: FnMut(u8, Bytes) -> Fut,
    Fut: Future<Output = bool>,
{
    let (output, mut written) = mpsc::channel(16);
    let process = container::run(&command.command, stdin, output);
    let forward = async {
        while let Some(out) = written.recv().await {
            let (channel, data) = match out {
                Output::Stdout(data) => (STDOUT, data),
                Output::Stderr(data) if command.tty => (STDOUT, data),
                Output::Stderr(data) => (STDERR, data),
            };
            if !send(channel, data).await {
                // The client is gone: dropping `written` ends the process.
                break;
            }
        }
    };
    let (code, ()) = tokio::join!(process, forward);
    code
}

pub(crate) async fn serve_websocket<IO>(io: IO, version: Version, command: ExecCommand)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let (frames, frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let mut writer = tokio::spawn(websocket::write_loop(write, frames_rx));
    let (stdin_tx, stdin) = mpsc::unbounded_channel();
    let stdin_tx = command.stdin.then_some(stdin_tx);
    let mut reader = tokio::spawn(read_channels(read, frames.clone(), stdin_tx, version));

    // kube-apiserver first sends an empty message on the lowest writable channel.
    let _ = frames.send(websocket::channel_message(STDOUT, &[])).await;
    let code = run_command(&command, stdin, |channel, data| {
        let frames = &frames;
        async move {
            frames
                .send(websocket::channel_message(channel, &data))
                .await
                .is_ok()
        }
    })
    .await;
    let status = exit_status(version, &command.command, code);
    if !status.is_empty() {
        let _ = frames
            .send(websocket::channel_message(ERROR, &status))
            .await;
    }
    // A normal close is what makes kubectl's streams (and so the error stream) end.
    let _ = frames.send(websocket::close(websocket::CLOSE_NORMAL)).await;

    if tokio::time::timeout(GRACE, &mut reader).await.is_err() {
        reader.abort();
    }
    drop(frames);
    if tokio::time::timeout(GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Reads the client's messages: stdin goes to the command, pings are answered, resize messages
/// are ignored. Returns when the client closes or breaks the protocol.
async fn read_channels<R: AsyncRead + Unpin>(
    read: R,
    frames: mpsc::Sender<Vec<u8>>,
    mut stdin: Option<mpsc::UnboundedSender<Bytes>>,
    version: Version,
) {
    let mut reader = websocket::Reader::new(read);
    loop {
        match reader.next().await {
            Ok(Some(Event::Message { payload, .. })) => match payload.as_slice() {
                [CLOSE, STDIN] if version >= Version::V5 => stdin = None,
                [CLOSE, ..] if version >= Version::V5 => {}
                [STDIN, data @ ..] => {
                    if let (Some(stdin), false) = (&stdin, data.is_empty()) {
                        let _ = stdin.send(Bytes::copy_from_slice(data));
                    }
                }
                // Resize events, and channels that are not ours to read.
                _ => {}
            },
            Ok(Some(Event::Ping(data))) => {
                if frames.send(websocket::pong(&data)).await.is_err() {
                    return;
                }
            }
            Ok(Some(Event::Pong)) => {}
            Ok(Some(Event::Close(_)) | None) => return,
            Err(error) => {
                tracing::debug!(%error, "exec websocket read ended");
                // 1002: protocol error.
                let _ = frames.send(websocket::close(1002)).await;
                return;
            }
        }
    }
}

/// The streams of a SPDY exec session, as the client opens them.
#[derive(Debug, Default)]
struct Streams {
    error: Option<u32>,
    stdin: Option<spdy::IncomingStream>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    /// Resize events are not read: their data is dropped as it arrives.
    resize: Option<u32>,
}

impl Streams {
    /// Whether every stream the client will open is open (kubectl opens error, stdin, stdout,
    /// stderr, resize in that order, each after the reply to the one before).
    fn complete(&self, command: &ExecCommand, version: Version) -> bool {
        self.error.is_some()
            && self.stdout.is_some()
            && (!command.stdin || self.stdin.is_some())
            && (command.tty || self.stderr.is_some())
            && (!command.tty || version < Version::V3 || self.resize.is_some())
    }

    /// Takes a new stream; `false` if its type is unknown.
    fn add(&mut self, stream: spdy::IncomingStream) -> bool {
        let kind = stream.headers.get("streamtype").unwrap_or_default();
        match kind {
            "error" => self.error = Some(stream.id),
            "stdin" => self.stdin = Some(stream),
            "stdout" => self.stdout = Some(stream.id),
            "stderr" => self.stderr = Some(stream.id),
            "resize" => self.resize = Some(stream.id),
            _ => return false,
        }
        true
    }

    fn ids(&self) -> impl Iterator<Item = u32> {
        [
            self.error,
            self.stdin.as_ref().map(|s| s.id),
            self.stdout,
            self.stderr,
            self.resize,
        ]
        .into_iter()
        .flatten()
    }
}

pub(crate) async fn serve_spdy<IO>(io: IO, version: Version, command: ExecCommand)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (session, mut incoming) = spdy::Session::start(io);
    let sender = session.sender.clone();
    let mut streams = Streams::default();
    while !streams.complete(&command, version) {
        let Some(stream) = incoming.recv().await else {
            // The client left before opening all its streams.
            drop(sender);
            session.finish(GRACE).await;
            return;
        };
        let id = stream.id;
        let known = streams.add(stream);
        let answered = if known {
            sender.reply(id).await
        } else {
            sender.reset(id, spdy::RST_REFUSED_STREAM).await
        };
        if answered.is_err() {
            drop(sender);
            session.finish(GRACE).await;
            return;
        }
    }
    // Streams opened after the session started are accepted and ignored.
    let late = {
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some(stream) = incoming.recv().await {
                let _ = sender.reply(stream.id).await;
            }
        })
    };

    let stdin = match streams.stdin.as_mut() {
        Some(stream) => std::mem::replace(&mut stream.data, mpsc::unbounded_channel().1),
        None => mpsc::unbounded_channel().1,
    };
    let (stdout, stderr) = (streams.stdout, streams.stderr);
    let code = run_command(&command, stdin, |channel, data| {
        let sender = &sender;
        let id = if channel == STDERR { stderr } else { stdout };
        async move {
            match id {
                Some(id) => sender.data(id, data).await.is_ok(),
                None => true,
            }
        }
    })
    .await;
    let status = exit_status(version, &command.command, code);
    if let (Some(error), false) = (streams.error, status.is_empty()) {
        let _ = sender.data(error, Bytes::from(status)).await;
    }
    for id in streams.ids() {
        let _ = sender.fin(id).await;
    }
    drop(sender);
    session.finish(GRACE).await;
    late.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn v4_status_is_the_json_kubelet_writes() {
        assert_eq!(
            exit_status(Version::V5, &argv(&["echo", "hi"]), 0),
            br#"{"metadata":{},"status":"Success"}"#
        );
        let failure = exit_status(Version::V4, &argv(&["sh", "-c", "exit 3"]), 3);
        assert_eq!(
            String::from_utf8(failure).expect("utf-8"),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
    }

    #[test]
    fn before_v4_the_status_is_plain_text() {
        assert!(exit_status(Version::V3, &argv(&["true"]), 0).is_empty());
        assert!(
            String::from_utf8(exit_status(Version::V2, &argv(&["false"]), 1))
                .expect("utf-8")
                .ends_with("exit code 1")
        );
    }

    #[test]
    fn versions_parse_from_names() {
        assert_eq!(Version::from_name("v5.channel.k8s.io"), Version::V5);
        assert_eq!(Version::from_name("v3.channel.k8s.io"), Version::V3);
        assert_eq!(Version::from_name("channel.k8s.io"), Version::V1);
        assert_eq!(Version::from_name(""), Version::V1);
    }

    use crate::upgrade::test_client::{HANG, SpdyClient, WsClient};
    use crate::upgrade::websocket::{OP_BINARY, OP_CLOSE};

    fn command(words: &[&str], stdin: bool, tty: bool) -> ExecCommand {
        ExecCommand {
            command: argv(words),
            stdin,
            tty,
        }
    }

    /// Binary messages until the server's close frame.
    async fn messages_until_close(client: &mut WsClient) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        loop {
            let frame = client.frame().await.expect("a close frame before the end");
            match frame.opcode {
                OP_BINARY => messages.push(frame.payload),
                OP_CLOSE => {
                    assert_eq!(frame.payload, 1000u16.to_be_bytes());
                    return messages;
                }
                other => panic!("unexpected opcode {other}"),
            }
        }
    }

    async fn websocket_session(
        version: Version,
        command: ExecCommand,
        stdin: &[&[u8]],
    ) -> Vec<Vec<u8>> {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let session = tokio::spawn(serve_websocket(server, version, command));
        let mut client = WsClient::new(client);
        for message in stdin {
            client.binary(message).await;
        }
        let messages = messages_until_close(&mut client).await;
        client.send(OP_CLOSE, &1000u16.to_be_bytes()).await;
        assert_eq!(
            client.frame().await,
            None,
            "the server hangs up after the close"
        );
        session.await.expect("session ends");
        messages
    }

    #[tokio::test]
    async fn websocket_echo_sends_stdout_then_success() {
        let messages = tokio::time::timeout(
            HANG,
            websocket_session(Version::V5, command(&["echo", "hi"], false, false), &[]),
        )
        .await
        .expect("no hang");
        assert_eq!(
            messages,
            [
                b"\x01".to_vec(),
                b"\x01hi\n".to_vec(),
                b"\x03{\"metadata\":{},\"status\":\"Success\"}".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn websocket_cat_copies_stdin_until_the_v5_close_signal() {
        let stdin: &[&[u8]] = &[
            b"\x00abc",
            b"\x04{\"Width\":80,\"Height\":24}",
            b"\x00def",
            &[CLOSE, STDIN],
        ];
        let messages = tokio::time::timeout(
            HANG,
            websocket_session(Version::V5, command(&["cat"], true, false), stdin),
        )
        .await
        .expect("no hang");
        assert_eq!(
            messages,
            [
                b"\x01".to_vec(),
                b"\x01abc".to_vec(),
                b"\x01def".to_vec(),
                b"\x03{\"metadata\":{},\"status\":\"Success\"}".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn websocket_exit_code_and_stderr() {
        let messages = tokio::time::timeout(
            HANG,
            websocket_session(
                Version::V4,
                command(&["sh", "-c", "exit 3"], false, false),
                &[],
            ),
        )
        .await
        .expect("no hang");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1][0], ERROR);
        assert_eq!(
            messages[1][1..],
            exit_status(Version::V4, &argv(&["sh", "-c", "exit 3"]), 3)
        );

        let messages = tokio::time::timeout(
            HANG,
            websocket_session(
                Version::V5,
                command(&["stderr-echo", "oops"], false, false),
                &[],
            ),
        )
        .await
        .expect("no hang");
        assert_eq!(messages[1], b"\x02oops\n");
        let messages = tokio::time::timeout(
            HANG,
            websocket_session(
                Version::V5,
                command(&["stderr-echo", "oops"], false, true),
                &[],
            ),
        )
        .await
        .expect("no hang");
        assert_eq!(messages[1], b"\x01oops\n", "a TTY folds stderr into stdout");
    }

    #[tokio::test]
    async fn websocket_pings_are_answered() {
        tokio::time::timeout(HANG, async {
            let (server, client) = tokio::io::duplex(64 * 1024);
            let session = tokio::spawn(serve_websocket(
                server,
                Version::V5,
                command(&["cat"], true, false),
            ));
            let mut client = WsClient::new(client);
            client
                .send(crate::upgrade::websocket::OP_PING, b"beat")
                .await;
            assert_eq!(
                client.frame().await.expect("initial message").payload,
                [STDOUT]
            );
            let pong = client.frame().await.expect("pong");
            assert_eq!(pong.opcode, crate::upgrade::websocket::OP_PONG);
            assert_eq!(pong.payload, b"beat");
            // The client leaving ends `cat` and the session.
            drop(client);
            session.await.expect("session ends");
        })
        .await
        .expect("no hang");
    }

    #[tokio::test]
    async fn spdy_exec_with_stdin() {
        tokio::time::timeout(HANG, async {
            let (server, client) = tokio::io::duplex(64 * 1024);
            let session = tokio::spawn(serve_spdy(
                server,
                Version::V4,
                command(&["cat"], true, false),
            ));
            let mut client = SpdyClient::new(client);
            client.send(&spdy::Frame::Ping { id: 1 }).await;
            assert_eq!(client.frame().await, Some(spdy::Frame::Ping { id: 1 }));
            client.open(1, &[("streamType", "error")]).await;
            client.open(3, &[("streamType", "stdin")]).await;
            client.open(5, &[("streamType", "stdout")]).await;
            client.open(7, &[("streamType", "stderr")]).await;
            client
                .send(&spdy::Frame::Data {
                    stream_id: 3,
                    fin: true,
                    data: Bytes::from_static(b"piped"),
                })
                .await;
            let data = client.data_until_fin(&[1, 5, 7]).await;
            assert_eq!(
                data,
                [
                    (1, br#"{"metadata":{},"status":"Success"}"#.to_vec()),
                    (5, b"piped".to_vec()),
                    (7, Vec::new())
                ]
            );
            drop(client);
            session.await.expect("session ends");
        })
        .await
        .expect("no hang");
    }

    #[tokio::test]
    async fn spdy_exec_tty_waits_for_the_resize_stream() {
        tokio::time::timeout(HANG, async {
            let (server, client) = tokio::io::duplex(64 * 1024);
            let session = tokio::spawn(serve_spdy(
                server,
                Version::V5,
                command(&["false"], false, true),
            ));
            let mut client = SpdyClient::new(client);
            client.open(1, &[("streamType", "error")]).await;
            client.open(3, &[("streamType", "stdout")]).await;
            client.open(5, &[("streamType", "resize")]).await;
            let data = client.data_until_fin(&[1, 3]).await;
            assert_eq!(data[0].1, exit_status(Version::V5, &argv(&["false"]), 1));
            assert_eq!(data[1].1, b"");
            drop(client);
            session.await.expect("session ends");
        })
        .await
        .expect("no hang");
    }
}
