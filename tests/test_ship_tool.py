"""tools/ship_pretrained.py: an agent ships only beside the world model it learnt in, and
``--agent-only`` replaces the agent while the model and its measured card stay."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "diamond_env" / "pretrained" / "Breakout"
DIGESTS = {"model.safetensors": "ab" * 32, "contexts.safetensors": "cd" * 32}


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "ship_pretrained", ROOT / "tools" / "ship_pretrained.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The tool with the package's pretrained folder moved to a copy of the shipped card."""
    module = load_tool()
    root = tmp_path / "pretrained"
    (root / "Breakout" / "agent").mkdir(parents=True)
    card = json.loads((SHIPPED / "card.json").read_text(encoding="utf-8"))
    card["source_sha256"] = DIGESTS
    (root / "Breakout" / "card.json").write_text(json.dumps(card), encoding="utf-8")
    (root / "Breakout" / "agent" / "agent.json").write_text('{"old": true}', encoding="utf-8")
    monkeypatch.setattr(module, "PRETRAINED_ROOT", root)
    return module


def make_agent(path: Path, digests: dict[str, str]) -> Path:
    path.mkdir()
    meta = {"kind": "sb3", "algo": "ppo", "world_model": "/somewhere/D/TB"}
    (path / "agent.json").write_text(json.dumps(meta), encoding="utf-8")
    (path / "sb3_policy.safetensors").write_bytes(b"weights")
    identity = {"checkpoint": "/somewhere/D/TB", "game": "Breakout", "sha256": digests}
    (path / "world_model_id.json").write_text(json.dumps(identity), encoding="utf-8")
    return path


def write_scores(path: Path) -> Path:
    result = {"mean": 5.0, "std": 2.0, "episodes": 100, "agent": "/somewhere/D/P"}
    path.write_text(json.dumps({"new agent": result}), encoding="utf-8")
    return path


def test_agent_only_replaces_the_agent_and_its_scores(tool: ModuleType, tmp_path: Path) -> None:
    agent = make_agent(tmp_path / "P", DIGESTS)
    scores = write_scores(tmp_path / "scores.json")
    before = json.loads((tool.PRETRAINED_ROOT / "Breakout" / "card.json").read_text())

    argv = ["--agent-only", "--game", "Breakout", "--agent", str(agent), "--scores", str(scores)]
    assert tool.main(argv) == 0

    root = tool.PRETRAINED_ROOT / "Breakout"
    meta = json.loads((root / "agent" / "agent.json").read_text())
    assert meta["world_model"] == "../world_model" and "old" not in meta
    assert (root / "agent" / "sb3_policy.safetensors").read_bytes() == b"weights"
    card = json.loads((root / "card.json").read_text())
    assert card["fidelity"] == before["fidelity"] and card["training"] == before["training"]
    assert card["agent_scores"] == {
        "new agent": {"mean": 5.0, "std": 2.0, "episodes": 100, "agent": "P"}
    }
    assert "| new agent | 100 | 5.00 | 2.00 | 0.20 |" in (root / "MODEL_CARD.md").read_text()


def test_an_agent_of_another_world_model_is_refused_and_nothing_changes(
    tool: ModuleType, tmp_path: Path
) -> None:
    other = dict(DIGESTS, **{"model.safetensors": "ef" * 32})
    agent = make_agent(tmp_path / "P", other)
    scores = write_scores(tmp_path / "scores.json")
    root = tool.PRETRAINED_ROOT / "Breakout"
    card_before = (root / "card.json").read_text()

    argv = ["--agent-only", "--game", "Breakout", "--agent", str(agent), "--scores", str(scores)]
    with pytest.raises(SystemExit, match="not in the world model being shipped"):
        tool.main(argv)
    assert (root / "card.json").read_text() == card_before
    assert json.loads((root / "agent" / "agent.json").read_text()) == {"old": True}

    (agent / "world_model_id.json").unlink()
    with pytest.raises(SystemExit, match="which dream it learnt in is unknown"):
        tool.main(argv)


def test_agent_only_needs_a_card_that_names_its_weights(tool: ModuleType, tmp_path: Path) -> None:
    card_path = tool.PRETRAINED_ROOT / "Breakout" / "card.json"
    card = json.loads(card_path.read_text())
    del card["source_sha256"]
    card_path.write_text(json.dumps(card))
    agent = make_agent(tmp_path / "P", DIGESTS)
    scores = write_scores(tmp_path / "scores.json")
    argv = ["--agent-only", "--game", "Breakout", "--agent", str(agent), "--scores", str(scores)]
    with pytest.raises(SystemExit, match="does not record which weights"):
        tool.main(argv)
    shutil.rmtree(tool.PRETRAINED_ROOT / "Breakout")
    with pytest.raises(SystemExit, match="has no shipped model"):
        tool.main(argv)


def test_agent_only_refuses_a_world_model(tool: ModuleType, tmp_path: Path) -> None:
    argv = ["--agent-only", "--game", "Breakout", "--agent", "P", "--scores", "s.json"]
    with pytest.raises(SystemExit):
        tool.main([*argv, "--world-model", str(tmp_path)])
    with pytest.raises(SystemExit):
        tool.main(["--agent-only", "--game", "Breakout"])
