"""LAN peer-to-peer: DNS-SD over mDNS discovery (python-zeroconf) and WebSocket sessions."""

from ._peers import Candidate, PeerTable, dials, keeps
from ._transport import LanTransport, default_address
from ._txt import SERVICE_TYPE, TxtError, TxtRecord, new_token, parse_txt

__all__ = ["SERVICE_TYPE", "Candidate", "LanTransport", "PeerTable", "TxtError", "TxtRecord",
           "default_address", "dials", "keeps", "new_token", "parse_txt"]
