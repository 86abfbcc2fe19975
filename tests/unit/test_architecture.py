"""The import rules of the README, checked: no service imports another service, `common/`
imports no service, no import circle, and `python -m services.X` loads only its own package
and `common/`. Read from the source with `ast` (every import statement, also those inside
functions; not those under `if TYPE_CHECKING:`, which never run), plus one real import of each
service's __main__ per service."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py"))


def _modules() -> dict[str, Path]:
    """'services.engine.risk' -> its file, for every module under common/ and services/."""
    out = {}
    for top in ("common", "services"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under `if TYPE_CHECKING:` (annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports anywhere in its file (type-checking imports aside)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:                      # relative: from . import x / from ..a import b
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:      # `import a.b.c` of a name inside a module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


# Offline programs under services/ that compose the services' logic rather than run beside them:
# modelctl's backtest drives the engine's rules with the inference worker's predictions and writes
# the keeper's report; its training builds the inference model. Such a tool may import another
# service's modules (never a __main__), and no service may import a tool.
TOOLS = {"modelctl"}


def _service(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def test_no_service_imports_another_service():
    wrong = [f"{m} imports {t}" for m, ts in GRAPH.items() for t in sorted(ts)
             if _service(m) and _service(t) and _service(t) != _service(m)
             and not (_service(m) in TOOLS and not t.endswith("__main__"))]
    assert not wrong, "services talk over the bus, not by import; move what they share to common/:\n" + \
        "\n".join(wrong)


def test_common_imports_no_service():
    wrong = [f"{m} imports {t}" for m, ts in GRAPH.items() for t in sorted(ts)
             if m.startswith("common") and t.startswith("services")]
    assert not wrong, "common/ is the bottom layer:\n" + "\n".join(wrong)


def test_no_import_circle():
    """Depth-first search; a back edge is a circle, reported as its path."""
    state: dict[str, int] = {}              # 1 on the stack, 2 done
    circles: list[str] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [m, t]) if t in stack else f"{m} -> {t}")
            elif t not in state:
                visit(t, stack + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_rule_checker_sees_a_violation():
    """The checks above would catch a cross-service import (guards the resolver itself)."""
    assert "common.ticks.feed_core" in GRAPH["services.replay.player"]
    assert "services.engine.breakers" in GRAPH["services.engine.engine"]      # from pkg import module
    assert _service("services.feed.core") == "feed" and _service("common.bus") is None


@pytest.mark.parametrize("service", SERVICES)
def test_python_m_service_loads_only_its_own_package_and_common(service):
    """Import services.<service>.__main__ as `python -m` would (without running main) and list
    what got loaded: nothing of another service, nothing of its own package's other programs
    (training, export, conversion tools)."""
    code = (f"import sys, json, services.{service}.__main__\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('common', 'services'))))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert f"services.{service}.__main__" in loaded
    others = [m for m in loaded if _service(m) not in (None, service) and service not in TOOLS]
    assert not others, f"python -m services.{service} loads other services: {others}"
    programs = [m for m in loaded if _service(m) == service and not m.endswith("__main__")
                and 'if __name__ == "__main__"' in MODULES[m].read_text()]
    assert not programs, f"python -m services.{service} loads other programs of its package: {programs}"


def _sources() -> list[Path]:
    return sorted(p for top in ("common", "services", "tests") for p in (ROOT / top).rglob("*.py"))


def test_modules_are_imported_under_their_own_names():
    """`import x as L` makes a reader look up what L is; a one-letter alias is refused."""
    wrong = [f"{p.relative_to(ROOT)}:{node.lineno} imports {a.name} as {a.asname}"
             for p in _sources() for node in ast.walk(ast.parse(p.read_text(), str(p)))
             if isinstance(node, (ast.Import, ast.ImportFrom)) for a in node.names
             if a.asname and len(a.asname) == 1 and (isinstance(node, ast.Import) or
                                                     f"{node.module}.{a.name}" in MODULES)]
    assert not wrong, "\n".join(wrong)


def test_code_names_no_issue_numbers():
    """An issue tracker's number means nothing to a reader of the code: say what and why."""
    import re
    pattern = re.compile(r"\bissues? ?#?\d+", re.I)
    wrong = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources()
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md", "docs/interfaces.md"])
def test_relative_links_in_the_docs_point_at_files_of_the_repository(doc):
    """The docs link into the code; a moved file must take its links along."""
    import re
    page = ROOT / doc
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [link for link in links if "://" not in link]
    missing = [link for link in local if not (page.parent / link).exists()]
    assert not missing, f"{doc}: links to nothing: {missing}"


def test_gateway_names_the_order_gateway_only():
    """One meaning per word: "gateway" is services/orders; the market-data process is "the feed"
    (the broker's own names, such as GatewayQuote, are strings, not our modules or classes)."""
    wrong = [m for m in MODULES if "gateway" in m and _service(m) != "orders"]
    wrong += [f"{m}.{node.name}" for m, path in MODULES.items() if _service(m) != "orders"
              for node in ast.walk(ast.parse(path.read_text(), str(path)))
              if isinstance(node, ast.ClassDef) and "gateway" in node.name.lower()]
    assert not wrong, wrong
