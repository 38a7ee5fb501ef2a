"""The bridge: content identities, provenance and cross-subtree transfers.

``core.Bridge`` works inside the mount (identities of reads and commits, native routes for
copies); ``transfers`` runs ``mcpfs cp`` in the daemon; ``db`` is the provenance DB.
Layering: vfs/ calls the bridge; the bridge drives Mounts (for ``mcpfs cp``) through the
Mount protocol and tells them its routes through ``Writer.extra``; Mounts never import it.
"""

from .core import Bridge, location_of
from .db import Location, ProvenanceDB

__all__ = ["Bridge", "ProvenanceDB", "Location", "location_of"]
