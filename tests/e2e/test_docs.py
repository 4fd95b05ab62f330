"""Every code block of the README and the user guide (``docs/*.md``) runs, so none goes stale.

A ``python`` or ``bash`` block runs as written, from the repository's root, with the
emulator as the default endpoint (``LEGACY_MSI_ENDPOINT``) and IMDS pointed at a dead
loopback port. A block that cannot run here says why in an HTML comment on the line
before its fence, and is checked as far as it can be:

* ``<!-- docs-test: import-only (why) -->``: its imports run (a Python block that needs an
  Azure resource);
* ``<!-- docs-test: parse-only (why) -->``: every ``legacy-msi`` command line in it is
  parsed by the command's own parser (servers, root, systemd);
* ``<!-- docs-test: not run (why) -->``: ``bash -n`` checks its syntax, and its
  ``legacy-msi`` command lines are parsed too.

A bash block passes when no command in it is unknown (126, 127) or misused (2) and no
traceback is printed; a command may fail for the reason the text around it gives (the
doctor's verdict on a machine without the extension, say).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from legacy_msi_credential.cli import build_parser
from legacy_msi_credential.emulator import Emulator

from ..conftest import closed_port

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\s*$")
MARKER = re.compile(r"^<!-- docs-test: (import-only|parse-only|not run) \((.+)\) -->$")


def _blocks() -> list[tuple[str, str, str, str]]:
    """(id, language, mode, code) of every python and bash block."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            match = FENCE.match(lines[index])
            if not match:
                index += 1
                continue
            end = lines.index("```", index + 1)
            marker = MARKER.match(lines[index - 1]) if index else None
            if match.group(1) in ("python", "bash"):
                name = f"{page.relative_to(ROOT)}:{index + 1}"
                found.append(
                    (name, match.group(1), marker.group(1) if marker else "run", "\n".join(lines[index + 1 : end]))
                )
            index = end + 1
    return found


BLOCKS = _blocks()


def test_the_pages_have_blocks_and_every_marker_is_used() -> None:
    assert len(BLOCKS) >= 10
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if line.startswith("<!-- docs-test"):
                assert MARKER.match(line), f"{page.name}:{number + 1}: say why, in parentheses: {line}"
                assert FENCE.match(lines[number + 1]), f"{page.name}:{number + 1}: a marker goes right above a fence"


def _environment(endpoint: str) -> dict[str, str]:
    dead = f"http://127.0.0.1:{closed_port()}"
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_", "IDENTITY_", "IMDS_"))},
        "LEGACY_MSI_ENDPOINT": endpoint,
        "LEGACY_MSI_IMDS_URL": dead,
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": dead,
        "PYTHONPATH": str(ROOT),
    }


def _command_lines(code: str) -> list[list[str]]:
    """The ``legacy-msi`` invocations in a bash block, as argument lists (sudo and paths dropped)."""
    commands = []
    for line in code.splitlines():
        for part in re.split(r"&&|;|(?<!&)&(?!&)|\|", line.split(" #", 1)[0]):
            words = shlex.split(part)
            while words and (words[0] == "sudo" or "=" in words[0]):
                words = words[1:]
            if words and Path(words[0]).name == "legacy-msi":
                commands.append(words[1:])
    return commands


def _parses(arguments: list[str]) -> None:
    try:
        build_parser().parse_args(arguments)
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"legacy-msi {' '.join(arguments)}: refused by the parser (exit {exc.code})")


@pytest.mark.parametrize(("name", "language", "mode", "code"), BLOCKS, ids=[block[0] for block in BLOCKS])
def test_the_block_runs(name: str, language: str, mode: str, code: str, session_emulator: Emulator) -> None:
    env = _environment(session_emulator.endpoint)
    if language == "python":
        assert mode in ("run", "import-only"), f"{name}: a Python block runs, or at least its imports do"
        if mode == "import-only":
            tree = ast.parse(code)
            code = "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
            assert code, f"{name}: nothing to import"
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, check=False
        )
        assert result.returncode == 0, f"{name}:\n{code}\n{result.stderr}"
        return
    commands = _command_lines(code)
    for arguments in commands:
        _parses(arguments)
    if mode in ("parse-only", "not run"):
        assert commands or mode == "not run", f"{name}: no legacy-msi command to parse"
        syntax = subprocess.run(["bash", "-n", "-c", code], capture_output=True, text=True, check=False)
        assert syntax.returncode == 0, f"{name}: {syntax.stderr}"
        return
    script = (
        "trap 'status=$?; if [ $status -eq 2 ] || [ $status -ge 126 ]; then "
        'echo "docs-test: exit $status from: $BASH_COMMAND" >&2; exit 99; fi\' ERR\n' + code
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=False
    )
    assert result.returncode != 99, f"{name}:\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, f"{name}:\n{result.stdout}\n{result.stderr}"


