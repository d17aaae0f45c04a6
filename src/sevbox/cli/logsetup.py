"""Logging for the command line: ``--log FILE --log-format text|json`` as runc writes it.

The library logs through ``logging.getLogger(__name__)`` and stays silent unless the command line
asks. With ``--log-format json`` each record is one JSON object a line with ``level``, ``msg`` and
``time`` (RFC 3339), which is what containerd's shim reads back to show users the last error.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

__all__ = ["JsonFormatter", "configure", "early"]

_LEVELS = {"WARNING": "warning", "CRITICAL": "fatal"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR and record.exc_info[1] is not None:
            msg = f"{msg}: {record.exc_info[1]}"
        return json.dumps(
            {
                "level": _LEVELS.get(record.levelname, record.levelname.lower()),
                "msg": msg,
                "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            }
        )


def early() -> None:
    logging.getLogger("sevbox").addHandler(logging.NullHandler())


def configure(*, log_file: str | None, log_format: str, debug: bool) -> None:
    logger = logging.getLogger("sevbox")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    if log_file:
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter("time=%(asctime)s level=%(levelname)s msg=%(message)s"))
        logger.addHandler(handler)
    elif debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sevbox: %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
