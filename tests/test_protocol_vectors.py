"""docs/PROTOCOL.md's test vectors are what the implementation sends, and they decode."""

from pathlib import Path

from crdt_sync.protocol.messages import decode, encode
from tests.protocol_vectors import markdown, vectors

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def test_doc_holds_the_current_vectors() -> None:
    text = DOC.read_text()
    block = text.split("<!-- vectors:begin -->")[1].split("<!-- vectors:end -->")[0].strip()
    assert block == markdown(), "regenerate with: python -m tests.protocol_vectors"


def test_every_vector_round_trips() -> None:
    for _name, _what, frame in vectors():
        assert encode(decode(frame)) == frame


def test_the_link_vectors_are_what_a_session_computes(tmp_path: Path) -> None:
    """The key schedule of the docs is the implementation's: a session with the pinned
    ephemeral secret and nonce sends that HELLO, and its link seals AUTH to the SEALED vector."""
    from crdt_sync import Replica
    from crdt_sync.protocol import Session
    from crdt_sync.protocol.link import Link, public_of
    from tests import protocol_vectors as pv

    frames = {name: frame for name, _, frame in vectors()}
    steps = dict(pv.link_vectors())
    replica = Replica(tmp_path / "r")
    try:
        session = Session(replica.sync_host, 0.0, nonce=pv.NONCE_A, ephemeral=pv.EPHEMERAL_A)
        assert session.start() == [frames["HELLO"]]
        session.receive(frames["HELLO (Bob)"], 0.0)
        assert session.link is not None
        assert session.link.inspect(steps["SEALED: Bob's PING 7, counter 1, under Bob's key"]) == \
            encode(decode(bytes.fromhex("8206" + "07")))
    finally:
        replica.close()
    t = steps["T (transcript of the two HELLOs above)"]
    hello_a, hello_b = frames["HELLO"], frames["HELLO (Bob)"]
    link = Link.establish(pv.EPHEMERAL_A, public_of(pv.EPHEMERAL_B), t, hello_a, hello_b)
    assert link.seal(frames["AUTH"]) == frames["SEALED"]
    bob = Link.establish(pv.EPHEMERAL_B, public_of(pv.EPHEMERAL_A), t, hello_b, hello_a)
    assert bob.open(frames["SEALED"]) == frames["AUTH"]
