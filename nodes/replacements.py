"""Renamed nodes, registered with ComfyUI's node replacement (`io.NodeReplace`), so workflows saved
before a rename keep opening: the front end offers to swap each old node for its new one, with
its inputs and widget values carried over.

A node id or an input that a saved workflow uses is never renamed or removed in place: the node
gets a new id and an entry here. tests/test_workflow_compat.py fails when a node id or input used
by example_workflows/ or by a saved workflow (tests/fixtures/workflows/) disappears without one.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rename:
    old_node_id: str
    new_node_id: str
    old_inputs: tuple[str, ...]             # every input id of the old node
    old_widget_ids: tuple[str, ...] = ()    # its widgets in order (saved by position in workflows)
    renamed: dict[str, str] = field(default_factory=dict)   # old input id -> new; others keep theirs

    def input_id(self, old: str) -> str:
        return self.renamed.get(old, old)


# None yet: no node id or input has been renamed since the first release (0.1.0).
RENAMED: list[Rename] = []


async def register(api=None) -> int:
    """Registers RENAMED with the running ComfyUI; -> how many. ComfyUI versions without node
    replacement (0.3.64 has none) load the pack all the same: there is nothing to do."""
    from comfy_api.latest import io

    if not RENAMED or not hasattr(io, "NodeReplace"):
        return 0
    if api is None:
        from comfy_api.latest import ComfyAPI
        api = ComfyAPI()
    registry = getattr(api, "node_replacement", None)
    if registry is None:
        return 0
    for r in RENAMED:
        await registry.register(io.NodeReplace(
            new_node_id=r.new_node_id, old_node_id=r.old_node_id,
            old_widget_ids=list(r.old_widget_ids) or None,
            input_mapping=[{"new_id": r.input_id(old), "old_id": old} for old in r.old_inputs] or None))
    return len(RENAMED)
