"""ComfyUI entry point of the Qwen3-TTS node pack.

Importing this file is cheap and safe outside ComfyUI: the nodes (and torch, and ComfyUI's own
modules) are imported only when ComfyUI calls comfy_entrypoint()."""
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _register_core() -> None:
    """Makes this pack's qwen_tts_core importable by its own name (the nodes import it so),
    without putting the pack folder on sys.path (its nodes/ would shadow ComfyUI's nodes.py)."""
    if "qwen_tts_core" in sys.modules:
        return
    init = os.path.join(_HERE, "qwen_tts_core", "__init__.py")
    spec = importlib.util.spec_from_file_location(
        "qwen_tts_core", init, submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["qwen_tts_core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["qwen_tts_core"]
        raise


async def comfy_entrypoint():
    _register_core()
    # comfy_api.latest, as in every node module of the pack (not a pinned comfy_api.v0_0_x):
    # ComfyUI's own nodes import it, the pinned versions re-export the very same io/ui objects,
    # and shared workflows depend on node ids and inputs, not on this path. README: ComfyUI versions.
    from comfy_api.latest import ComfyExtension

    from .nodes import NODES, replacements

    class QwenTTSExtension(ComfyExtension):
        async def on_load(self):
            # renamed nodes, where this ComfyUI has node replacement; a failure here must not
            # cost the user the whole pack
            try:
                await replacements.register()
            except Exception as e:
                import logging
                logging.getLogger("qwen_tts_nodes").warning(
                    "Qwen3-TTS: could not register renamed nodes with ComfyUI (%s); workflows that use "
                    "the old names will show them as missing.", e)

        async def get_node_list(self):
            return list(NODES)

    return QwenTTSExtension()
