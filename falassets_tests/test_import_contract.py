"""The package's import directions (issue 12), checked on the source with ``ast``.

An AST walk rather than import-linter: no new dependency, and it sees every import, the
ones inside functions included (most of ours are there, to keep start-up cheap), plus
``importlib.import_module("falassets....")`` with a literal name.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "falassets"

#: package -> (prefixes it may import from ours, prefixes it must not); "falassets" alone
#: in ``allowed`` would allow everything, so an allow-list is exact.
ALLOWED_ONLY = {
    "sim": ("falassets.sim",),
    "campaigns": (
        "falassets.campaigns",
        "falassets.settings",
        "falassets.atomic_files",
        "falassets.engine.model",
    ),
    # The render store: engine, pipeline, review and cli may import it; it imports settings.
    "storage": ("falassets.storage", "falassets.settings"),
}
FORBIDDEN = {
    "engine": ("falassets.pipeline", "falassets.review", "falassets.cli", "falassets.sim"),
    "lineage": ("falassets.engine", "falassets.pipeline", "falassets.storage"),
    "pipeline": ("falassets.cli", "falassets.review"),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of everything ``path`` imports, at any depth of the file."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from falassets.engine import model` imports falassets.engine.model: count base.x
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _ours(name: str) -> bool:
    return name == "falassets" or name.startswith("falassets.")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every import in ``root`` (a ``falassets`` source folder) that breaks a direction."""
    problems: list[str] = []
    for top in sorted(set(ALLOWED_ONLY) | set(FORBIDDEN)):
        for path in sorted((root / top).rglob("*.py")):
            for line, name in imported_modules(path, root):
                if not _ours(name) or name == "falassets":
                    continue
                allowed = ALLOWED_ONLY.get(top)
                if allowed is not None and not any(_within(name, p) for p in allowed):
                    bad = True
                else:
                    bad = any(_within(name, p) for p in FORBIDDEN.get(top, ()))
                if bad:
                    problems.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
    return problems


def test_the_package_keeps_its_import_directions() -> None:
    assert violations(PACKAGE) == []


def test_the_checker_fails_on_one_forbidden_import(tmp_path: Path) -> None:
    root = tmp_path / "falassets"
    for package in ("engine", "sim", "lineage", "pipeline", "campaigns"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "engine" / "clean.py").write_text("from falassets.engine import retry\n")
    (root / "engine" / "leaky.py").write_text(
        "def later():\n    from falassets.pipeline import launch\n    return launch\n"
    )
    (root / "sim" / "app.py").write_text("from . import rules\nfrom .rules import x\n")
    assert violations(root) == ["falassets/engine/leaky.py:2 imports falassets.pipeline.launch"]
    (root / "sim" / "rules.py").write_text("from ..settings import state_dir\n")
    (root / "campaigns" / "x.py").write_text(
        "import importlib\nimportlib.import_module('falassets.cli')\n"
    )
    assert violations(root)[-1] == "falassets/sim/rules.py:1 imports falassets.settings.state_dir"
    assert "falassets/campaigns/x.py:2 imports falassets.cli" in violations(root)


def test_the_render_store_may_import_settings_only(tmp_path: Path) -> None:
    root = tmp_path / "falassets"
    (root / "storage").mkdir(parents=True)
    (root / "storage" / "renders.py").write_text(
        "from falassets import settings\nfrom falassets.engine import jobs\n"
    )
    (root / "lineage").mkdir()
    (root / "lineage" / "views.py").write_text("from falassets.storage import renders\n")
    assert violations(root) == [
        "falassets/lineage/views.py:1 imports falassets.storage.renders",
        "falassets/storage/renders.py:2 imports falassets.engine.jobs",
    ]


def test_importing_falassets_leaves_the_environment_alone() -> None:
    """Setting up fal's environment is an explicit call of the entry points (issue 12)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FAL_KEY", "FAL_QUEUE_RUN_HOST")}
    env.pop("SSL_CERT_FILE", None)
    code = (
        "import os, falassets, falassets.campaigns, falassets.engine.session, falassets.cli\n"
        "print(os.environ.get('FAL_QUEUE_RUN_HOST'), os.environ.get('SSL_CERT_FILE'))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown == ["None", "None"]
