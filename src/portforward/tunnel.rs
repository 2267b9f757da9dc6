//! The SPDY/3.1 port-forward session, as the kubelet serves it
//! (`pkg/kubelet/cri/streaming/portforward/httpstream.go`), over any byte
//! stream: the WebSocket tunnel kubectl 1.31+ opens, or a raw upgraded
//! connection.
//!
//! Per forwarded connection the client opens two streams with the same
//! `requestid` header: `streamtype: error` then `streamtype: data`, both
//! naming the `port`. Every accepted stream gets an empty SYN_REPLY (the
//! client waits for it before using the stream). Once both exist the port
//! is dialled; a failure is written on the error stream in the kubelet's
//! words (kubectl prints it), then both streams are finished. A normal end
//! is DATA with FIN on the data stream, then on the error stream. A RST_STREAM
//! from the client (kubectl sends CANCEL after every connection) ends the
//! pair. PINGs are echoed; GOAWAY or the end of the byte stream ends the
//! session.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{Sink, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::spdy::{self, Decoder, Encoder, Frame, data_frame, status};
use super::{CLIENT_CHUNKS, Chunk, ClientBudget, Context, MAX_CONNECTIONS, POD_STALL, pump};

/// Frames waiting for the client's connection, all streams together.
const OUTGOING_FRAMES: usize = 64;
/// The longest `requestid` accepted: clients send a counter (kubectl's
/// `strconv.Itoa(requestID)`); a longer one would be stored per stream.
const MAX_REQUEST_ID: usize = 20;
/// How long frames already queued may take to reach the client at the end.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The client closed the connection or sent GOAWAY.
    ClientClosed,
    /// Every connection of a channel-form session ended.
    Done,
    /// The client's bytes were not the protocol.
    Protocol(String),
    /// The agent is shutting down.
    Shutdown,
    /// Nothing was open and nothing moved for the idle timeout.
    Idle,
    /// The session reached the agent's longest session.
    MaxDuration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    Data,
}

/// The two streams of one forwarded connection.
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
    /// The client's bytes for the pod, once the connection is being made;
    /// dropped at the client's FIN.
    to_pod: Option<mpsc::Sender<Chunk>>,
    cancel: Option<CancellationToken>,
}

struct Tunnel {
    ctx: Context,
    out: mpsc::Sender<Bytes>,
    encoder: Encoder,
    streams: HashMap<u32, (String, Kind)>,
    pairs: HashMap<String, Pair>,
    tasks: JoinSet<String>,
    last_stream: u32,
    budget: ClientBudget,
}

