"""Errors with messages a user can act on. Every error the core raises on bad input is a
`QwenTTSError`, so callers (the ComfyUI nodes, the CLI) can show the message as it is."""


class QwenTTSError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ModelFolderError(QwenTTSError):
    """A model or tokenizer folder is missing, incomplete, corrupt or of another kind."""


class InputError(QwenTTSError, ValueError):
    """Bad text, audio, codes, speaker, language or setting."""


class UnsupportedModeError(QwenTTSError):
    """The loaded model cannot do what was asked (e.g. voice design on a Base model)."""


class VoiceFileError(QwenTTSError):
    """A saved voice file that cannot be used."""


class DownloadError(QwenTTSError):
    """A checkpoint download that cannot go on (offline, server error, damaged file); the message
    says what was kept and how to continue or download by hand."""


class Interrupted(QwenTTSError):
    """Generation was stopped by the caller's interrupt check."""
