"""The pack's top-level __init__.py: cheap and safe to import outside ComfyUI, and its
comfy_entrypoint() gives ComfyUI the ten nodes."""
import asyncio
import subprocess
import sys

import comfy_env

ROOT = comfy_env.ROOT

IMPORT_OUTSIDE_COMFYUI = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("pack", {str(ROOT / "__init__.py")!r},
                                              submodule_search_locations=[{str(ROOT)!r}])
m = importlib.util.module_from_spec(spec); sys.modules["pack"] = m; spec.loader.exec_module(m)
heavy = sorted({{n.split(".")[0] for n in sys.modules}} & {{"torch", "transformers", "comfy", "comfy_api",
                                                            "folder_paths", "qwen_tts_core", "nodes"}})
print("callable" if callable(m.comfy_entrypoint) else "missing", heavy)
"""


def test_import_outside_comfyui_is_light_and_does_not_crash():
    r = subprocess.run([sys.executable, "-c", IMPORT_OUTSIDE_COMFYUI], capture_output=True, text=True,
                       timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "callable []"


def test_comfy_entrypoint_lists_the_nodes():
    pack = comfy_env.pack()
    extension = asyncio.run(pack.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    assert [n.define_schema().node_id for n in nodes] == [n.define_schema().node_id for n in pack.nodes.NODES]
    assert len(nodes) == 21  # 10 nodes of the pack + 6 long-form + 2 training + loudness + 2 watermark
