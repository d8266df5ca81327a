//! The blob protocol target: the bytes a paired phone sends on iroh-blobs' ALPN
//! (`/iroh-bytes/4`), through the very handler the desktop serves them with
//! (`iroh_blobs::provider::handle_stream`, with the desktop's own request policy,
//! `deskhand_sync::blobs::desktop_blob_events`: single-blob gets only), over a store holding a
//! few blobs. The desktop's gate in front of it (paired devices only, `sync/src/blobs.rs`) is
//! tested in the e2e tests.
//!
//! The store here is iroh-blobs' memory store; the desktop uses its file store behind the same
//! request handling. What must hold beyond "no panic":
//! - the handler ends: no request makes the desktop wait on its own;
//! - what it sends is bounded by what was asked: for a requested blob at most its bytes and
//!   their verification tree, nothing for a blob the store lacks, nothing but a refusal for
//!   the requests the desktop does not serve (get-many, observe, push, a get past the blob);
//! - the store is unchanged (no push lands, no entry is made for a hash asked about).

#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use iroh::endpoint::VarInt;
use iroh_blobs::Hash;
use iroh_blobs::protocol::{
    ChunkRangesSeq, GetManyRequest, GetRequest, ObserveRequest, PushRequest, Request,
};
use iroh_blobs::provider::{StreamPair, handle_stream};
use iroh_blobs::store::mem::MemStore;
use iroh_blobs::util::SendStream;

/// Sizes of the blobs the store holds: empty, under one chunk, several chunk groups.
const SIZES: [usize; 3] = [0, 1000, 100_000];

struct Fixture {
    rt: tokio::runtime::Runtime,
    store: MemStore,
    hashes: Vec<(Hash, usize)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (store, hashes) = rt.block_on(async {
            let store = MemStore::new();
            let mut hashes = Vec::new();
            for (i, size) in SIZES.iter().enumerate() {
                let data: Vec<u8> = (0..*size).map(|j| (j * 31 + i) as u8).collect();
                let tag = store.add_bytes(data).await.unwrap();
                hashes.push((tag.hash, *size));
            }
            (store, hashes)
        });
        Fixture { rt, store, hashes }
    })
}

/// The stream the desktop answers on: counts what is sent.
#[derive(Default)]
struct Sink {
    sent: u64,
}

impl SendStream for Sink {
    async fn send_bytes(&mut self, bytes: Bytes) -> io::Result<()> {
        self.sent += bytes.len() as u64;
        Ok(())
    }
    async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        self.sent += buf.len() as u64;
        Ok(())
    }
    async fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn reset(&mut self, _code: VarInt) -> io::Result<()> {
        Ok(())
    }
    async fn stopped(&mut self) -> io::Result<Option<VarInt>> {
        std::future::pending().await
    }
    fn id(&self) -> u64 {
        0
    }
}

/// The most a blob of `size` bytes can take on the wire, its verification tree included: the
/// size prefix, the data, and a 64-byte parent node per 16 KiB chunk group (bao, iroh-blobs'
/// chunk group size), with room to spare.
fn wire_bound(size: usize) -> u64 {
    8 + size as u64 + 64 * (size as u64 / 16_384 + 2) * 2
}

/// The fuzz target: any bytes, as the request stream of one blob-protocol stream.
pub fn blob_protocol(data: &[u8]) {
    blob_protocol_sent(data);
}

/// [`blob_protocol`], returning how many bytes the desktop sent back.
pub fn blob_protocol_sent(data: &[u8]) -> u64 {
    let f = fixture();
    f.rt.block_on(async {
        let parsed = Request::read_async(&mut Bytes::copy_from_slice(data))
            .await
            .ok()
            .map(|(r, _)| r);
        let known = |h: &Hash| f.hashes.iter().find(|(k, _)| k == h).map(|(_, s)| *s);
        // A request the desktop does not serve gets a refusal: a stream reset, nothing sent.
        let bound = match &parsed {
            Some(Request::Get(g)) => known(&g.hash).map_or(0, wire_bound) + 1024,
            _ => 1024,
        };
        let before = f.store.list().hashes().await.unwrap().len();
        let mut sink = Sink::default();
        let pair = StreamPair::new(
            0,
            Bytes::copy_from_slice(data),
            &mut sink,
            deskhand_sync::blobs::desktop_blob_events(),
        );
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            handle_stream(pair, f.store.clone().into()),
        )
        .await
        .is_ok();
        assert!(
            ended,
            "the blob handler did not end on a {parsed:?} request"
        );
        assert!(
            sink.sent <= bound,
            "the blob handler sent {} bytes for a {parsed:?} request (at most {bound})",
            sink.sent
        );
        let after = f.store.list().hashes().await.unwrap().len();
        assert_eq!(
            before, after,
            "a blob request changed the store: {parsed:?}"
        );
        sink.sent
    })
}

/// The seed corpus: well-formed requests of every kind a phone can send, for the blobs the
/// fixture's store holds and for one it lacks (file name, request bytes as they travel).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let f = fixture();
    let unknown = Hash::new(b"not in the store");
    let mut out = Vec::new();
    let enc = |r: &Request| postcard::to_stdvec(r).unwrap();
    for (i, (h, _)) in f.hashes.iter().enumerate() {
        out.push((format!("get_blob_{i}"), enc(&GetRequest::blob(*h).into())));
        out.push((format!("get_all_{i}"), enc(&GetRequest::all(*h).into())));
        out.push((format!("observe_{i}"), enc(&ObserveRequest::new(*h).into())));
    }
    out.push(("get_unknown".into(), enc(&GetRequest::blob(unknown).into())));
    let mut hashes: Vec<Hash> = f.hashes.iter().map(|(h, _)| *h).collect();
    hashes.push(unknown);
    hashes.push(f.hashes[2].0);
    out.push((
        "get_many".into(),
        enc(&GetManyRequest {
            hashes,
            ranges: ChunkRangesSeq::all(),
        }
        .into()),
    ));
    // A push: the request type, then the request length-prefixed, then (missing) data.
    let push = postcard::to_stdvec(&PushRequest::new(unknown, ChunkRangesSeq::all())).unwrap();
    let mut bytes = enc(&Request::Push(PushRequest::new(
        unknown,
        ChunkRangesSeq::all(),
    )));
    bytes.truncate(1);
    bytes.extend(postcard::to_stdvec(&(push.len() as u64)).unwrap());
    bytes.extend(push);
    out.push(("push".into(), bytes));
    out
}
