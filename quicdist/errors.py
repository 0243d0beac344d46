"""The exceptions quicdist raises on purpose.

Everything derives from :class:`QuicDistError`, so ``except QuicDistError``
catches every failure the library reports. Where a builtin exception already
names the kind of failure, the quicdist class also derives from it, so code
that catches ``ValueError``, ``TypeError`` or ``TimeoutError`` keeps working::

    QuicDistError(Exception)
    ├── ConfigurationError(QuicDistError, ValueError)   bad arguments or settings
    ├── TermError(QuicDistError)                        External Term Format problems
    │   ├── DecodeError(TermError, ValueError)          bytes that are not a valid term
    │   └── EncodeError(TermError, TypeError, ValueError)
    │                                                   a Python value with no Erlang term
    └── QuicDistTimeoutError(QuicDistError, TimeoutError)
                                                        a blocking call ran out of time

Exceptions are plain data: they carry attributes, never log, and pickle
(their constructor arguments are kept in ``args``).
"""

from __future__ import annotations


__all__ = [
    "ConfigurationError",
    "DecodeError",
    "EncodeError",
    "QuicDistError",
    "QuicDistTimeoutError",
    "TermError",
]


class QuicDistError(Exception):
    """Base class of every exception quicdist raises on purpose."""


class ConfigurationError(QuicDistError, ValueError):
    """An argument or setting is invalid."""


class TermError(QuicDistError):
    """A term could not be converted between Python and the External Term Format."""


class DecodeError(TermError, ValueError):
    """The bytes are not a valid External Term Format term.

    Attributes:
        offset: position in the input where decoding failed (-1 if unknown).
    """

    def __init__(self, message: str, offset: int = -1) -> None:
        super().__init__(message, offset)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        if self.offset >= 0:
            return f"{self.message} (at byte {self.offset})"
        return self.message


class EncodeError(TermError, TypeError, ValueError):
    """A Python value cannot be encoded as an Erlang term.

    Raised for values of an unsupported type (it is a ``TypeError``) and for
    values of a supported type that Erlang cannot represent, such as NaN, an
    atom longer than 255 characters or an integer beyond Erlang's limit (it is
    a ``ValueError``).
    """


class QuicDistTimeoutError(QuicDistError, TimeoutError):
    """A blocking call did not complete within its timeout."""
