"""What ``kb-prv-download`` prints about a download's events (internal).

``DownloadReport`` is the download's event sink: with ``--json`` it prints every event
as one JSON Lines record on stdout, and in every mode it prints the human lines on
stderr that the events call for (a resumed ``.part``, a warning, a source dropped
from a download from several sources) and remembers what an
interruption must report: the files in place and the partial files kept for the
next run (``docs/commands.md``, ``kb-prv-download``). While a file comes from several
sources at once, its ``progress`` events tell the progress bar how many are sending.
"""

from __future__ import annotations

from typing import Any

from kbapps import output

__all__ = ("DownloadReport",)


class DownloadReport:
    """Receives a download's events (an ``EventSink``) and prints what they say.

    Args:
        as_json: print every event on stdout (``--json``).
    """

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        #: Files in place so far (downloaded, copied, or already present).
        self.done = 0
        #: ``kept`` events: the partial files a cancelled download left, by part path.
        self.kept: dict[str, dict[str, Any]] = {}
        #: The progress bar, told how many sources are sending (``progress`` events).
        self.progress: output.Progress | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if self.as_json:
            output.print_json(event)
        kind = event.get("event")
        if kind == "done":
            self.done += 1
        elif kind == "progress" and self.progress is not None and "active_sources" in event:
            active = int(event["active_sources"])
            self.progress.set_note(output.counted(active, "source") if active > 1 else "")
        elif kind == "kept":
            self.kept[str(event["part"])] = event
        elif kind == "dropped":
            output.line(f"Dropped source {event['url']}: {event['message']}")
        elif kind == "warning" and not self.as_json:
            output.warning(f"{event['path']}: {event['message']}")
        elif kind == "resume":
            output.line(
                f"Resuming {event['path']} at {output.format_bytes(event['offset'])} of "
                f"{output.format_bytes(event['size'])}, from {event['part']}"
            )

    def interrupted(self, out: str, *, partial_dir: str | None, total_files: int) -> int:
        """Say what a Ctrl+C left and how to go on; return the exit code (130).

        Args:
            out: OUT as the user gave it.
            partial_dir: for a ``.prvdir``, the directory of its partial files.
            total_files: the files the download was to put in place.
        """
        kept_bytes = sum(int(event["bytes"]) for event in self.kept.values())
        if partial_dir is None:
            if self.kept:
                ((part, event),) = self.kept.items()
                text = (
                    f"Interrupted: kept {part} ({output.format_bytes(kept_bytes)} of "
                    f"{output.format_bytes(int(event['size']))}); run the same command "
                    "again to resume"
                )
            else:
                text = "Interrupted: no partial download was kept"
        else:
            text = f"Interrupted: {self.done} of {output.counted(total_files, 'file')} in place"
            if self.kept:
                count = output.counted(len(self.kept), "partial file")
                text += f", {count} ({output.format_bytes(kept_bytes)}) kept in {partial_dir}"
            text += "; run the same command again to resume"
        if self.as_json:
            output.print_json(
                {"event": "interrupted", "exit_code": output.EXIT_INTERRUPTED, "kept": kept_bytes}
            )
        output.line(text)
        return output.EXIT_INTERRUPTED
