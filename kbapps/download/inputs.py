"""Reading the ``.prv`` or ``.prvdir`` a download starts from."""

from __future__ import annotations

import os

from kbapps.download.errors import BadInputError
from kbproto.prv import Prv, PrvDir, PrvFormatError, PrvLimits, parse_document

__all__ = ("load_prv_file",)


def load_prv_file(path: str | os.PathLike[str], warnings: list[str] | None = None) -> Prv | PrvDir:
    """Read and parse a ``.prv`` or ``.prvdir`` file (told apart by its fields).

    ``warnings``, if given, gets one line per field read but ignored (a malformed
    ``chunks`` field: the file is then verified whole, ``kbproto.prv.parse_prv``).

    Raises:
        BadInputError: the file cannot be read or is malformed; the message names the
            file and, for a malformed one, the field (docs/formats.md §1).
    """
    name = os.fspath(path)
    limit = PrvLimits().max_bytes
    try:
        with open(name, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise BadInputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise BadInputError(f"{name}: is a directory, not a .prv or .prvdir file") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return parse_document(data, warnings=warnings)
    except PrvFormatError as exc:
        raise BadInputError(f"{name}: invalid .prv/.prvdir: {exc}") from None
