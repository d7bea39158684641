"""What the user sees while a network trains: one line of figures per epoch and, on a terminal,
a tqdm bar over the epoch's updates that the line replaces when the epoch ends; nothing with
``--quiet``.  Logs and pipes get the same lines without the bars."""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["EpochDisplay", "choose_mode", "epoch_line", "BAR", "LINES", "QUIET"]

BAR, LINES, QUIET = "bar", "lines", "quiet"


def choose_mode(stream: TextIO, quiet: bool = False) -> str:
    """QUIET if asked; BAR on a terminal when tqdm is installed; LINES otherwise."""
    if quiet:
        return QUIET
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if interactive:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return LINES
        return BAR
    return LINES


SCORE_LABELS = {"accuracy": "accuracy", "r2": "R²"}  # score key -> label


def _figures(record: dict, score: str) -> str:
    """``loss 0.1234  accuracy 0.9650  val loss 0.1500  val accuracy 0.9583``; test figures
    (only with --verbose) marked as such."""
    name = SCORE_LABELS.get(score, score)
    parts = []
    for prefix, label in (("", ""), ("val_", "val "), ("test_", "(verbose) test ")):
        if record.get(prefix + "loss") is not None:
            parts.append(f"{label}loss {record[prefix + 'loss']:.4f}")
        if record.get(prefix + score) is not None:
            parts.append(f"{label}{name} {record[prefix + score]:.4f}")
    return "  ".join(parts)


def epoch_line(epoch: int, epochs: int, record: dict, score: str = "accuracy",
               verbose: bool = False) -> str:
    """One epoch's figures; ``record`` holds loss, the ``score`` ("accuracy" or "r2"), their
    val_ (and with --verbose test_) forms, and seconds."""
    width = len(str(epochs))
    line = f"epoch {epoch:>{width}}/{epochs}  {_figures(record, score)}"
    if record.get("partial"):
        line += "  (stopped early in this epoch)"
    if record.get("best"):
        line += "  *best"
    if verbose and record.get("seconds") is not None:
        line += f"  {record['seconds']:.2f} s"
    return line


class EpochDisplay:
    """Training progress: ``update`` after each descent step, ``epoch_end`` after each epoch."""

    def __init__(self, epochs: int, score: str = "accuracy", *, mode: str = LINES,
                 verbose: bool = False, stream: TextIO | None = None):
        self.epochs, self.score = epochs, score
        self.mode, self.verbose = mode, verbose
        self.stream = stream if stream is not None else sys.stdout
        self._bar = None
        self._done = 0

    def update(self, epoch: int, done: int, total: int) -> None:
        if self.mode != BAR:
            return
        if self._bar is None:
            from tqdm import tqdm

            width = len(str(self.epochs))
            self._bar = tqdm(total=total, desc=f"epoch {epoch:>{width}}/{self.epochs}",
                             unit="batch", file=self.stream, leave=False, dynamic_ncols=True)
            self._done = 0
        self._bar.update(done - self._done)
        self._done = done

    def epoch_end(self, epoch: int, record: dict) -> None:
        """The epoch's line; on a terminal it replaces the epoch's bar."""
        self.close()
        if self.mode != QUIET:
            print(epoch_line(epoch, self.epochs, record, self.score, self.verbose),
                  file=self.stream, flush=True)

    def message(self, text: str, stream: TextIO | None = None) -> None:
        """Print a line without breaking a bar that is being drawn."""
        target = stream if stream is not None else self.stream
        if self._bar is not None:
            self._bar.write(text, file=target)
        else:
            print(text, file=target, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
