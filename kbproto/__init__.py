"""kbproto: the sans-IO kbucket protocol core.

Pure state machines (node handshake, index sync, lookup routing, proxy framing,
timers) and the ``.prv`` models. No I/O, no clock, no entropy: bytes and ``now`` in,
events and actions out. See ``docs/protocol.md``.

The public surface: ``HubCore`` and ``ShareCore`` (both ``NodeCore``), their frozen
configuration (``HubConfig``, ``ShareConfig``, ``Limits``, ``Timeouts``), the events
they emit (``kbproto.events``), the actions they ask for (``Transmit``, ``Dial``,
``Hangup``), the drain helper (``drain``), the errors, the ids and the injected
interfaces (``Signer``, ``Verifier``, ``IdSource``, ``TraceSink``).
"""

from __future__ import annotations

from kbproto.actions import Action as Action
from kbproto.actions import Dial as Dial
from kbproto.actions import Hangup as Hangup
from kbproto.actions import Transmit as Transmit
from kbproto.auth import SignatureScheme as SignatureScheme
from kbproto.auth import Signer as Signer
from kbproto.auth import Verifier as Verifier
from kbproto.auth import node_id_from_public_pem as node_id_from_public_pem
from kbproto.config import HubConfig as HubConfig
from kbproto.config import Limits as Limits
from kbproto.config import ShareConfig as ShareConfig
from kbproto.config import Timeouts as Timeouts
from kbproto.core import NodeCore as NodeCore
from kbproto.errors import LimitExceeded as LimitExceeded
from kbproto.errors import LocalProtocolError as LocalProtocolError
from kbproto.errors import ProtocolError as ProtocolError
from kbproto.errors import RemoteProtocolError as RemoteProtocolError
from kbproto.events import Event as Event
from kbproto.hub import HubCore as HubCore
from kbproto.ids import IdSource as IdSource
from kbproto.ids import LinkId as LinkId
from kbproto.ids import LookupId as LookupId
from kbproto.ids import NodeId as NodeId
from kbproto.ids import SeededIdSource as SeededIdSource
from kbproto.ids import Sha1 as Sha1
from kbproto.ids import StreamId as StreamId
from kbproto.messages import FindResult as FindResult
from kbproto.messages import NodeInfo as NodeInfo
from kbproto.pump import Drained as Drained
from kbproto.pump import drain as drain
from kbproto.share import ShareCore as ShareCore
from kbproto.trace import TraceRecord as TraceRecord
from kbproto.trace import TraceSink as TraceSink

__version__ = "0.1.0"

__all__ = (
    "Action",
    "Dial",
    "Drained",
    "Event",
    "FindResult",
    "Hangup",
    "HubConfig",
    "HubCore",
    "IdSource",
    "LimitExceeded",
    "Limits",
    "LinkId",
    "LocalProtocolError",
    "LookupId",
    "NodeCore",
    "NodeId",
    "NodeInfo",
    "ProtocolError",
    "RemoteProtocolError",
    "SeededIdSource",
    "Sha1",
    "ShareConfig",
    "ShareCore",
    "SignatureScheme",
    "Signer",
    "StreamId",
    "Timeouts",
    "TraceRecord",
    "TraceSink",
    "Transmit",
    "Verifier",
    "__version__",
    "drain",
    "node_id_from_public_pem",
)
