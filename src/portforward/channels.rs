//! The WebSocket channel form of port-forward (`v4.channel.k8s.io`), as the
//! kubelet serves it (`pkg/kubelet/cri/streaming/portforward/websocket.go`):
//! the ports are in the query, and port `i` gets one connection, on
//! channels `2i` (data) and `2i+1` (error). Right after the upgrade both
//! channels of every port carry the port as 2 bytes little-endian; after
//! that, data both ways on `2i` and a dial failure's text on `2i+1`. The
//! session ends when every connection has ended.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::{Sink, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::tunnel::Ended;
use super::{CLIENT_CHUNKS, ClientBudget, Context, POD_STALL, pump};

/// Channel ids are one byte: 128 ports at most.
pub const MAX_PORTS: usize = 128;

/// Serves one channel-form session for `ports`: client messages arrive as
/// (channel, data) on `incoming` (which ends when the client closes), the
/// agent's go out on `sink`.
pub async fn serve<I, W>(
    mut incoming: I,
    sink: W,
    ports: Vec<u16>,
    ctx: Context,
    stop: impl Future<Output = Ended>,
) -> Ended
where
    I: Stream<Item = (u8, Bytes)> + Unpin,
    W: Sink<(u8, Bytes)> + Unpin + Send + 'static,
{
    // Every port's connection stays open until the session ends.
    ctx.counters
        .open
        .store(ports.len() as u64, Ordering::Relaxed);
    let (out, outgoing) = mpsc::channel(64);
    let writer = tokio::spawn(super::write_all(outgoing, sink));
    let mut to_pod = Vec::new();
    let mut tasks = JoinSet::new();
    let mut aborts = Vec::new();
    for (index, &port) in ports.iter().take(MAX_PORTS).enumerate() {
        let (data, error) = (2 * index as u8, 2 * index as u8 + 1);
        let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
        let _ = out.send((data, prefix.clone())).await;
        let _ = out.send((error, prefix)).await;
        ctx.counters.port(port);
        let (sender, from_client) = mpsc::channel(CLIENT_CHUNKS);
        to_pod.push(Some(sender));
        let (ctx, out) = (ctx.clone(), out.clone());
        aborts.push(tasks.spawn(async move {
            match ctx.dialer.dial(port).await {
                Err(why) => {
                    ctx.counters.failed.fetch_add(1, Ordering::Relaxed);
                    let text = ctx.dial_error(port, &why);
                    let _ = out.send((error, Bytes::from(text))).await;
                }
                Ok(socket) => {
                    ctx.counters.connections.fetch_add(1, Ordering::Relaxed);
                    pump(
                        socket,
                        from_client,
                        &out,
                        |chunk| (data, chunk),
                        &ctx.counters,
                    )
                    .await;
                }
            }
        }));
    }
    let budget = ClientBudget::default();
    let run = async {
        loop {
            tokio::select! {
                message = incoming.next() => match message {
                    Some((channel, data)) => {
                        let index = usize::from(channel / 2);
                        if channel % 2 != 0 || data.is_empty() {
                            continue;
                        }
                        let Some(Some(sender)) = to_pod.get(index) else { continue };
                        ctx.counters.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                        let sent = async {
                            let chunk = budget.take(data).await?;
                            sender.send(chunk).await.ok()
                        };
                        match tokio::time::timeout(POD_STALL, sent).await {
                            Ok(Some(())) => {}
                            Ok(None) => to_pod[index] = None,
                            // The pod's connection ends, not the session.
                            Err(_) => {
                                to_pod[index] = None;
                                aborts[index].abort();
                                let text = ctx.dial_error(
                                    ports[index],
                                    &format!("the pod took none of the client's bytes for {POD_STALL:?}"),
                                );
                                let _ = out.try_send((channel + 1, Bytes::from(text)));
                            }
                        }
                    }
                    None => break Ended::ClientClosed,
                },
                done = tasks.join_next() => if done.is_none() || tasks.is_empty() {
                    break Ended::Done;
                },
            }
        }
    };
    // A pod slow to read holds `sender.send`: `stop` races all of it.
    let ended = tokio::select! {
        ended = run => ended,
        ended = stop => ended,
    };
    drop(tasks);
    drop(out);
    let mut writer = writer;
    if tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    ended
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::channel::mpsc as fmpsc;

    use super::*;
    use crate::enter::netns::NetnsError;
    use crate::portforward::Counters;
    use crate::portforward::dialer::Dialer;
    use crate::process::ContainerProcess;

    /// The same pod held the loop in its send while the agent's stop
    /// (shutdown, longest session, idle) waited: now stop ends the session
    /// there, well before POD_STALL.
    #[tokio::test(start_paused = true)]
    async fn a_pod_that_never_reads_cannot_hold_the_session_past_its_stop() {
        let Some((ctx, listener)) = context().await else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let (sink, _from_agent) = fmpsc::channel(1024);
        let start = tokio::time::Instant::now();
        let stop = async {
            tokio::time::sleep(POD_STALL / 2).await;
            Ended::Shutdown
        };
        let ended = serve(Box::pin(never_read()), sink, vec![port], ctx, stop);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(600), ended).await;
        assert_eq!(ended.expect("the session ended"), Ended::Shutdown);
        assert!(start.elapsed() < POD_STALL, "{:?}", start.elapsed());
        drop(listener);
    }

    /// A context dialling from here, and a listener whose connections
    /// complete in the backlog and are never accepted.
    async fn context() -> Option<(Context, std::net::TcpListener)> {
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
        Some((ctx, std::net::TcpListener::bind("127.0.0.1:0").unwrap()))
    }

    /// 64 MiB for the pod on channel 0, then a client that stays.
    fn never_read() -> impl Stream<Item = (u8, Bytes)> {
        futures::stream::iter((0..2048).map(|_| (0u8, Bytes::from(vec![b'x'; 32 * 1024]))))
            .chain(futures::stream::pending())
    }

    /// A pod that never reads held the channel form's loop in its send:
    /// the other ports and the client's hang-up waited with it. Now its
    /// connection ends after POD_STALL, and with it this one-port session.
    #[tokio::test(start_paused = true)]
    async fn a_pod_that_never_reads_loses_its_connection() {
        let dialer = match Dialer::start(ContainerProcess::this_one(), None).await {
            Ok(dialer) => dialer,
            Err(NetnsError::Setns(rustix::io::Errno::PERM)) => return,
            Err(err) => panic!("{err:?}"),
        };
        let ctx = Context {
            dialer: Arc::new(dialer),
            counters: Arc::new(Counters::default()),
            pod: "shop/web".into(),
            uid: "u1".into(),
        };
        // Connections complete in the backlog; nothing is ever accepted.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // 64 MiB for the pod, then a client that stays.
        let incoming =
            futures::stream::iter((0..2048).map(|_| (0u8, Bytes::from(vec![b'x'; 32 * 1024]))))
                .chain(futures::stream::pending());
        let (sink, mut from_agent) = fmpsc::channel(1024);
        let served = tokio::spawn(serve(
            Box::pin(incoming),
            sink,
            vec![port],
            ctx,
            std::future::pending(),
        ));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(600), served).await;
        assert_eq!(ended.expect("the session ended").unwrap(), Ended::Done);
        let mut error_text = String::new();
        while let Ok((channel, text)) = from_agent.try_recv() {
            if channel == 1 {
                error_text.push_str(&String::from_utf8_lossy(&text));
            }
        }
        assert!(
            error_text.contains("took none of the client's bytes"),
            "{error_text:?}"
        );
        drop(listener);
    }
}