def _benchmarks() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_published_benchmark_figures_are_those_of_the_benchmark_code() -> None:
    """``benchmarks/results/latest.json`` names the digest of the benchmark code it ran: that
    code has not changed since, and ``benchmarks/README.md``'s table is that run's. The digest
    is of the files' bytes, so the check needs no git history (a shallow clone checks it too)."""
    run = _benchmarks()
    measured = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text(encoding="utf-8"))
    assert measured["benchmark_code_modified"] is False, "measured with uncommitted benchmark code"
    assert measured["benchmark_code_sha256"] == run.code_digest(ROOT), (
        f"{run.BENCHMARK_CODE} changed since the figures were measured: run benchmarks/run.py --publish and commit"
    )
    figures = [run.Figure(**figure) for figure in measured["figures"]]
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert run.markdown(figures, measured) in readme, "benchmarks/README.md's table is not latest.json's"


def test_the_benchmark_digest_changes_with_any_byte_of_the_benchmark_code(tmp_path: Path) -> None:
    """The staleness check above is only as good as the digest: one changed byte in any of
    the files, or a byte moved from one file to the next, gives another digest."""
    run = _benchmarks()
    for name in run.BENCHMARK_CODE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    original = run.code_digest(tmp_path)
    assert original == run.code_digest(ROOT)
    seen = {original}
    for name in run.BENCHMARK_CODE:
        data = (ROOT / name).read_bytes()
        (tmp_path / name).write_bytes(data + b" ")
        seen.add(run.code_digest(tmp_path))
        (tmp_path / name).write_bytes(data)
    first, second = run.BENCHMARK_CODE[:2]
    a, b = (ROOT / first).read_bytes(), (ROOT / second).read_bytes()
    (tmp_path / first).write_bytes(a + b[:1])
    (tmp_path / second).write_bytes(b[1:])
    seen.add(run.code_digest(tmp_path))
    assert len(seen) == len(run.BENCHMARK_CODE) + 2


def _sample_figures(run: Any) -> list[Any]:
    """Figures shaped as a run's: a long name beside a value, a figure without a unit."""
    return [
        run.Figure("chain", "ms", {run.OURS: 0.59, "identity (MSI_ENDPOINT workaround)": 4805.0}, "under 5 ms", True),
        run.Figure("steady state", "", {"requests": 6.0, "tokens": 6.0}, "requests = 6", True),
        run.Figure("64 threads", "requests", {run.OURS: 1.0, "identity (IMDS)": 64.0}, "exactly 1", True),
    ]


def test_the_documented_benchmark_command_changes_no_tracked_file(tmp_path: Path, capsys: Any) -> None:
    """``benchmarks/run.py`` without ``--publish`` writes its results elsewhere; its report
    separates every name from its value and shows no empty unit."""
    run = _benchmarks()
    published = [ROOT / "benchmarks" / "README.md", ROOT / "benchmarks" / "results" / "latest.json"]
    before = [path.read_bytes() for path in published]
    figures = _sample_figures(run)
    assert run.main(["--output", str(tmp_path)], run=lambda quick: figures) == 0
    assert [path.read_bytes() for path in published] == before
    saved = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert [figure["name"] for figure in saved["figures"]] == ["chain", "steady state", "64 threads"]
    out = capsys.readouterr().out
    assert re.search(r"identity \(MSI_ENDPOINT workaround\)\s+4805\b", out), out
    assert "[]" not in out
    assert f"results: {tmp_path / 'latest.json'} (not published: --publish)" in out


def test_publishing_rewrites_the_table_from_the_run(tmp_path: Path) -> None:
    run = _benchmarks()
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{run.RESULTS_START}\nold\n{run.RESULTS_END}\nafter\n", encoding="utf-8")
    measured = {"date": "2026-01-01", "benchmark_code_sha256": "0" * 64, "commit": "1" * 40}
    measured |= {"machine": "m", "python": "p", "libraries": "l", "benchmark_code_modified": False}
    figures = _sample_figures(run)
    run.publish(figures, measured, readme=readme)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("before\n")
    assert text.endswith("\nafter\n")
    assert "old" not in text
    assert run.markdown(figures, measured) in text
    assert "| steady state | requests: 6; tokens: 6 |" in text  # no empty unit, no stray space
    assert "| 64 threads | 1 request |  | 64 requests |" in text


def test_the_guide_names_every_refused_keyword_and_no_other() -> None:
    from legacy_msi_credential._retry import REFUSED_RETRY_KEYWORDS

    guide = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    sentence = guide[guide.index("azure-core's other retry keywords") :].split("rather than silently ignored")[0]
    assert set(re.findall(r"`(\w+)`", sentence)) - {"ValueError"} == set(REFUSED_RETRY_KEYWORDS)


