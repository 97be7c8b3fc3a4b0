//! Taking a binary COPY's data off the connection in bulk.
//!
//! `tokio-postgres` hands a `COPY … TO STDOUT` over as one `Bytes` per `CopyData` message, and
//! PostgreSQL sends one message per row: parsing, reference counting and polling per message
//! cost a fifth of sluice's CPU on a narrow table. The tap sits between the connection and its
//! stream (the decrypted one when TLS is used). While armed, it lifts every `CopyData` payload out of
//! the byte stream into one contiguous buffer the chunk's reader takes in large pieces, and
//! passes every other message (`CopyDone`, errors, notices, `ReadyForQuery`) through to
//! `tokio-postgres` untouched, so the connection still sees the COPY start and end and reports
//! its outcome. Disarmed, it passes bytes straight through.
//!
//! The binary COPY format is self-delimiting (each row carries its field count and lengths),
//! so payloads concatenated without their message headers are exactly the COPY stream that
//! [`super::copy_binary::CopyBinaryDecoder`] reads.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// COPY data waiting for the reader beyond which the connection stops reading its socket: the
/// server then waits on TCP, and memory stays bounded whatever the reader's pace.
const HELD_LIMIT: usize = 4 * 1024 * 1024;
/// Payload bytes the connection gathers before handing them over in one lock.
const HAND_OVER: usize = 256 * 1024;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 256 * 1024;
/// Backend message tags (https://www.postgresql.org/docs/current/protocol-message-formats.html).
const COPY_DATA: u8 = b'd';
const COPY_DONE: u8 = b'c';
const ERROR_RESPONSE: u8 = b'E';
const COMMAND_COMPLETE: u8 = b'C';
const READY_FOR_QUERY: u8 = b'Z';

#[derive(Default)]
struct TapState {
    armed: bool,
    /// COPY data not yet taken by the reader.
    data: BytesMut,
    /// An emptied buffer the reader gave back, reused for the next hand-over.
    spare: BytesMut,
    /// The COPY ended (`CopyDone`, an error, or the connection closed): once `data` is taken
    /// there is no more.
    ended: bool,
    /// The reader is gone: payloads are dropped instead of held.
    abandoned: bool,
    /// The command tag that completed the COPY (`COPY <rows>`).
    command_tag: Option<String>,
    reader: Option<Waker>,
    connection: Option<Waker>,
}

/// The state one connection's taps and its chunk reader share.
#[derive(Clone, Default)]
pub struct Tap(Arc<Mutex<TapState>>);

impl Tap {
    fn lock(&self) -> MutexGuard<'_, TapState> {
        // A panic elsewhere cannot leave the buffers half-updated: every update is one call.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts diverting `CopyData` payloads. Call it before sending the `COPY`, with nothing
    /// else in flight on the connection.
    pub fn arm(&self) {
        let mut st = self.lock();
        st.armed = true;
        st.ended = false;
    }

    /// The next piece of COPY data, or `None` once the COPY has ended and all of it was taken.
    pub fn poll_data(&self, cx: &mut Context<'_>) -> Poll<Option<BytesMut>> {
        let mut st = self.lock();
        if !st.data.is_empty() {
            let spare = std::mem::take(&mut st.spare);
            let piece = std::mem::replace(&mut st.data, spare);
            if let Some(waker) = st.connection.take() {
                waker.wake();
            }
            return Poll::Ready(Some(piece));
        }
        if st.ended {
            return Poll::Ready(None);
        }
        st.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    pub async fn next_data(&self) -> Option<BytesMut> {
        std::future::poll_fn(|cx| self.poll_data(cx)).await
    }

    /// The rows the server says its COPY sent, from the `CommandComplete` that followed it;
    /// `None` until that message has passed (it has once the next command answered).
    pub fn copied_rows(&self) -> Option<u64> {
        let st = self.lock();
        let tag = st.command_tag.as_deref()?;
        tag.strip_prefix("COPY ")?.trim().parse().ok()
    }

    /// Gives a taken piece back for reuse once it has been decoded.
    pub fn recycle(&self, mut piece: BytesMut) {
        piece.clear();
        let mut st = self.lock();
        if st.spare.capacity() < piece.capacity() {
            st.spare = piece;
        }
    }

    /// The reader will take nothing more: the connection must not wait for it.
    pub fn abandon(&self) {
        let mut st = self.lock();
        st.abandoned = true;
        st.data = BytesMut::new();
        if let Some(waker) = st.connection.take() {
            waker.wake();
        }
    }
}

/// Abandons the tap when the chunk's reader is dropped, finished or not.
pub struct TapReader(pub Tap);

impl Drop for TapReader {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

/// A connection's stream with the tap in it.
pub struct TapStream<S> {
    inner: S,
    tap: Tap,
    /// Read from `inner` and not yet passed on or diverted.
    raw: BytesMut,
    /// Bytes left of the message being passed through.
    pass_left: usize,
    /// Bytes left of the `CopyData` payload being diverted.
    copy_left: usize,
    /// Diverted payload bytes not yet handed to the reader.
    staged: BytesMut,
    /// The COPY's data ended with `CopyDone`: its `CommandComplete`, which says how many rows
    /// it sent, is read on its way through.
    after_copy: bool,
}

impl<S> TapStream<S> {
    pub fn new(inner: S, tap: Tap) -> TapStream<S> {
        TapStream {
            inner,
            tap,
            raw: BytesMut::new(),
            pass_left: 0,
            copy_left: 0,
            staged: BytesMut::new(),
            after_copy: false,
        }
    }

