"""Retakes the README screenshots (docs/images/<workflow>.png) in the real ComfyUI front end, as a
user sees each example workflow: dropped onto the canvas in a fresh browser profile, one tab
named after the file, the pack installed as custom_nodes/qwen-tts-comfyui. Stored as optimised
PNG (pillow: a 256-colour palette, lossless for a UI's flat colours and anti-aliased text).

Needs a ComfyUI checkout and its venv, Debian's chromium, and playwright and pillow in the python that runs
this, and the shared harness (shared/tools/comfy_e2e: its server start; COMFY_E2E_DIR to point
elsewhere); the models and input/ files are the test fixtures (tests/comfy_env.py):
    $PW_VENV/bin/python tools/readme_screenshots.py --comfy $COMFY_DIR --python $COMFY_VENV/bin/python
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("COMFY_E2E_DIR", ROOT.parent / "shared" / "tools" / "comfy_e2e"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

# Drops the workflow file on the canvas as a user does (the tab takes the file's name), then
# closes every other tab (the start-up "Unsaved Workflow").
JS_OPEN = r"""
async ([name, text]) => {
  const app = window.app;
  await app.handleFile(new File([text], name, {type: 'application/json'}));
  await new Promise(r => setTimeout(r, 1500));
  const store = app.extensionManager.workflow;
  const active = store.activeWorkflow;
  for (const wf of [...store.openWorkflows]) {
    if (wf !== active) await store.closeWorkflow(wf);
  }
  await app.extensionManager.command.execute('Comfy.Canvas.FitView');   // '.' : the whole graph in view
  await new Promise(r => setTimeout(r, 500));
  return {tabs: store.openWorkflows.map(w => w.filename), active: active && active.filename,
          missing: (app.graph._nodes || []).filter(n => n.has_errors).map(n => n.type)};
}
"""


def optimise_png(data: bytes) -> tuple[bytes, str]:
    """-> the PNG with a 256-colour palette, and how far it is from the screenshot."""
    from PIL import Image, ImageChops

    image = Image.open(io.BytesIO(data)).convert("RGB")
    palette = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    diff = ImageChops.difference(image, palette.convert("RGB")).convert("L")
    changed = sum(diff.histogram()[1:]) / (image.width * image.height)
    return out.getvalue(), (f"{len(image.getcolors(1 << 24))} colours, {len(data):,} -> {out.tell():,} bytes, "
                            f"{changed:.1%} of pixels moved, by at most {diff.getextrema()[1]}/255")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfy", required=True, help="ComfyUI checkout")
    ap.add_argument("--python", required=True, help="python of the ComfyUI venv (runs the server)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--only", action="append", default=[], help="workflow name (repeatable)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    a = ap.parse_args()
    sys.path.insert(0, str(HARNESS))
    import run_e2e
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="qwen_tts_shots_"))
    for d in ("custom_nodes", "output", "temp", "user"):
        (base / d).mkdir()
    (base / "custom_nodes" / "qwen-tts-comfyui").symlink_to(ROOT)
    # a user who has been here before: no template browser over the canvas on start
    (base / "user" / "default").mkdir(parents=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    subprocess.run([a.python, "-c", "import sys, pathlib; sys.path[:0] = [sys.argv[1]]; import comfy_env; "
                    "b = pathlib.Path(sys.argv[2]); comfy_env.make_models_dir(b / 'models'); "
                    "comfy_env.make_input_dir(b / 'input', with_video=True)", str(ROOT / "tests"), str(base)],
                   check=True)
    server = run_e2e.Server(argparse.Namespace(
        python=a.python, comfy=os.path.abspath(a.comfy), port=0, with_api_nodes=False, server_arg=[],
        pycache=os.path.join(tempfile.gettempdir(), "comfy_e2e_pycache"), online=False), str(base))
    workflows = sorted(p for p in (ROOT / "example_workflows").glob("*.json") if not a.only or p.stem in a.only)
    failed = []
    try:
        server.start()
        ready, why = server.wait_ready(600)
        if not ready:
            print(server.log_tail(40))
            return 1
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, headless=True, args=CHROMIUM_ARGS)
            for path in workflows:
                context = browser.new_context(viewport={"width": 1600, "height": 1000})   # a fresh profile
                page = context.new_page()
                page.goto(server.url, wait_until="domcontentloaded", timeout=120000)
                page.wait_for_function("() => !!(window.app && window.app.graph && window.app.extensionManager)",
                                       timeout=120000)
                page.wait_for_timeout(2000)
                r = page.evaluate(JS_OPEN, [path.name, path.read_text(encoding="utf-8")])
                page.mouse.move(1590, 990)                     # no hover highlight on a node
                page.wait_for_timeout(1000)
                png, how = optimise_png(page.screenshot())
                good = r["tabs"] == [path.stem] and not r["missing"]
                print(f"[{'OK  ' if good else 'FAIL'}] {path.name}: tabs {r['tabs']}, errors {r['missing']}; {how}")
                if good:
                    (Path(a.out) / f"{path.stem}.png").write_bytes(png)
                else:
                    failed.append(path.name)
                context.close()
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
