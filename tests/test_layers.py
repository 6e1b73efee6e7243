"""The package's layers: an import never points up (docs/architecture.md).

Read from the source with ``ast``: every ``import diamond_env.X`` / ``from diamond_env.X import``
in a library module, at module level or inside a function, must name a module of a lower layer
or of its own wing."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "diamond_env"

# Top to bottom. A module may import its own wing and any wing below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("cli", "__main__"),
    ("training",),
    ("evaluation",),
    ("dream",),
    ("world_model",),
    ("models", "data"),
    ("atari", "real_env", "devices"),
    ("config", "frames", "run", "_version"),
]
# The package root registers the envs and serves names lazily; it sits between cli and training.
ROOT_INIT = "__init__"


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_INIT


def _rank(wing: str) -> int:
    if wing == ROOT_INIT:
        return 0  # only the CLI and __main__ may import the root package itself
    for rank, wings in enumerate(LAYERS):
        if wing in wings:
            return rank
    raise AssertionError(f"wing {wing!r} is in no layer: add it to LAYERS")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("diamond_env")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "diamond_env":
                found += [(node.lineno, f"diamond_env.{a.name}") for a in node.names]
            elif node.module.startswith("diamond_env."):
                found.append((node.lineno, node.module))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        out.append((".".join(rel.parts), path))
    return out


def test_every_wing_has_a_layer() -> None:
    for module, _ in _modules():
        _rank(_wing(module))


def test_no_import_points_up() -> None:
    wrong = []
    for module, path in _modules():
        here = _wing(module)
        if here == ROOT_INIT:
            continue  # registration and the lazy public names: checked below
        for line, target in _imports(path):
            there = _wing(target)
            if there == ROOT_INIT and target == "diamond_env":
                wrong.append(f"{module}:{line} imports the package root")
            elif there != here and _rank(there) < _rank(here):
                wrong.append(f"{module}:{line} imports {target} (a layer above)")
    assert not wrong, "\n".join(wrong)


def test_importing_the_package_leaves_the_cli_and_viewers_out() -> None:
    code = (
        "import sys, diamond_env\n"
        "bad = [m for m in sys.modules if m.startswith(('diamond_env.cli', 'matplotlib', "
        "'pygame', 'diamond_env.training', 'stable_baselines3'))]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", ["WorldModel", "DreamEnv", "make_sb3_env", "pretrained"])
def test_lazy_public_names_resolve(name: str) -> None:
    import diamond_env

    assert getattr(diamond_env, name) is not None


def test_a_dream_needs_no_optional_dependency() -> None:
    """``pip install diamond_env`` (no extra) serves gym.make and gym.make_vec: the modules of the
    ``sb3``, ``train`` and ``viewer`` extras are made unimportable and the dream still steps."""
    code = (
        "import sys\n"
        "for m in ['stable_baselines3', 'tensorboard', 'matplotlib', 'pygame', 'PIL', 'pandas',\n"
        "          'minari']:\n"
        "    sys.modules[m] = None\n"
        "import gymnasium as gym, diamond_env\n"
        "env = gym.make('DiamondDream-Breakout-v0')\n"
        "env.reset(seed=0)\n"
        "print(env.step(1)[0].shape)\n"
        "envs = gym.make_vec('DiamondDream-Breakout-v0', num_envs=2)\n"
        "envs.reset(seed=0)\n"
        "print(envs.step(envs.action_space.sample())[0].shape)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["(64, 64, 3)", "(2, 64, 64, 3)"]


def test_cli_names_the_extra_of_a_missing_dependency(tmp_path: Path) -> None:
    """A command whose optional module is missing is refused in one line that names the extra."""
    old = Path(__file__).parent / "data" / "v0.1.0"
    code = (
        "import sys\n"
        "sys.modules['PIL'] = None\n"
        "from diamond_env.cli.main import main\n"
        f"sys.exit(main(['video', '--checkpoint', {str(old / 'world_model')!r}, '--dataset', "
        f"{str(old / 'dataset')!r}, '--out', {str(tmp_path / 'x.gif')!r}, '--horizon', '2', "
        "'--rollouts', '1']))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == (
        "diamond-env video: error: needs PIL, an optional dependency: pip install 'diamond_env[train]'"
    )