/// Serves one SPDY port-forward session: frames arrive in any pieces on
/// `incoming`, go out one per item of `sink`, until the client ends or
/// `stop` resolves. Every connection is closed when it returns.
pub async fn serve<I, E, W>(
    mut incoming: I,
    sink: W,
    ctx: Context,
    stop: impl Future<Output = Ended>,
) -> Ended
where
    I: Stream<Item = Result<Bytes, E>> + Unpin,
    W: Sink<Bytes> + Unpin + Send + 'static,
{
    let (out, outgoing) = mpsc::channel(OUTGOING_FRAMES);
    let writer = tokio::spawn(super::write_all(outgoing, sink));
    let mut tunnel = Tunnel {
        ctx,
        out,
        encoder: Encoder::default(),
        streams: HashMap::new(),
        pairs: HashMap::new(),
        tasks: JoinSet::new(),
        last_stream: 0,
        budget: ClientBudget::default(),
    };
    // Handling a frame may wait (a pod slow to read, a client slow to take
    // frames): `stop` races all of it, not only the wait for bytes.
    let (ended, stopped) = tokio::select! {
        ended = tunnel.run(&mut incoming) => (ended, false),
        ended = stop => (ended, true),
    };
    if stopped {
        // A client that reads nothing gets no GOAWAY rather than a wait.
        let _ = tunnel.out.try_send(spdy::goaway_frame(tunnel.last_stream));
    }
    // Every connection closes with the session; queued frames get a moment.
    let Tunnel { tasks, out, .. } = tunnel;
    drop(tasks);
    drop(out);
    let mut writer = writer;
    if tokio::time::timeout(FLUSH_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    ended
}

impl Tunnel {
    /// Reads and acts on the client's frames until the client ends.
    async fn run<I, E>(&mut self, incoming: &mut I) -> Ended
    where
        I: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let mut decoder = Decoder::default();
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if let Some(ended) = self.handle(frame).await {
                            return ended;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => return Ended::Protocol(err.to_string()),
                }
            }
            tokio::select! {
                chunk = incoming.next() => match chunk {
                    Some(Ok(bytes)) => decoder.extend(&bytes),
                    Some(Err(_)) | None => return Ended::ClientClosed,
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(request) = done {
                        self.forget(&request);
                    }
                }
            }
        }
    }

    async fn send(&self, frame: Bytes) {
        // Fails only when the client is gone, which ends the session anyway.
        let _ = self.out.send(frame).await;
    }

    /// Acts on one frame; `Some` ends the session.
    async fn handle(&mut self, frame: Frame) -> Option<Ended> {
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => self.open_stream(stream_id, &headers).await,
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                self.data(stream_id, flags & spdy::FLAG_FIN != 0, data)
                    .await
            }
            Frame::RstStream { stream_id, .. } => self.reset(stream_id),
            Frame::Ping { id } => self.send(spdy::ping_frame(id)).await,
            Frame::GoAway { .. } => return Some(Ended::ClientClosed),
            Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Ignored { .. } => {}
        }
        None
    }

    async fn open_stream(&mut self, stream_id: u32, headers: &spdy::Headers) {
        let refuse = |status| spdy::rst_stream_frame(stream_id, status);
        if self.streams.len() >= 2 * MAX_CONNECTIONS {
            return self.send(refuse(status::REFUSED_STREAM)).await;
        }
        let kind = match spdy::header(headers, "streamtype") {
            Some("error") => Kind::Error,
            Some("data") => Kind::Data,
            _ => return self.send(refuse(status::PROTOCOL_ERROR)).await,
        };
        let Some(port) = spdy::header(headers, "port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
        else {
            return self.send(refuse(status::PROTOCOL_ERROR)).await;
        };
        // Clients before requestid paired a data stream with the error
        // stream opened just before it (the kubelet's fallback).
        let request = match spdy::header(headers, "requestid") {
            Some(id) => id.to_string(),
            None if kind == Kind::Data => stream_id.saturating_sub(2).to_string(),
            None => stream_id.to_string(),
        };
        // Every refusal comes before anything is stored: a refused stream
        // leaves nothing behind.
        if request.len() > MAX_REQUEST_ID || self.streams.contains_key(&stream_id) {
            return self.send(refuse(status::PROTOCOL_ERROR)).await;
        }
        match self.pairs.get(&request) {
            Some(pair) => {
                let slot = match kind {
                    Kind::Error => pair.error,
                    Kind::Data => pair.data,
                };
                if slot.is_some() || pair.port != port {
                    return self.send(refuse(status::PROTOCOL_ERROR)).await;
                }
            }
            None if self.pairs.len() >= MAX_CONNECTIONS => {
                return self.send(refuse(status::REFUSED_STREAM)).await;
            }
            None => {}
        }
        let pair = self.pairs.entry(request.clone()).or_insert(Pair {
            port,
            error: None,
            data: None,
            to_pod: None,
            cancel: None,
        });
        match kind {
            Kind::Error => pair.error = Some(stream_id),
            Kind::Data => pair.data = Some(stream_id),
        }
        self.ctx
            .counters
            .open
            .store(self.pairs.len() as u64, Ordering::Relaxed);
        self.streams.insert(stream_id, (request.clone(), kind));
        self.last_stream = self.last_stream.max(stream_id);
        self.ctx.counters.port(port);
        let reply = self.encoder.syn_reply(stream_id, &Vec::new());
        self.send(reply).await;
        self.start_if_paired(&request);
    }

    /// Dials the pod once both streams of `request` exist.
    fn start_if_paired(&mut self, request: &str) {
        let Some(pair) = self.pairs.get_mut(request) else {
            return;
        };
        let (Some(error), Some(data), None) = (pair.error, pair.data, &pair.cancel) else {
            return;
        };
        let (to_pod, from_client) = mpsc::channel(CLIENT_CHUNKS);
        let cancel = CancellationToken::new();
        pair.to_pod = Some(to_pod);
        pair.cancel = Some(cancel.clone());
        let (ctx, out, port, request) = (
            self.ctx.clone(),
            self.out.clone(),
            pair.port,
            request.to_string(),
        );
        self.tasks.spawn(async move {
            let dialled = tokio::select! {
                dialled = ctx.dialer.dial(port) => dialled,
                () = cancel.cancelled() => return request,
            };
            match dialled {
                Err(why) => {
                    ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let text = ctx.dial_error(port, &why);
                    let _ = out.send(data_frame(error, false, text.as_bytes())).await;
                }
                Ok(socket) => {
                    ctx.counters.connections.fetch_add(1, Ordering::Relaxed);
                    let to_client = |chunk: Bytes| data_frame(data, false, &chunk);
                    tokio::select! {
                        () = pump(socket, from_client, &out, to_client, &ctx.counters) => {}
                        () = cancel.cancelled() => {}
                    }
                }
            }
            let _ = out.send(data_frame(data, true, &[])).await;
            let _ = out.send(data_frame(error, true, &[])).await;
            request
        });
    }

    async fn data(&mut self, stream_id: u32, fin: bool, data: Bytes) {
        let Some((request, Kind::Data)) = self.streams.get(&stream_id) else {
            // The error stream carries nothing from the client but its FIN.
            return;
        };
        let Some(pair) = self.pairs.get_mut(request) else {
            return;
        };
        if !data.is_empty()
            && let Some(to_pod) = &pair.to_pod
        {
            self.ctx
                .counters
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            // Waits while the pod is slow: backpressure to the client's TCP,
            // for every connection of the session. A pod that takes nothing
            // for POD_STALL loses its connection instead.
            let budget = &self.budget;
            let sent = async {
                let chunk = budget.take(data).await.ok_or(())?;
                to_pod.send(chunk).await.map_err(|_| ())
            };
            match tokio::time::timeout(POD_STALL, sent).await {
                Ok(Ok(())) => {}
                Ok(Err(())) => pair.to_pod = None,
                Err(_) => {
                    pair.to_pod = None;
                    if let Some(cancel) = &pair.cancel {
                        cancel.cancel();
                    }
                    let streams = [pair.data, pair.error];
                    for id in streams.into_iter().flatten() {
                        self.send(spdy::rst_stream_frame(id, status::CANCEL)).await;
                    }
                    return;
                }
            }
        }
        if fin {
            pair.to_pod = None;
        }
    }

    /// The client reset a stream (kubectl's CANCEL after every connection):
    /// its connection ends.
    fn reset(&mut self, stream_id: u32) {
        let Some((request, _)) = self.streams.get(&stream_id) else {
            return;
        };
        let request = request.clone();
        let unpaired = match self.pairs.get_mut(&request) {
            Some(pair) => {
                pair.to_pod = None;
                match &pair.cancel {
                    Some(cancel) => {
                        cancel.cancel();
                        false
                    }
                    None => true,
                }
            }
            None => false,
        };
        // Never paired: no task runs that would forget it later.
        if unpaired {
            self.forget(&request);
        }
    }

    /// The connection of `request` is over: its streams are forgotten.
    fn forget(&mut self, request: &str) {
        if let Some(pair) = self.pairs.remove(request) {
            for id in [pair.error, pair.data].into_iter().flatten() {
                self.streams.remove(&id);
            }
        }
        self.ctx
            .counters
            .open
            .store(self.pairs.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use futures::channel::mpsc as fmpsc;

    use super::*;
    use crate::enter::netns::NetnsError;
    use crate::portforward::Counters;
    use crate::portforward::dialer::Dialer;
    use crate::process::ContainerProcess;

    fn headers(kind: &str, port: u16, request: &str) -> spdy::Headers {
        [
            ("streamtype", kind),
            ("port", &port.to_string()),
            ("requestid", request),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    /// The frames the agent sent, decoded as a client would.
    struct Client {
        to_agent: mpsc::UnboundedSender<Result<Bytes, std::convert::Infallible>>,
        from_agent: fmpsc::Receiver<Bytes>,
        decoder: Decoder,
        encoder: Encoder,
    }

    impl Client {
        fn send(&self, frame: Bytes) {
            self.to_agent.send(Ok(frame)).unwrap();
        }

        async fn next(&mut self) -> Frame {
            loop {
                if let Some(frame) = self.decoder.next_frame().unwrap() {
                    return frame;
                }
                let bytes = self.from_agent.next().await.expect("the agent wrote more");
                self.decoder.extend(&bytes);
            }
        }

        /// Opens a connection to `port` as kubectl does: error, then data.
        async fn open(&mut self, error: u32, port: u16, request: &str) {
            let frame = self
                .encoder
                .syn_stream(error, &headers("error", port, request));
            self.send(frame);
            let frame = self
                .encoder
                .syn_stream(error + 2, &headers("data", port, request));
            self.send(frame);
            for id in [error, error + 2] {
                assert!(
                    matches!(self.next().await, Frame::SynReply { stream_id, .. } if stream_id == id)
                );
            }
        }
    }

    /// The session in this process's own network namespace (a plain thread
    /// may join it; unit tests may lack CAP_SYS_ADMIN, then nothing runs).
    async fn session() -> Option<(Client, tokio::task::JoinHandle<Ended>)> {
        session_until(std::future::pending()).await
    }

    /// The session, ended by `stop` as the agent ends it.
    async fn session_until(
        stop: impl Future<Output = Ended> + Send + 'static,
    ) -> Option<(Client, tokio::task::JoinHandle<Ended>)> {
        let dialer = match Dialer::start(ContainerProcess::this_one(), None).await {
            Ok(dialer) => dialer,
            Err(NetnsError::Setns(rustix::io::Errno::PERM)) => return None,
            Err(err) => panic!("{err:?}"),
        };
        let ctx = Context {
            dialer: Arc::new(dialer),
            counters: Arc::new(Counters::default()),
            pod: "shop/web".into(),
            uid: "u1".into(),
        };
        let (to_agent, incoming) = mpsc::unbounded_channel();
        let (sink, from_agent) = fmpsc::channel(16);
        let incoming = tokio_stream_of(incoming);
        let served = tokio::spawn(serve(incoming, sink, ctx, stop));
        let client = Client {
            to_agent,
            from_agent,
            decoder: Decoder::default(),
            encoder: Encoder::default(),
        };
        Some((client, served))
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut receiver: mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> + Unpin {
        Box::pin(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
    }

    /// A tunnel driven frame by frame; `frames` holds what it sent.
    async fn tunnel() -> Option<(Tunnel, mpsc::Receiver<Bytes>)> {
        let dialer = match Dialer::start(ContainerProcess::this_one(), None).await {
            Ok(dialer) => dialer,
            Err(NetnsError::Setns(rustix::io::Errno::PERM)) => return None,
            Err(err) => panic!("{err:?}"),
        };
        let ctx = Context {
            dialer: Arc::new(dialer),
            counters: Arc::new(Counters::default()),
            pod: "shop/web".into(),
            uid: "u1".into(),
        };
        let (out, frames) = mpsc::channel(OUTGOING_FRAMES);
        let tunnel = Tunnel {
            ctx,
            out,
            encoder: Encoder::default(),
            streams: HashMap::new(),
            pairs: HashMap::new(),
            tasks: JoinSet::new(),
            last_stream: 0,
            budget: ClientBudget::default(),
        };
        Some((tunnel, frames))
    }

    /// The review's memory attack: the client's bytes were bounded per
    /// connection in chunks (8 of up to 16 MiB), times 1024 connections.
    /// Now the session's bytes in flight to pods stay within CLIENT_BUDGET;
    /// the connections past it are reset once their pod stalls.
    #[tokio::test(start_paused = true)]
    async fn the_client_s_bytes_in_flight_are_bounded_per_session() {
        let Some((mut tunnel, mut frames)) = tunnel().await else {
            return;
        };
        // 16 connections whose pods never read (the test holds their queues).
        let mut queues = Vec::new();
        for i in 0..16u32 {
            let (to_pod, queue) = mpsc::channel(CLIENT_CHUNKS);
            let (error, data) = (4 * i + 1, 4 * i + 3);
            tunnel.pairs.insert(
                i.to_string(),
                Pair {
                    port: 80,
                    error: Some(error),
                    data: Some(data),
                    to_pod: Some(to_pod),
                    cancel: None,
                },
            );
            tunnel.streams.insert(error, (i.to_string(), Kind::Error));
            tunnel.streams.insert(data, (i.to_string(), Kind::Data));
            queues.push(queue);
        }
        let chunk = Bytes::from(vec![b'x'; spdy::MAX_FRAME]);
        let mut resets = 0;
        for _ in 0..CLIENT_CHUNKS {
            for i in 0..16u32 {
                tunnel.data(4 * i + 3, false, chunk.clone()).await;
                while let Ok(frame) = frames.try_recv() {
                    let mut decoder = Decoder::default();
                    decoder.extend(&frame);
                    if let Ok(Some(Frame::RstStream { .. })) = decoder.next_frame() {
                        resets += 1;
                    }
                }
            }
        }
        let queued: usize = queues.iter().map(|q| q.len() * spdy::MAX_FRAME).sum();
        assert!(
            queued <= super::super::CLIENT_BUDGET,
            "{queued} bytes queued"
        );
        assert!(resets > 0, "no stalled connection was reset");
    }

    /// The review's leak: a stream id reused with a new requestid each time
    /// was refused but left its (large) requestid behind, uncounted.
    #[tokio::test]
    async fn refused_streams_leave_nothing_behind() {
        let Some((mut tunnel, mut frames)) = tunnel().await else {
            return;
        };
        let mut decoder = Decoder::default();
        tunnel.open_stream(1, &headers("error", 80, "0")).await;
        decoder.extend(&frames.recv().await.unwrap());
        assert!(matches!(
            decoder.next_frame().unwrap(),
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        let long = "A".repeat(60 * 1024);
        for (i, request) in [format!("{long}1"), "2".into(), format!("{long}3")]
            .into_iter()
            .chain((4..3000).map(|i| i.to_string()))
            .enumerate()
        {
            tunnel.open_stream(1, &headers("error", 80, &request)).await;
            decoder.extend(&frames.recv().await.unwrap());
            assert_eq!(
                decoder.next_frame().unwrap(),
                Some(Frame::RstStream {
                    stream_id: 1,
                    status: status::PROTOCOL_ERROR
                }),
                "repeat {i}"
            );
        }
        assert_eq!(tunnel.pairs.len(), 1);
        assert_eq!(tunnel.streams.len(), 1);

        // A requestid longer than any client's is refused on a new stream too.
        tunnel
            .open_stream(3, &headers("error", 80, &"7".repeat(64)))
            .await;
        decoder.extend(&frames.recv().await.unwrap());
        assert_eq!(
            decoder.next_frame().unwrap(),
            Some(Frame::RstStream {
                stream_id: 3,
                status: status::PROTOCOL_ERROR
            })
        );
        assert_eq!(tunnel.pairs.len(), 1);
    }

    /// The review's hang: a pod that never reads stalled the frame loop on
    /// its full queue, and the agent's stop (shutdown, longest session) was
    /// never looked at; the session, its slot and the user's quota stayed.
    #[tokio::test]
    async fn a_pod_that_never_reads_cannot_hold_the_session_past_its_stop() {
        let (fire, stopped) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = stopped.await;
            Ended::Shutdown
        };
        let Some((mut client, served)) = session_until(stop).await else {
            return;
        };
        // Connections complete in the backlog; nothing is ever accepted.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        client.open(1, port, "0").await;
        // One piece: a PING, then 64 MiB for the pod, far more than its
        // socket buffers hold. The echoed PING says the agent is inside it.
        let mut piece = spdy::ping_frame(1).to_vec();
        for _ in 0..2048 {
            piece.extend_from_slice(&data_frame(3, false, &[b'x'; 32 * 1024]));
        }
        client.send(Bytes::from(piece));
        assert_eq!(client.next().await, Frame::Ping { id: 1 });

        fire.send(()).unwrap();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(20), served)
            .await
            .expect("the session ended at the agent's stop")
            .unwrap();
        assert_eq!(ended, Ended::Shutdown);
        loop {
            if let Frame::GoAway { .. } = client.next().await {
                break;
            }
        }
        drop(listener);
    }

    /// A pod that never reads stalled every connection of the session (and
    /// kept it from seeing the client hang up): now only its own connection
    /// is reset, once it took nothing for POD_STALL.
    #[tokio::test(start_paused = true)]
    async fn a_pod_that_never_reads_loses_its_connection_not_the_session() {
        let Some((mut client, served)) = session().await else {
            return;
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        client.open(1, port, "0").await;
        let mut piece = Vec::new();
        for _ in 0..2048 {
            piece.extend_from_slice(&data_frame(3, false, &[b'x'; 32 * 1024]));
        }
        piece.extend_from_slice(&spdy::ping_frame(2));
        client.send(Bytes::from(piece));
        let mut reset = Vec::new();
        let echoed = tokio::time::timeout(std::time::Duration::from_secs(600), async {
            loop {
                match client.next().await {
                    Frame::Ping { id: 2 } => break,
                    Frame::RstStream { stream_id, status } => reset.push((stream_id, status)),
                    _ => {}
                }
            }
        })
        .await;
        assert!(echoed.is_ok(), "the session went on after the stalled pod");
        assert!(reset.contains(&(3, status::CANCEL)), "{reset:?}");
        client.send(spdy::goaway_frame(0));
        assert_eq!(served.await.unwrap(), Ended::ClientClosed);
        drop(listener);
    }

    #[tokio::test]
    async fn pings_are_echoed_connections_carried_and_refusals_reported() {
        let Some((mut client, served)) = session().await else {
            return;
        };
        client.send(spdy::ping_frame(7));
        assert_eq!(client.next().await, Frame::Ping { id: 7 });

        // A listener that answers what it read, then closes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut asked = [0u8; 4];
            socket.read_exact(&mut asked).unwrap();
            socket.write_all(&[&asked[..], b"!"].concat()).unwrap();
        });
        client.open(1, port, "0").await;
        client.send(data_frame(3, false, b"ping"));
        let mut answer = Vec::new();
        let fins = loop {
            match client.next().await {
                Frame::Data {
                    stream_id: 3,
                    flags: 0,
                    data,
                } => answer.extend_from_slice(&data),
                Frame::Data {
                    stream_id: 3,
                    flags: spdy::FLAG_FIN,
                    data,
                } if data.is_empty() => {
                    break client.next().await;
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(answer, b"ping!");
        assert!(matches!(
            fins,
            Frame::Data {
                stream_id: 1,
                flags: spdy::FLAG_FIN,
                ..
            }
        ));
        server.join().unwrap();

        // Nothing listens on a port just freed: the kubelet's words.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        client.open(5, closed, "1").await;
        let Frame::Data {
            stream_id: 5, data, ..
        } = client.next().await
        else {
            panic!("no error text");
        };
        let text = String::from_utf8(data.to_vec()).unwrap();
        assert!(
            text.starts_with(&format!(
                "error forwarding port {closed} to pod shop/web, uid u1: IPv4: dial tcp4 127.0.0.1:{closed}: connect: connection refused"
            )),
            "{text}"
        );

        // A stream without a port is refused; GOAWAY ends the session.
        let frame = client
            .encoder
            .syn_stream(9, &vec![("streamtype".into(), "data".into())]);
        client.send(frame);
        loop {
            if let Frame::RstStream {
                stream_id: 9,
                status,
            } = client.next().await
            {
                assert_eq!(status, status::PROTOCOL_ERROR);
                break;
            }
        }
        client.send(spdy::goaway_frame(0));
        assert_eq!(served.await.unwrap(), Ended::ClientClosed);
    }
}