    fn tapping(&self) -> bool {
        self.tap.lock().armed
    }

    /// Hands the staged payload to the reader. `Pending` (with the waker kept) while the
    /// reader holds too much; `force` hands over regardless, for the COPY's end.
    fn hand_over(&mut self, cx: &mut Context<'_>, force: bool) -> Poll<()> {
        if self.staged.is_empty() {
            return Poll::Ready(());
        }
        let mut st = self.tap.lock();
        if st.abandoned {
            self.staged.clear();
            return Poll::Ready(());
        }
        if !force && st.data.len() >= HELD_LIMIT {
            st.connection = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if st.data.is_empty() {
            // The staged buffer becomes the reader's; the emptied one it replaces is reused.
            std::mem::swap(&mut st.data, &mut self.staged);
        } else {
            st.data.extend_from_slice(&self.staged);
            self.staged.clear();
        }
        if let Some(waker) = st.reader.take() {
            waker.wake();
        }
        Poll::Ready(())
    }

    /// The COPY is over as far as this stream can tell: what was staged goes to the reader,
    /// which then hears that nothing more comes.
    fn end_copy(&mut self, cx: &mut Context<'_>) {
        let _ = self.hand_over(cx, true);
        let mut st = self.tap.lock();
        st.armed = false;
        st.ended = true;
        if let Some(waker) = st.reader.take() {
            waker.wake();
        }
    }
}

/// However the connection ends (an error tokio-postgres raised, a dropped client), the reader
/// must hear that no more data comes rather than wait for it.
impl<S> Drop for TapStream<S> {
    fn drop(&mut self) {
        let mut st = self.tap.lock();
        st.armed = false;
        st.ended = true;
        if let Some(waker) = st.reader.take() {
            waker.wake();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TapStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Arming happens only while nothing is in flight, so once per call is enough: a lock
        // per message would cost as much as the messages did.
        let mut tapping = this.tapping();
        loop {
            if this.pass_left > 0 && !this.raw.is_empty() {
                let n = this.pass_left.min(this.raw.len()).min(buf.remaining());
                buf.put_slice(&this.raw[..n]);
                this.raw.advance(n);
                this.pass_left -= n;
                return Poll::Ready(Ok(()));
            }
            if this.pass_left == 0 && this.copy_left == 0 && !tapping && !this.after_copy {
                if this.raw.is_empty() {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                let n = this.raw.len().min(buf.remaining());
                buf.put_slice(&this.raw[..n]);
                this.raw.advance(n);
                return Poll::Ready(Ok(()));
            }
            if tapping && this.pass_left == 0 && this.copy_left == 0 {
                // Runs of whole CopyData messages (a row each) in one pass over the buffer,
                // advancing it once: per message, the bookkeeping cost as much as the copy.
                let mut pos = 0;
                let raw = &this.raw[..];
                while raw.len() - pos >= 5 && raw[pos] == COPY_DATA && this.staged.len() < HAND_OVER
                {
                    let len = u32::from_be_bytes([
                        raw[pos + 1],
                        raw[pos + 2],
                        raw[pos + 3],
                        raw[pos + 4],
                    ]) as usize;
                    let end = pos + 1 + len;
                    // A malformed length or a message not all here: the general path below.
                    if len < 4 || end > raw.len() {
                        break;
                    }
                    this.staged.extend_from_slice(&raw[pos + 5..end]);
                    pos = end;
                }
                if pos > 0 {
                    this.raw.advance(pos);
                    if this.staged.len() >= HAND_OVER && this.hand_over(cx, false).is_pending() {
                        return Poll::Pending;
                    }
                    continue;
                }
            }
            if this.copy_left > 0 && !this.raw.is_empty() {
                let n = this.copy_left.min(this.raw.len());
                this.staged.extend_from_slice(&this.raw[..n]);
                this.raw.advance(n);
                this.copy_left -= n;
                if this.staged.len() >= HAND_OVER && this.hand_over(cx, false).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            if this.pass_left == 0 && this.copy_left == 0 && this.raw.len() >= 5 {
                let tag = this.raw[0];
                let len = u32::from_be_bytes([this.raw[1], this.raw[2], this.raw[3], this.raw[4]])
                    as usize;
                if len < 4 {
                    this.end_copy(cx);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("backend message '{}' with length {len}", tag as char),
                    )));
                }
                if tapping && tag == COPY_DATA {
                    this.raw.advance(5);
                    this.copy_left = len - 4;
                    continue;
                }
                if tapping {
                    this.pass_left = len + 1;
                    if tag == COPY_DONE || tag == ERROR_RESPONSE {
                        this.end_copy(cx);
                        tapping = false;
                        this.after_copy = tag == COPY_DONE;
                    }
                    continue;
                }
                // After the COPY: notices may come first; its CommandComplete is read whole.
                if tag != COMMAND_COMPLETE || this.raw.len() > len {
                    if tag == COMMAND_COMPLETE {
                        let body = &this.raw[5..=len];
                        let text =
                            String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body));
                        this.tap.lock().command_tag = Some(text.into_owned());
                    }
                    if matches!(tag, COMMAND_COMPLETE | ERROR_RESPONSE | READY_FOR_QUERY) {
                        this.after_copy = false;
                    }
                    this.pass_left = len + 1;
                    continue;
                }
            }
            // More bytes are needed. What is staged waits for a full hand-over or the COPY's
            // end: the server never waits on the client during a COPY, so the rest comes, and
            // handing over at every socket read woke the reader tens of thousands of times.
            if this.staged.len() >= HAND_OVER && this.hand_over(cx, false).is_pending() {
                return Poll::Pending;
            }
            this.raw.reserve(READ_SIZE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.raw) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    // The connection closed: the reader must not wait for a CopyDone.
                    this.end_copy(cx);
                    tapping = false;
                    this.copy_left = 0;
                    if this.raw.is_empty() && this.pass_left == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // A message cut short: pass its bytes on and let tokio-postgres say so.
                    this.pass_left = this.raw.len();
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.end_copy(cx);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TapStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend(((body.len() + 4) as u32).to_be_bytes());
        m.extend(body);
        m
    }

