"""User-facing errors: the CLI prints their message as one line and exits with code 2."""

import difflib


class CmrBenchError(Exception):
    """An error caused by input (files, names, arguments), reported without a traceback."""

    exit_code = 2

    def __str__(self) -> str:
        # One line whatever the message carries: names read from a corrupt file may hold
        # newlines or control characters; they are shown escaped.
        text = super().__str__()
        if text.isprintable():
            return text
        return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class DataError(CmrBenchError):
    """Missing, corrupt or inconsistent dataset files or manifests."""


class UnknownNameError(CmrBenchError):
    """An unknown dataset, method or option name."""

    def __init__(self, kind: str, name: str, known):
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known))}"
        super().__init__(f"unknown {kind} '{name}'{hint}")


class EvaluationInputError(CmrBenchError):
    """Codes or labels that cannot be evaluated (shapes, NaN/Inf, empty sets)."""
