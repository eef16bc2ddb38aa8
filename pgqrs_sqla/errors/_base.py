"""The root of the hierarchy: :class:`PgqrsError` (see :mod:`pgqrs_sqla.errors`)."""

from __future__ import annotations

# Every keyword has a default: an error pickles as ``cls(message)`` plus its attributes (a
# multiprocessing pool or a log handler may pickle it), and a caller sets only what applies.


class PgqrsError(Exception):
    """pgqrs_sqla error."""

    #: what went wrong and what to do; the class docstring when none was given
    message: str

    def __init__(self, message: str | None = None) -> None:
        # A class's docstring is its default message, said on one line (errors are one line).
        self.message = message or " ".join((type(self).__doc__ or type(self).__name__).split())
        super().__init__(self.message)
