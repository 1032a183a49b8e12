"""`SampleGrid`'s held-out prompts: the same ones before and after RL, for every task of the stage."""

from __future__ import annotations


def test_sample_grid_reads_on_until_every_task_of_the_stage_has_its_prompts():
    """Edit pairs sit after all text-to-image samples in the validation shards: the held-out set must reach them."""
    from types import SimpleNamespace

    from armkit.recipes.rl.callbacks import SampleGrid

    def batch(kind: str, n: int) -> dict:
        return {"samples": [{"caption": "c" if kind == "t2i" else "", "edit": {} if kind == "t2i" else {"x": 1},
                             "grid": (8, 8)} for _ in range(n)]}

    batches = [batch("t2i", 4) for _ in range(20)] + [batch("edit", 4) for _ in range(3)] + [batch("t2i", 4)]
    read = []

    def loader():
        for b in batches:
            read.append(b)
            yield b

    def tasks(samples):
        out = {"t2i": [s for s in samples if s["caption"]], "edit": [s for s in samples if s.get("edit")]}
        return {k: v for k, v in out.items() if v and (stage == "joint" or k == stage)}

    for stage, expect_batches in (("t2i", 2), ("edit", 22), ("joint", 22)):
        read.clear()
        grid = SampleGrid(num_prompts=6)
        trainer = SimpleNamespace(datamodule=SimpleNamespace(val_dataloader=loader))
        from armkit.recipes.rl.module import STAGE_TASKS

        held = grid._held_out(trainer, SimpleNamespace(tasks=STAGE_TASKS[stage], _tasks=tasks))
        assert len(read) == expect_batches, stage
        assert all(len(v) >= 6 for v in tasks(held).values()) and set(tasks(held)) == (
            {"t2i", "edit"} if stage == "joint" else {stage})