    /// Feeds `wire` through a tap in pieces of `piece` bytes; returns what passed through and
    /// what was diverted.
    async fn run(wire: Vec<u8>, piece: usize, armed: bool) -> (Vec<u8>, Vec<u8>, Option<u64>) {
        let (mut server, client) = tokio::io::duplex(piece);
        let tap = Tap::default();
        if armed {
            tap.arm();
        }
        let mut stream = TapStream::new(client, tap.clone());
        let writer = tokio::spawn(async move {
            for part in wire.chunks(piece) {
                server.write_all(part).await.ok();
            }
        });
        let reader = tokio::spawn({
            let tap = tap.clone();
            async move {
                let mut got = Vec::new();
                while let Some(piece) = tap.next_data().await {
                    got.extend_from_slice(&piece);
                    tap.recycle(piece);
                }
                got
            }
        });
        let mut passed = Vec::new();
        stream.read_to_end(&mut passed).await.ok();
        writer.await.ok();
        let diverted = if armed {
            reader.await.unwrap_or_default()
        } else {
            reader.abort();
            Vec::new()
        };
        (passed, diverted, tap.copied_rows())
    }

    #[tokio::test]
    async fn copy_data_is_diverted_and_everything_else_passes_in_order() {
        let mut wire = message(b'H', &[1, 0, 0]);
        let mut expected_data: Vec<u8> = Vec::new();
        for i in 0..2000u32 {
            let row = i.to_be_bytes().repeat(1 + (i % 7) as usize);
            expected_data.extend(&row);
            wire.extend(message(COPY_DATA, &row));
            if i == 1000 {
                wire.extend(message(b'N', b"a notice mid-copy"));
            }
        }
        wire.extend(message(COPY_DONE, &[]));
        wire.extend(message(b'N', b"a notice after the data"));
        wire.extend(message(b'C', b"COPY 2000\0"));
        wire.extend(message(b'Z', b"I"));
        let mut expected_passed = message(b'H', &[1, 0, 0]);
        expected_passed.extend(message(b'N', b"a notice mid-copy"));
        expected_passed.extend(message(COPY_DONE, &[]));
        expected_passed.extend(message(b'N', b"a notice after the data"));
        expected_passed.extend(message(b'C', b"COPY 2000\0"));
        expected_passed.extend(message(b'Z', b"I"));
        // Pieces smaller than a header, odd sizes and larger than the hand-over.
        for piece in [1, 3, 7, 4096, 1 << 20] {
            let (passed, diverted, rows) = run(wire.clone(), piece, true).await;
            assert_eq!(passed, expected_passed, "passed through, pieces of {piece}");
            assert_eq!(diverted, expected_data, "diverted, pieces of {piece}");
            assert_eq!(rows, Some(2000), "the COPY's row count, pieces of {piece}");
        }
    }

