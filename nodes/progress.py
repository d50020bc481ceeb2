"""ComfyUI's progress bar and interrupt, as the core's callbacks: over the frames of a
generation, the chunks or lines of a long-form node, the steps of training; the interrupt check
they all make, and the text under a running node."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
from qwen_tts_core.duration import FRAME_RATE


class FrameProgress:
    """A ComfyUI progress bar over generated frames whose callback also stops the generation
    when the user interrupts the prompt: at the next frame read back (the GPU runs at most 7
    frames ahead, FrameLoop)."""

    def __init__(self):
        self.bar = comfy.utils.ProgressBar(1)
        self.total = 1

    def on_start(self, max_frames: int) -> None:
        self.total = max(1, int(max_frames))
        self.bar.update_absolute(0, self.total)

    def on_frame(self, index: int, frame) -> None:
        stop_if_interrupted()
        self.bar.update_absolute(index + 1, self.total)

    def on_decode(self, done: int, total: int) -> None:
        """Before each decoder chunk: Cancel stops a long decode too."""
        stop_if_interrupted()


class ChunkProgress:
    """A ComfyUI progress bar over the chunks (narration) or lines (subtitles, script) of a
    long-form node, as the core's `on_progress`, that also moves inside a chunk or line: its
    `on_frame`, given to every speaker, counts the frames generated against the frames expected
    for the chunk or line now starting (at most 95% of it until it ends, so retries and slow
    speech never move the bar back), and stops the generation at the next frame read back when
    the user interrupts the prompt."""

    STEPS = 100           # bar steps per chunk or line
    WITHIN_MAX = 0.95     # share of a chunk or line the frames alone can fill

    def __init__(self):
        self.bar = comfy.utils.ProgressBar(1)
        self.done, self.total, self.value = 0, 1, 0
        self.frames, self.expected_frames = 0, 1.0

    def __call__(self, progress) -> None:
        self.done, self.total = progress.done, max(progress.total, 1)
        self.frames, self.expected_frames = 0, max(1.0, progress.next_seconds * FRAME_RATE)
        self._show(self.done * self.STEPS, force=True)

    def on_frame(self, index: int, frame) -> None:
        stop_if_interrupted()
        self.frames += 1
        within = min(self.frames / self.expected_frames, self.WITHIN_MAX)
        self._show(int((self.done + within) * self.STEPS))

    def _show(self, value: int, force: bool = False) -> None:
        if value > self.value or force:
            self.value = max(self.value, value)
            self.bar.update_absolute(self.value, self.total * self.STEPS)


def stop_if_interrupted() -> None:
    """Raises ComfyUI's interrupt if the user has cancelled the prompt."""
    mm.throw_exception_if_processing_interrupted()


def run_interruptible(fn):
    """Runs fn(); on interrupt, drops the generation's tensors before re-raising ComfyUI's
    interrupt (the exception's traceback would otherwise keep the KV caches alive)."""
    interrupted = False
    try:
        return fn()
    except mm.InterruptProcessingException:
        interrupted = True
    if interrupted:
        mm.soft_empty_cache()
        raise mm.InterruptProcessingException()


class StepProgress:
    """A ComfyUI progress bar over the steps of a long job (speech codes, then training steps),
    with a line of text under the node (e.g. the loss) where this ComfyUI can show one.
    `should_stop` is the interrupt check the core asks after every step."""

    def __init__(self):
        self.bar = comfy.utils.ProgressBar(1)

    def update(self, done: int, total: int, text: str | None = None, preview=None) -> None:
        """`preview`: ("PNG" or "JPEG", PIL image, max size or None), shown on the node (ComfyUI's
        progress preview, as its samplers send)."""
        self.bar.update_absolute(done, max(int(total), 1), preview=preview)
        if text:
            show_text(text)

    def should_stop(self) -> bool:
        stop_if_interrupted()
        return False


def show_text(text: str) -> None:
    """Text under the running node (ComfyUI's progress text; older versions have none)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = PromptServer.instance
    node = getattr(server, "last_node_id", None)
    if server is not None and node is not None and hasattr(server, "send_progress_text"):
        server.send_progress_text(text, node)
