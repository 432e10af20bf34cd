//! Frames of the inter-node port: `len u32 | id u64 | kind u8 | group u64 | payload`,
//! big-endian, `len` counting everything after itself. A response carries its
//! request's id and kind with [`RESPONSE`] set; payloads are postcard-encoded openraft
//! messages (a response: `Result<message, String>`).

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{LogId, Vote};

/// The largest frame accepted. An append RPC carries at most
/// [`crate::network::MAX_PAYLOAD_ENTRIES`] entries of at most 8 MiB each.
pub const MAX_FRAME: usize = 272 << 20;

/// Bytes of a frame's header after its length.
const HEADER: usize = 8 + 1 + 8;

/// Set in the kind of a response.
pub const RESPONSE: u8 = 0x80;

/// What a frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `AppendEntriesRequest`.
    Append = 1,
    /// `VoteRequest`.
    Vote = 2,
    /// `VoteRequest` of a pre-vote.
    PreVote = 3,
    /// A piece of a snapshot's file ([`Chunk`]).
    SnapshotChunk = 4,
    /// The end of a snapshot's transfer ([`SnapshotDone`]).
    SnapshotDone = 5,
    /// `TransferLeaderRequest`.
    TransferLeader = 6,
    /// A client write forwarded to the group's leader ([`crate::partition::Proposal`]).
    Propose = 7,
    /// A replica rebuilt after damage asks the group's leader to replicate to it from
    /// the beginning (the node id, `u64`): its log is shorter than the leader last saw.
    AllowRevert = 8,
    /// A cluster administration request (`crate::cluster::admin`), group ignored: add,
    /// remove, rebalance, transfer leadership, or a restarting node's check.
    Admin = 9,
    /// A leader asks a follower to let idle groups rest ([`RestRequest`], group
    /// ignored); the answer lists the groups that agreed (see [`super::rest`]).
    Rest = 10,
    /// Is the node there? Answered at once with a [`PingAnswer`] (group ignored): the
    /// failure detector of groups at rest. The payload lists groups to wake that rest
    /// as led by the receiver (a follower of theirs woke alone).
    Ping = 11,
}

impl Kind {
    /// The kind of a request byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Append,
            2 => Kind::Vote,
            3 => Kind::PreVote,
            4 => Kind::SnapshotChunk,
            5 => Kind::SnapshotDone,
            6 => Kind::TransferLeader,
            7 => Kind::Propose,
            8 => Kind::AllowRevert,
            9 => Kind::Admin,
            10 => Kind::Rest,
            11 => Kind::Ping,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Matches a response to its request, per connection.
    pub id: u64,
    /// A [`Kind`], with [`RESPONSE`] set in a response.
    pub kind: u8,
    /// The Raft group it concerns.
    pub group: u64,
    /// The encoded message.
    pub payload: Vec<u8>,
}

/// Groups whose leader (the sender) would let them rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestRequest {
    /// The leader's node id.
    pub leader: u64,
    /// The groups, each at the leader's term and last (committed) index.
    pub groups: Vec<RestAsk>,
}

/// The answer to a [`Kind::Ping`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingAnswer {
    /// Groups of the answering node whose Raft stopped: the followers resting under it
    /// elect another leader.
    pub stopped: Vec<u64>,
    /// The answering node is shutting down: it counts as gone.
    pub leaving: bool,
}

/// One group of a [`RestRequest`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RestAsk {
    /// The group.
    pub group: u64,
    /// The leader's term.
    pub term: u64,
    /// The leader's last index, committed.
    pub index: u64,
}

/// A piece of one file of a snapshot being sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    /// Names the transfer (the snapshot directory's name on the sender).
    pub key: String,
    /// A plain file name inside the snapshot directory.
    pub file: String,
    /// Where `data` goes in the file.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// The end of a snapshot's transfer: install what was received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotDone {
    /// The transfer's key, as in its chunks.
    pub key: String,
    /// The leader's vote.
    pub vote: Vote,
    /// The snapshot's meta.
    pub meta: openraft::alias::SnapshotMetaOf<crate::TypeConfig>,
    /// Every file of the snapshot with its length, to check nothing is missing.
    pub files: Vec<(String, u64)>,
    /// The id of the last entry the snapshot covers (also in `meta`), for logs.
    pub last: Option<LogId>,
}

/// Reads one frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(HEADER..=MAX_FRAME).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("inter-node frame of {len} bytes (limits {HEADER}..={MAX_FRAME})"),
        ));
    }
    let mut header = [0u8; HEADER];
    r.read_exact(&mut header).await?;
    let (id, rest) = header.split_at(8);
    let (kind, group) = rest.split_at(1);
    let mut payload = vec![0u8; len - HEADER];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame {
        id: u64::from_be_bytes(id.try_into().unwrap_or_default()),
        kind: kind.first().copied().unwrap_or_default(),
        group: u64::from_be_bytes(group.try_into().unwrap_or_default()),
        payload,
    }))
}

/// Writes one frame (without flushing).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> io::Result<()> {
    let len = HEADER + f.payload.len();
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inter-node frame of {len} bytes over the limit of {MAX_FRAME}"),
        ));
    }
    let mut header = Vec::with_capacity(4 + HEADER);
    header.extend_from_slice(&(len as u32).to_be_bytes());
    header.extend_from_slice(&f.id.to_be_bytes());
    header.push(f.kind);
    header.extend_from_slice(&f.group.to_be_bytes());
    w.write_all(&header).await?;
    w.write_all(&f.payload).await
}

/// Encodes a message.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Decodes a message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
    use openraft::EntryPayload;

    use super::*;
    use crate::{Command, Entry, TypeConfig};

    fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(v: &T) -> T {
        decode(&encode(v).unwrap()).unwrap()
    }

    #[test]
    fn openraft_messages_round_trip() {
        let id = LogId::new(
            LeaderId {
                term: 3,
                node_id: 2,
            },
            9,
        );
        let vote = Vote::new(3, 2);
        let req = VoteRequest::<TypeConfig>::new(vote, Some(id));
        assert_eq!(format!("{:?}", round_trip(&req)), format!("{req:?}"));
        let resp = VoteResponse::<TypeConfig>::new(vote, Some(id), true);
        assert_eq!(format!("{:?}", round_trip(&resp)), format!("{resp:?}"));
        let append = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: Some(id),
            leader_commit: Some(id),
            entries: vec![Entry {
                log_id: LogId::new(
                    LeaderId {
                        term: 3,
                        node_id: 2,
                    },
                    10,
                ),
                payload: EntryPayload::Normal(Command::Append(vec![1, 2, 3])),
            }],
        };
        assert_eq!(format!("{:?}", round_trip(&append)), format!("{append:?}"));
        let ok: Result<AppendEntriesResponse<TypeConfig>, String> =
            Ok(AppendEntriesResponse::Success);
        assert_eq!(format!("{:?}", round_trip(&ok)), format!("{ok:?}"));
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let f = Frame {
            id: 7,
            kind: Kind::Vote as u8 | RESPONSE,
            group: 3,
            payload: vec![5; 100],
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &f).await.unwrap();
        let mut rd = &buf[..];
        assert_eq!(read_frame(&mut rd).await.unwrap(), Some(f));
        assert_eq!(read_frame(&mut rd).await.unwrap(), None);
        let mut huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 32]);
        assert!(read_frame(&mut &huge[..]).await.is_err());
        let mut short = 3u32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 3]);
        assert!(read_frame(&mut &short[..]).await.is_err());
    }
}
