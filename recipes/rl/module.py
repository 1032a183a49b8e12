"""`GRPOModule`: GRPO on the AR model's visual tokens under Lightning, with pluggable rewards (ARM's RL stage).

Each training step, for the prompts of a batch of code samples (captions for text-to-image, instruction + source
codes for editing; `stage` picks t2i, edit or joint):

    prompts --policy, G samples each (seeded by (seed, step, rank), T 0.7 t2i / 1.0 edit, top-k)--> codes
    codes --frozen tokenizer decoder--> images --reward (+ sources and reference targets for edits)--> r [P*G]
    log-probs of the sampled visual tokens: policy (grad), old (the sampling policy), ref (frozen copy at start)
    --> `objective.grpo_loss` (group advantages, clip 0.2, k3 KL beta 0.01); `updates` optimizer steps per rollout

The reference model is a frozen copy of the starting policy kept in the checkpoint, so a resumed run has the same
reference; rollout seeds depend only on (seed, step, rank), and the shard loader restores the data position, so a
resumed run continues as an uninterrupted one would. Validation: one sample per held-out prompt with a fixed seed
per batch, mean reward per task (the held-out reward; use val shards never trained on).

A reward that fails (the judge after its bounded retries: `JudgeError`) or a non-finite reward, loss or advantage
stops the run with one line (`armkit train` exits 2; `guards.py`): no group is skipped, no optimizer step sees a NaN,
and a checkpoint holding a non-finite parameter is never written.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import Sampling
from armkit.recipes.ar.checkpoint_hooks import CodesCheckpointHooks
from armkit.recipes.ar.codes import FingerprintError, check_fingerprint, tokenizer_fingerprint
from armkit.recipes.ar.export import load_ar
from armkit.recipes.rl.guards import check_finite, check_finite_state
from armkit.recipes.rl.objective import grpo_loss
from armkit.recipes.rl.reward import Reward
from armkit.recipes.rl.rollout import sample_groups, visual_logprobs
from armkit.recipes.training.seeding import step_generator
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.hub import load_checked

STAGE_TASKS = {"t2i": ("t2i",), "edit": ("edit",), "joint": ("t2i", "edit")}  # the tasks each stage trains
STAGES = tuple(STAGE_TASKS)


class GRPOModule(CodesCheckpointHooks, L.LightningModule):
    """model: the policy (an ARModel; with `init_from`, its weights are loaded from an AR export or checkpoint, the
    SFT model). tokenizer: the codes' tokenizer export (decodes rollouts; its fingerprint must match the codes').
    reward / edit_reward: for text-to-image / editing samples. stage: t2i | edit | joint. group_size: G.
    t2i_temperature / edit_temperature / top_k: rollout sampling (ARM: 0.7 / 1.0 / 1000). clip, beta: the
    objective's. updates: optimizer steps per rollout (1: ratio 1, as TRL's default). decode_steps: the tokenizer
    decoder's sampler steps. lr: AdamW, constant; grad_clip: max gradient norm."""

    def __init__(self, *, model: ARModel, tokenizer: str, reward: Reward | None = None,
                 edit_reward: Reward | None = None, init_from: str | None = None, stage: str = "t2i",
                 group_size: int = 16, t2i_temperature: float = 0.7, edit_temperature: float = 1.0,
                 top_k: int = 1000, clip: float = 0.2, beta: float = 0.01, updates: int = 1, decode_steps: int = 10,
                 max_text: int = 64, lr: float = 1e-6, betas: tuple[float, float] = (0.9, 0.95),
                 grad_clip: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if "t2i" in STAGE_TASKS[stage] and reward is None:
            raise ValueError(f"stage {stage!r} needs reward: (a Reward for text-to-image samples)")
        if "edit" in STAGE_TASKS[stage] and edit_reward is None:
            raise ValueError(f"stage {stage!r} needs edit_reward: (a Reward for edits)")
        if group_size < 2 or updates < 1:
            raise ValueError("group_size must be >= 2 and updates >= 1")
        if init_from is not None:
            loaded = load_ar(init_from).model
            load_checked(model, loaded.state_dict(), source=f"init_from {init_from}")
        self.automatic_optimization = False  # `updates` optimizer steps on one rollout
        self.model = model
        self.ref = copy.deepcopy(model).requires_grad_(False).eval()
        self.reward, self.edit_reward = reward, edit_reward
        self.tokenizer_path, self.init_from, self.stage = tokenizer, init_from, stage
        self.group_size, self.top_k, self.clip, self.beta, self.updates = group_size, top_k, clip, beta, updates
        self.temperature = {"t2i": t2i_temperature, "edit": edit_temperature}
        self.decode_steps, self.max_text, self.lr, self.betas = decode_steps, max_text, lr, tuple(betas)
        self.grad_clip, self.seed = grad_clip, seed
        self._tok: list[Any] = []  # the frozen tokenizer, kept out of the state dict and the optimizer
        self.codes_tokenizer: dict[str, Any] | None = None  # the codes' meta.json record, set in setup

    # -- set-up -----------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        meta = getattr(self.trainer.datamodule, "meta", None) if self.trainer is not None else None
        if meta is None:
            raise ValueError("GRPOModule reads prompts from code shards: use "
                             "armkit.recipes.ar.codes.CodeDataModule")
        check_fingerprint(meta["tokenizer"]["fingerprint"], tokenizer_fingerprint(self.tokenizer_path),
                          expected_from="data.train (the code shards)", got_from=f"tokenizer {self.tokenizer_path}")
        tok = Tokenizer.from_pretrained(self.tokenizer_path).requires_grad_(False).eval()
        if tok.codebook_size != self.model.vocab.codebook_size:
            raise FingerprintError(f"model.codebook_size={self.model.vocab.codebook_size} but tokenizer "
                                   f"{self.tokenizer_path} has {tok.codebook_size} codes")
        self._tok = [tok.to(self.device)]
        self.codes_tokenizer = dict(meta["tokenizer"])
        self.ref.eval()

    def train(self, mode: bool = True) -> GRPOModule:
        super().train(mode)
        self.ref.eval()
        return self

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, betas=self.betas, weight_decay=0.0)

    # -- prompts, images, rewards -----------------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this stage trains and scores."""
        return STAGE_TASKS[self.stage]

    def _tasks(self, samples: list[dict]) -> dict[str, list[dict]]:
        out = {}
        if "t2i" in self.tasks:
            out["t2i"] = [s for s in samples if s["caption"]]
        if "edit" in self.tasks:
            out["edit"] = [s for s in samples if s.get("edit")]
        return {k: v for k, v in out.items() if v}

    def _prompt(self, task: str, s: dict) -> tuple[list[int], str]:
        v, codec = self.model.vocab, self.model.codec
        if task == "t2i":
            return S.text_to_image_prompt(v, codec.encode(s["caption"])[: self.max_text], s["grid"]), s["caption"]
        e = s["edit"]
        instruction = codec.encode(e["instruction"])[: self.max_text]
        return S.editing_prompt(v, e["source"].tolist(), e["source_grid"], instruction, s["grid"]), e["instruction"]

    def _decode(self, codes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._tok[0].decode(codes.to(self.device), steps=self.decode_steps, generator=generator).float()

    def _rewards(self, task: str, samples: list[dict], images: torch.Tensor, repeat: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scores of decoded images [len(samples) * repeat, 3, H, W] (each sample's `repeat` images consecutive)."""
        texts = [self._prompt(task, s)[1] for s in samples for _ in range(repeat)]
        if task == "t2i":
            return self.reward(images, texts), self.reward.parts(images, texts)
        sources = self._decode(torch.stack([s["edit"]["source"] for s in samples]), generator)
        targets = self._decode(torch.stack([s["codes"] for s in samples]), generator)
        sources, targets = (x.repeat_interleave(repeat, 0) for x in (sources, targets))
        return (self.edit_reward(images, texts, sources, targets),
                self.edit_reward.parts(images, texts, sources, targets))

    def _generator(self, *key: int) -> torch.Generator:
        return step_generator(self.seed, *key, device=self.device)

    # -- steps ------------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> None:
        gen = self._generator(self.global_step, self.global_rank)
        rows, rewards, logs = [], [], {}
        for task, samples in self._tasks(batch["samples"]).items():
            grid = samples[0]["grid"]
            group = [s for s in samples if s["grid"] == grid]  # one grid per rollout batch
            sampling = Sampling(temperature=self.temperature[task], top_k=self.top_k)
            roll = sample_groups(self.model, [self._prompt(task, s)[0] for s in group], grid,
                                 group_size=self.group_size, sampling=sampling, generator=gen)
            r, parts = self._rewards(task, group, self._decode(roll.codes, gen), self.group_size, gen)
            temp = torch.full((len(roll.prompts),), self.temperature[task])
            rows.append((roll.prompts, roll.codes, temp))
            rewards.append(r)
            per_group = r.view(-1, self.group_size)
            logs[f"reward/{task}"] = r.mean()
            logs[f"reward_std/{task}"] = per_group.std(1).mean()  # spread within a group, averaged over groups
            logs.update({f"reward_part/{task}/{k}": v.mean() for k, v in parts.items()})
        if not rows:
            return None  # a batch with no prompt for this stage (e.g. no edit pair)
        rewards_all = torch.cat(rewards).to(self.device)
        check_finite(f"GRPO step {self.global_step}", {"rewards": rewards_all})  # stop, never train on NaN
        with torch.no_grad():
            old = [visual_logprobs(self.model, p, c, temperature=float(t[0])) for p, c, t in rows]
            ref = [visual_logprobs(self.ref, p, c, temperature=float(t[0])) for p, c, t in rows]
        opt = self.optimizers()
        for _ in range(self.updates):
            logp = torch.cat([visual_logprobs(self.model, p, c, temperature=float(t[0])) for p, c, t in rows])
            old_all, ref_all = torch.cat(old), torch.cat(ref)
            mask = torch.ones_like(logp)  # every scored position is a visual token (prompt and EOI are not scored)
            out = grpo_loss(logp, old_all, ref_all, rewards_all, mask, group_size=self.group_size,
                            clip=self.clip, beta=self.beta)
            check_finite(f"GRPO step {self.global_step}", {"loss": out.loss, **out.logs})
            opt.zero_grad()
            self.manual_backward(out.loss)
            if self.grad_clip:
                self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
        bs = len(rewards_all)
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in out.logs.items()}, batch_size=bs)
        self.log_dict({f"train/{k}": v.float() for k, v in logs.items()}, batch_size=bs)
        self.log("train/reward", rewards_all.mean(), prog_bar=True, batch_size=bs)

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        gen = self._generator(10**9 + batch_idx, self.global_rank)  # the same draws at every validation
        for task, samples in self._tasks(batch["samples"]).items():
            grid = samples[0]["grid"]
            group = [s for s in samples if s["grid"] == grid]
            sampling = Sampling(temperature=self.temperature[task], top_k=self.top_k)
            roll = sample_groups(self.model, [self._prompt(task, s)[0] for s in group], grid, group_size=1,
                                 sampling=sampling, generator=gen)
            r, _ = self._rewards(task, group, self._decode(roll.codes, gen), 1, gen)
            self.log(f"val/reward/{task}", r.mean(), batch_size=len(group), sync_dist=True)

    # -- checkpoints: CodesCheckpointHooks (the AR module's keys, so `armkit export --ckpt` and `armkit generate
    # --model CKPT` read the policy; refused on the codes of another tokenizer) -------------------------------------
    def checkpoint_extras(self) -> dict:
        return {"rl": {"stage": self.stage, "init_from": self.init_from}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_finite_state(f"GRPO checkpoint at step {self.global_step}", checkpoint["state_dict"])  # before writing
        super().on_save_checkpoint(checkpoint)
