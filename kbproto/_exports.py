"""The eager re-exports behind ``kbproto``'s package attributes.

``kbproto/__init__.py`` loads this module on the first access to one of its public
names, so importing a leaf module (``kbproto.prv``, ``kbproto.ids``) does not import
the whole protocol core: that would cost ``kb-prv-create`` +50 % CPU
(``docs/benchmarks.md``, "kbproto's names loaded on first use").
``tests/test_public_api.py`` checks that the names here are exactly ``kbproto.__all__``.
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
