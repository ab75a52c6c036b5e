"""Text cleaning: strip HTML and reStructuredText markup and normalise whitespace, per kind of text.

Cleaning is deliberately conservative: it removes markup a reader never sees and keeps every word.
Which documents exist and which split they go to is `documents.py`'s business.
"""

from __future__ import annotations

import html
import re

# A tag must start with a letter right after "<", so "x < 2" or "a<b" in prose survives.
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_EMPTY_PARENS = re.compile(r"[^\S\n]*\(\s*[;,]?\s*\)")  # "( )" left where Wikipedia dropped a pronunciation
_PAREN_LEAD = re.compile(r"\(\s*[;,]\s*")  # "(, also ..." -> "(also ..."
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except newline (tabs, NBSP, thin spaces)
_BLANK_RUNS = re.compile(r"\n\s*\n")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)

# reStructuredText
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.<>_])\1{2,}\s*$", re.MULTILINE)
_RST_TARGET = re.compile(r"^\s*\.\. _[^:]*:.*$", re.MULTILINE)  # .. _label:
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\. ([\w:-]+)::(.*)$", re.MULTILINE)  # .. note:: / .. code-block:: python
# Directives whose argument is content (an API signature, a displayed formula), so it is kept.
_RST_KEEP_ARGUMENT = re.compile(
    r"(?:\w+:)?(?:function|method|classmethod|staticmethod|abstractmethod|coroutinefunction|coroutinemethod|class"
    r"|data|attribute|exception|decorator|decoratormethod|module|macro|member|type|var|envvar|cmdoption|option"
    r"|describe|opcode|pdbcommand|math)"
)
_RST_OPTION = re.compile(r"^\s+:[\w -]+:(?:\s.*)?$", re.MULTILINE)  # directive options ":maxdepth: 2"
_RST_COMMENT = re.compile(r"^\.\.(?: .*)?$", re.MULTILINE)  # a bare ".." comment line
_RST_SUBST = re.compile(r"^\s*\.\. \|[^|]+\|.*$", re.MULTILINE)  # .. |name| image:: ...
_RST_ROLE_TITLE = re.compile(r":[\w:+-]+:`([^`<]*?)\s*<[^`>]*>`")  # :ref:`text <target>` -> text
_RST_ROLE = re.compile(r":[\w:+-]+:`~?!?([^`]*)`")  # :func:`~os.path.join` -> os.path.join
_RST_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")  # `text <url>`_ -> text
_RST_REF = re.compile(r"`([^`]+)`_{1,2}")  # `text`_ -> text
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_INTERPRETED = re.compile(r"(?<![\w`])`([^`\n]+)`(?![\w`])")
_RST_STRONG = re.compile(r"\*\*([^*\n]+)\*\*")
_RST_EMPH = re.compile(r"(?<![\w*])\*([^*\s][^*\n]*)\*(?![\w*])")
_RST_FOOTNOTE_REF = re.compile(r"\s?\[#?\w*\]_")


def normalise_prose(text: str) -> str:
    """Plain prose: unescape entities, drop tags, one space between words, paragraphs on single newlines.

    Paragraph breaks become one "\\n", so a cleaned prose document never contains the blank line that
    separates documents in a corpus file.
    """
    text = html.unescape(text)
    text = _TAG.sub("", text)
    text = _EMPTY_PARENS.sub("", text)
    text = _PAREN_LEAD.sub("(", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _BLANK_RUNS.sub("\n", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return text.strip()


def normalise_code(text: str) -> str:
    """Source code: keep indentation; unify newlines, drop trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "")
    text = _TRAILING.sub("", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip("\n")


def strip_rst(text: str) -> str:
    """reStructuredText -> readable text: roles, links, emphasis, directives' headers and section rules go.

    Directive bodies (notes, code examples) are kept: they are real content. The result is then
    normalised like code (indentation is meaningful in examples).
    """
    for pattern in (_RST_SUBST, _RST_TARGET):
        text = pattern.sub("", text)
    text = _RST_DIRECTIVE.sub(_directive_argument, text)
    for pattern in (_RST_COMMENT, _RST_UNDERLINE):
        text = pattern.sub("", text)
    text = _RST_OPTION.sub("", text)
    text = _RST_ROLE_TITLE.sub(r"\1", text)
    text = _RST_ROLE.sub(r"\1", text)
    text = _RST_LINK.sub(r"\1", text)
    text = _RST_REF.sub(r"\1", text)
    text = _RST_LITERAL.sub(r"\1", text)
    text = _RST_INTERPRETED.sub(r"\1", text)
    text = _RST_STRONG.sub(r"\1", text)
    text = _RST_EMPH.sub(r"\1", text)
    text = _RST_FOOTNOTE_REF.sub("", text)
    text = re.sub(r"::$", ":", text, flags=re.MULTILINE)  # "Example::" introduces a literal block
    text = text.replace("\\ ", "")  # an escaped space joins words: `non-\ NULL` reads "non-NULL"
    return normalise_code(text)


def _directive_argument(match: re.Match) -> str:
    indent, name, argument = match.groups()
    return indent + argument.strip() if _RST_KEEP_ARGUMENT.fullmatch(name) and argument.strip() else ""


def unwrap_paragraphs(text: str) -> str:
    """Hard-wrapped plain text (e.g. a Gutenberg novel): join wrapped lines, one paragraph per line."""
    paragraphs = _BLANK_RUNS.split(text.replace("\r\n", "\n"))
    joined = (" ".join(line.strip() for line in p.split("\n") if line.strip()) for p in paragraphs)
    return normalise_prose("\n".join(p for p in joined if p))
