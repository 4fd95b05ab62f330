"""``.. cli-reference::``: the help of ``legacy-msi`` and of each of its commands, as the
parser prints it (``legacy_msi_credential.cli.build_parser``), so that the reference cannot
drift from the command."""

from __future__ import annotations

import argparse
import os
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

#: The width the help is laid out for, as in a terminal of that many columns.
COLUMNS = "80"


class CliReference(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        from legacy_msi_credential.cli import build_parser

        saved = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = COLUMNS
        try:
            parser = build_parser()
            (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            pages = [("legacy-msi", parser.format_help())]
            pages += [(f"legacy-msi {name}", sub.format_help()) for name, sub in commands.choices.items()]
        finally:
            if saved is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = saved
        result: list[nodes.Node] = []
        for title, text in pages:
            result.append(nodes.rubric(text=title, ids=[nodes.make_id(title)]))
            result.append(nodes.literal_block(text, text, language="text"))
        return result


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("cli-reference", CliReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
