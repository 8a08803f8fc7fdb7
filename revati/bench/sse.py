"""Incremental parser for Server-Sent Events (the ``text/event-stream`` of OpenAI-style APIs).

Bytes go in as they arrive; complete events come out as their ``data`` strings. Events end at
a blank line (LF or CRLF line ends); lines starting with ``:`` are comments (keep-alive pings);
several ``data:`` lines of one event are joined with newlines, as the SSE spec says.
"""

from __future__ import annotations

import codecs


class SSEParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event completed by ``chunk``."""
        self._buffer += self._decoder.decode(chunk)
        events: list[str] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1]:]
            if line == "":
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value[1:] if value.startswith(" ") else value)
        return events

    def flush(self) -> list[str]:
        """Events left when the stream ends without a final blank line."""
        events = self.feed(b"\n\n") if (self._buffer or self._data) else []
        return events


def _line_end(text: str) -> tuple[int, int] | None:
    """(end of the first line, start of the next) or None if no full line yet. A lone CR at the
    very end may be the first half of CRLF, so it waits for more input."""
    for i, ch in enumerate(text):
        if ch == "\n":
            return i, i + 1
        if ch == "\r":
            if i + 1 == len(text):
                return None
            return (i, i + 2) if text[i + 1] == "\n" else (i, i + 1)
    return None
