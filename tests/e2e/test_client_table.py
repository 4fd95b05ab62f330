"""docs/clients.md's client table is the matrix the real-client job runs (tests/clients/matrix.py)."""

from __future__ import annotations

from pathlib import Path

from tests.clients import matrix

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_table_is_the_matrix_the_clients_job_runs() -> None:
    page = (ROOT / "docs" / "clients.md").read_text(encoding="utf-8")
    block = page.split("<!-- client-table: tests/clients/matrix.py -->\n", 1)[1].split("\n\n", 1)[0]
    assert block == matrix.table()
    assert len(matrix.cases()) == sum(len(client.identities) for client in matrix.CLIENTS) * len(matrix.PROTOCOLS)


def test_the_docs_index_lists_the_page() -> None:
    assert "\nclients\n" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