def test_every_planted_bug_still_applies_once_and_the_table_names_it() -> None:
    """``scripts/mutants.py`` plants each bug by replacing one exact text; after code moves, a
    replacement that no longer applies would make its row of docs/reliability.md a claim
    nobody checks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    mutants = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = mutants  # dataclasses look their module up
    try:
        spec.loader.exec_module(mutants)
    finally:
        del sys.modules["mutants"]
    table = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert len(mutants.MUTANTS) >= 29
    for page in (table, (ROOT / "README.md").read_text(encoding="utf-8")):  # the count they state is the count
        assert re.findall(r"mutants\.py` plants (\d+)", page) == [str(len(mutants.MUTANTS))]
    for mutant in mutants.MUTANTS:
        source = (ROOT / mutant.module).read_text(encoding="utf-8")
        assert source.count(mutant.old) == 1, f"{mutant.name}: {mutant.old!r} is not in {mutant.module} exactly once"
        assert f"| {mutant.name} |" in table, f"{mutant.name} is missing from docs/reliability.md"
        assert all((ROOT / test).exists() for test in mutant.tests), mutant.name


def _layers() -> list[str]:
    """The modules docs/architecture.md lists, bottom first, as dotted names under the package."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = page.split("```\n", 2)[1]
    names: list[str] = []
    for line in block.splitlines():
        if not line or line.startswith(" "):
            continue
        head = line.split("  ", 1)[0]
        for item in head.replace(",", " ").split():
            if item == "/":
                continue
            names.append(item.strip("/").replace("/", "."))
    return names


def _internal_imports(path: Path, package: list[str]) -> set[str]:
    """The package's modules ``path`` imports (lazily too), as dotted names under the package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.add(".".join([*base, *node.module.split(".")]))
            else:
                found.update(".".join([*base, alias.name]) for alias in node.names)
    return found


def test_each_module_imports_only_those_the_architecture_page_lists_above_it() -> None:
    layers = _layers()
    assert layers[:3] == ["_constants", "_redact", "_text"]
    assert {"_attempt", "_flight", "_policies", "_redact", "emulator", "bridge", "cli"} <= set(layers)
    position = {name: index for index, name in enumerate(layers)}
    source = ROOT / "legacy_msi_credential"
    whole = {name for name in layers if (source / name).is_dir() and name != "aio"}  # listed as one: emulator/...

    def level_of(name: str) -> int | None:
        return position.get(name, position.get(name.split(".")[0]))

    modules = {}
    for path in source.rglob("*.py"):
        parts = list(path.relative_to(source).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = _internal_imports(path, parts[:-1])
    for name, imported in modules.items():
        level = level_of(name)
        if level is None:
            continue  # the package's entry points (__init__, __main__, aio, pytest_plugin) sit on top
        for target in imported:
            below = level_of(target)
            top = target.split(".")[0]
            if below is None or (top in whole and top == name.split(".")[0]):
                continue  # _version, or the parts of one package listed as a whole
            assert below < level, f"{name} imports {target}, listed at or above it"
    listed_packages = {name.split(".")[0] for name in layers}
    unlisted = [name for name in modules if name.split(".")[0] not in listed_packages and name not in position]
    assert sorted(unlisted) == ["", "__main__", "_version", "pytest_plugin"], unlisted


def test_the_sites_code_blocks_wrap_long_lines() -> None:
    """Furo scrolls a long code line, behind a scroll bar some browsers hide: the site's CSS,
    registered in conf.py, wraps them instead (seen in the built HTML with Chromium)."""
    conf = ast.parse((ROOT / "docs" / "conf.py").read_text(encoding="utf-8"))
    values = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in conf.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        if node.targets[0].id in ("html_static_path", "html_css_files")
    }
    (static,) = values["html_static_path"]
    css = "".join((ROOT / "docs" / static / name).read_text(encoding="utf-8") for name in values["html_css_files"])
    rule = re.search(r"\.highlight pre[^{]*\{([^}]*)\}", css)
    assert rule, "no rule for .highlight pre"
    assert "white-space: pre-wrap" in rule.group(1)


#: Modules the servers never import, directly or through another module: the client's transport layer.
SERVERS_NEVER_IMPORT = ("_guard", "_policies", "_pipeline", "aio")


def test_the_servers_never_stand_on_the_clients_transport_layer() -> None:
    source = ROOT / "legacy_msi_credential"
    graph: dict[str, set[str]] = {}
    for path in source.rglob("*.py"):
        parts = list(path.relative_to(source).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _internal_imports(path, parts[:-1])
    for server in ("_server", "emulator", "bridge"):
        for start in [name for name in graph if name.split(".")[0] == server]:
            seen, todo = set(), [start]
            while todo:
                current = todo.pop()
                for target in graph.get(current, set()) | graph.get(current.rsplit(".", 1)[0], set()):
                    if target not in seen:
                        seen.add(target)
                        todo.append(target)
            reached = sorted(name for name in seen if name.split(".")[0] in SERVERS_NEVER_IMPORT)
            assert not reached, f"{start} reaches {reached}"
    # The server core stands on the standard library and the three modules below it alone.
    core = {target for name, imported in graph.items() if name.startswith("_server") for target in imported}
    assert {name.split(".")[0] for name in core} <= {"_server", "_constants", "_text", "_loopback"}, core
