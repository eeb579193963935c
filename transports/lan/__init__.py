"""LAN peer-to-peer: DNS-SD over mDNS discovery (python-zeroconf) and WebSocket sessions."""

from ._interfaces import Interface, InterfaceError, default_address, interfaces, resolve_interfaces
from ._peers import Candidate, PeerTable, dials, keeps
from ._transport import LanTransport
from ._txt import SERVICE_TYPE, TxtError, TxtRecord, new_token, parse_txt

__all__ = ["SERVICE_TYPE", "Candidate", "Interface", "InterfaceError", "LanTransport", "PeerTable",
           "TxtError", "TxtRecord", "default_address", "dials", "interfaces", "keeps", "new_token",
           "parse_txt", "resolve_interfaces"]
