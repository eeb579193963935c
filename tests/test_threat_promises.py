"""Promises of docs/THREAT_MODEL.md that no other test shows on its own.

- Towards a peer that is not a relay, a device names its spaces only by blinded ids
  (BLAKE2b-128 keyed by the session transcript), never by name.
- Forward secrecy: once the link's keys are made, the session keeps no ephemeral secret
  that could make them again.
"""

from __future__ import annotations

import os

from crdt_sync.protocol import Session
from crdt_sync.protocol.channel import Channel
from crdt_sync.protocol.handshake import blind, transcript
from crdt_sync.protocol.messages import BLIND_BYTES, PROTOCOL_VERSION, Have, Hello, Spaces, decode, encode
from tests.conftest import ReplicaFactory
from tests.link_helpers import HandPeer

NAME = "site-42-threat-model-3b7c"


def test_a_device_names_its_spaces_to_a_peer_only_by_blinded_ids(open_replica: ReplicaFactory) -> None:
    alice = open_replica("alice")
    space = alice.space(NAME).id
    session = Session(alice.sync_host, 0.0)
    session.defer_sealing()  # frames as the session makes them, before the channel seals them
    hello = session.start()[0]
    peer = HandPeer()  # a peer that does not announce {"relay": true}
    peer.on_hello(hello)
    frames = session.receive(peer.hello, 0.0)
    spaces = [m for m in map(decode, frames) if isinstance(m, Spaces)]
    assert len(spaces) == 1
    assert spaces[0].blinded == [blind(space, peer.transcript)]
    assert all(isinstance(b, bytes) and len(b) == BLIND_BYTES for b in spaces[0].blinded)
    assert all(NAME.encode() not in frame and space.encode() not in frame for frame in frames)
    # Another session blinds the same name differently: a listener cannot link the two.
    again = Session(alice.sync_host, 0.0)
    again.defer_sealing()
    other = HandPeer()
    other.on_hello(again.start()[0])
    later = [m for m in map(decode, again.receive(other.hello, 0.0)) if isinstance(m, Spaces)]
    assert later[0].blinded == [blind(space, other.transcript)] != spaces[0].blinded


def test_the_ephemeral_secret_is_let_go_once_the_link_is_up() -> None:
    channel = Channel()
    hello = encode(Hello(PROTOCOL_VERSION, PROTOCOL_VERSION, channel.public, os.urandom(32), {}))
    peer = HandPeer()
    peer.on_hello(hello)
    channel.establish(peer.public, transcript(hello, peer.hello), hello, peer.hello)
    assert channel.link is not None
    assert channel._secret is None  # nothing kept can recompute the link's keys
    inner = encode(Have(0, []))
    assert channel.link.inspect(peer.seal(inner)) == inner  # and the link works
