"""Token wrapping for the heatmap: visible glyphs for each token, and which fragments sit on which screen line."""

from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Iterator, Sequence

from rich.cells import cell_len

NEWLINE = "⏎"
TAB = "⇥"
SPACE = "·"
EMPTY = "∅"

Fragment = tuple[int, str, int]
"""(token index, text, cells): one piece of a token on one line."""
Piece = tuple[str, bool, int]
"""(text, whether a line break follows, cells)."""


def _cells(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


def glyphs(text: str) -> list[Piece]:
    """A token's visible pieces, each with whether a line break follows it and its width in cells.

    Newlines show as ⏎ and still break the line; a token of spaces only shows one · per space,
    so that whitespace tokens stay visible; control characters show as their Unicode pictures.
    """
    if text.isprintable() and text.strip(" "):
        return [(text, False, _cells(text))]
    return [(piece, breaks, _cells(piece)) for piece, breaks in _visible(text)]


def _visible(text: str) -> list[tuple[str, bool]]:
    if not text:
        return [(EMPTY, False)]
    if text.strip(" ") == "":
        return [(SPACE * len(text), False)]
    pieces: list[tuple[str, bool]] = []
    current: list[str] = []
    for char in text:
        if char == "\n":
            current.append(NEWLINE)
            pieces.append(("".join(current), True))
            current = []
        elif char == "\t":
            current.append(TAB)
        elif char == "\r":
            continue
        elif ord(char) < 0x20:
            current.append(chr(0x2400 + ord(char)))
        else:
            current.append(char)
    if current or not pieces:
        pieces.append(("".join(current) or EMPTY, False))
    return pieces


WORD_STARTS = frozenset((" ", SPACE, NEWLINE, TAB))


class TokenLayout:
    """Lines of token fragments for one width; appending tokens re-flows only the last line.

    Words made of several tokens move to the next line whole when they fit there; a fragment
    wider than the line is cut into line-sized pieces. Fragments live in flat arrays (token,
    cells) and a flat list (text), and a line is a start offset into them: a 32k-token
    completion lays out without allocating an object per fragment.
    """

    def __init__(self, width: int) -> None:
        self.width = max(4, width)
        self.pieces: list[list[Piece]] = []
        self._glyphs: dict[str, list[Piece]] = {}
        """Pieces by token text: a long completion repeats a few thousand texts."""
        self._clear()

    def _clear(self) -> None:
        self.starts = array("l")
        """Where each line's fragments begin."""
        self.token_line = array("l")
        """The line holding each token's first fragment."""
        self._token = array("l")
        self._cells = array("l")
        self._text: list[str] = []

    @property
    def line_count(self) -> int:
        return len(self.starts)

    def add(self, texts: Sequence[str]) -> None:
        """Lay out more tokens after the ones already placed."""
        start = len(self.pieces)
        known = self._glyphs
        for text in texts:
            pieces = known.get(text)
            if pieces is None:
                pieces = known[text] = glyphs(text)
            self.pieces.append(pieces)
        self._flow(self._reopen(start))

    def reflow(self, width: int) -> None:
        """Lay the same tokens out again for another width."""
        self.width = max(4, width)
        self._clear()
        self._flow(0)

    def _reopen(self, start: int) -> int:
        """Drop the lines the next tokens may change (the last one, and any it continues); return where to flow from."""
        if not self.starts or start == 0:
            self._clear()
            return 0
        line = len(self.starts) - 1
        # A token cut across lines began on an earlier line, with whole tokens before it there.
        while self.token_line[self._token[self.starts[line]]] != line:
            line = self.token_line[self._token[self.starts[line]]]
        at = self.starts[line]
        first = self._token[at]
        del self.starts[line:]
        del self.token_line[first:]
        del self._token[at:], self._cells[at:], self._text[at:]
        return first

    def _flow(self, start: int) -> None:
        width = self.width
        starts, token_line = self.starts, self.token_line
        frag_token, frag_cells, frag_text = self._token, self._cells, self._text
        pieces = self.pieces
        if start < len(pieces):
            starts.append(len(frag_token))
        line = starts[-1] if starts else 0  # where the current line's fragments begin
        column = 0
        word = line  # where the word being laid out began
        for index in range(start, len(pieces)):
            token = pieces[index]
            text, breaks, cells = token[0]
            # Most tokens are one piece that fits on the line: place them without the general path.
            if len(token) == 1 and not breaks and column + cells <= width:
                if text[0] in WORD_STARTS:
                    word = len(frag_token)
                token_line.append(len(starts) - 1)
                frag_token.append(index)
                frag_cells.append(cells)
                frag_text.append(text)
                column += cells
                continue
            for text, breaks, cells in token:
                end = len(frag_token)
                if text[0] in WORD_STARTS:
                    word = end
                elif column + cells > width and line < word < end:
                    carried = sum(frag_cells[word:end])
                    if carried + cells <= width:
                        starts.append(word)
                        for moved in range(word, end):
                            token_line[frag_token[moved]] = len(starts) - 1
                        line, column = word, carried
                while column + cells > width:
                    if column == 0:
                        cut = _cut(text, width)
                        if len(token_line) == index:
                            token_line.append(len(starts) - 1)
                        frag_token.append(index)
                        frag_cells.append(_cells(text[:cut]))
                        frag_text.append(text[:cut])
                        text = text[cut:]
                        cells = _cells(text)
                    line = word = len(frag_token)
                    starts.append(line)
                    column = 0
                if len(token_line) == index:
                    token_line.append(len(starts) - 1)
                frag_token.append(index)
                frag_cells.append(cells)
                frag_text.append(text)
                column += cells
                if breaks:
                    line = word = len(frag_token)
                    starts.append(line)
                    column = 0
        # A break after the last fragment opened a line with nothing on it yet.
        if starts and starts[-1] == len(frag_token) and len(starts) > 1:
            starts.pop()

    def fragments(self, line: int) -> Iterator[Fragment]:
        """The (token, text, cells) fragments on a line, left to right; none past the last line."""
        if not 0 <= line < len(self.starts):
            return iter(())
        begin = self.starts[line]
        end = self.starts[line + 1] if line + 1 < len(self.starts) else len(self._token)
        return zip(self._token[begin:end], self._text[begin:end], self._cells[begin:end])

    def lines_holding(self, first: int, last: int, wanted) -> set[int]:
        """The lines in [first, last) holding a fragment of a token for which `wanted(token)` is true."""
        first, last = max(first, 0), min(last, len(self.starts))
        if first >= last:
            return set()
        begin = self.starts[first]
        end = self.starts[last] if last < len(self.starts) else len(self._token)
        hits = [begin + offset for offset, token in enumerate(self._token[begin:end]) if wanted(token)]
        return {bisect_right(self.starts, at) - 1 for at in hits}

    def column_of(self, token: int) -> int:
        """The cell column where a token starts on its line."""
        column = 0
        for index, _text, cells in self.fragments(self.token_line[token]):
            if index == token:
                return column
            column += cells
        return 0

    def token_at(self, line: int, column: int) -> int | None:
        """The token covering this cell (or the last one on the line), None past the last line."""
        x = 0
        index = None
        for index, _text, cells in self.fragments(line):
            if column < x + cells:
                return index
            x += cells
        return index


def _cut(text: str, width: int) -> int:
    """How many characters of `text` fit in `width` cells (at least one)."""
    cells = 0
    for count, char in enumerate(text):
        cells += cell_len(char)
        if cells > width:
            return max(1, count)
    return len(text)


def quoted(text: str) -> str:
    """A token's text on one line, quoted, with its whitespace visible: for the inspector and titles."""
    return "'" + "".join(piece for piece, _breaks in _visible(text)) + "'"