    #[tokio::test]
    async fn disarmed_passes_everything_and_an_error_ends_the_copy() {
        let mut wire = message(COPY_DATA, b"row");
        wire.extend(message(b'Z', b"I"));
        let (passed, _, rows) = run(wire.clone(), 5, false).await;
        assert_eq!(passed, wire);
        assert_eq!(rows, None, "no COPY ended");

        let mut wire = message(COPY_DATA, b"one");
        wire.extend(message(ERROR_RESPONSE, b"SERROR\0"));
        wire.extend(message(COPY_DATA, b"not copy data once disarmed"));
        let (passed, diverted, rows) = run(wire, 2, true).await;
        assert_eq!(rows, None, "a failed COPY has no row count");
        let mut expected = message(ERROR_RESPONSE, b"SERROR\0");
        expected.extend(message(COPY_DATA, b"not copy data once disarmed"));
        assert_eq!(passed, expected);
        assert_eq!(diverted, b"one");
    }

    #[tokio::test]
    async fn a_dropped_connection_ends_the_copy_for_a_waiting_reader() {
        let (_server, client) = tokio::io::duplex(64);
        let tap = Tap::default();
        tap.arm();
        let stream = TapStream::new(client, tap.clone());
        let reader = tokio::spawn({
            let tap = tap.clone();
            async move { tap.next_data().await.is_none() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(stream);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert!(matches!(ended, Ok(Ok(true))), "{ended:?}");
    }

    #[tokio::test]
    async fn a_closed_connection_ends_the_copy_for_the_reader() {
        let mut wire = message(COPY_DATA, b"whole");
        wire.extend(&message(COPY_DATA, b"cut short")[..6]);
        let (_, diverted, _) = run(wire, 4, true).await;
        assert!(diverted.starts_with(b"whole"), "{diverted:?}");
    }

    #[tokio::test]
    async fn the_connection_waits_while_the_reader_holds_the_limit_and_not_once_it_is_gone() {
        let (mut server, client) = tokio::io::duplex(1 << 16);
        let tap = Tap::default();
        tap.arm();
        let mut stream = TapStream::new(client, tap.clone());
        let row = vec![7u8; 60_000];
        let rows = 2 * HELD_LIMIT / row.len() + 10;
        tokio::spawn(async move {
            for _ in 0..rows {
                server.write_all(&message(COPY_DATA, &row)).await.ok();
            }
            server.write_all(&message(COPY_DONE, &[])).await.ok();
        });
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            stream.read_to_end(&mut sink),
        )
        .await;
        assert!(read.is_err(), "the connection kept reading past the limit");
        let held = tap.lock().data.len();
        assert!(
            (HELD_LIMIT..HELD_LIMIT + 2 * HAND_OVER).contains(&held),
            "held {held}"
        );
        tap.abandon();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut sink),
        )
        .await;
        assert!(read.is_ok(), "an abandoned tap still held the connection");
        assert_eq!(sink, message(COPY_DONE, &[]));
    }
}
