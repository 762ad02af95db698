"""codegraph_store: an embedded, single-file store for code graphs.

Symbols (nodes), their relations (edges) and compressed metadata live in one
SQLite file opened through APSW::

    from codegraph_store import Store
    with Store.open("project.cgdb") as store:
        store.find("OrderedDict", kind="class")
"""

from .checks import CheckReport
from .config import Config
from .kinds import EdgeKind, NodeKind
from .model import Edge, FileInfo, Node, stable_node_id
from .store import Store

__all__ = ["CheckReport", "Config", "Edge", "EdgeKind", "FileInfo", "Node", "NodeKind", "Store",
           "stable_node_id"]
__version__ = "0.1.0"
