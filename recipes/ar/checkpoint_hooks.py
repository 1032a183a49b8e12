"""The checkpoint hooks every Lightning module that trains an `ARModel` on code shards shares (ARModule, GRPOModule)."""

from __future__ import annotations

from armkit.common.buildable import to_spec
from armkit.recipes.ar.codes import check_fingerprint


class CodesCheckpointHooks:
    """The checkpoint hooks of the modules that train an `ARModel` (`self.model`) on code shards (ARModule,
    GRPOModule). Saving writes checkpoint["armkit"] = {"ar": the model's spec, "codes_tokenizer": the codes'
    tokenizer record, **self.checkpoint_extras()}, so `armkit export --ckpt` and `armkit generate --model CKPT` read
    either module's checkpoints; loading refuses a checkpoint trained on the codes of another tokenizer, naming both.
    Put it before `L.LightningModule` among the bases."""

    codes_tokenizer: dict | None

    def checkpoint_extras(self) -> dict:
        """What the module adds under checkpoint["armkit"] besides the model spec and the codes' tokenizer."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["armkit"] = {"ar": to_spec(self.model), "codes_tokenizer": self.codes_tokenizer,
                                **self.checkpoint_extras()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = (checkpoint.get("armkit") or {}).get("codes_tokenizer") or {}
        if saved and self.codes_tokenizer:
            check_fingerprint(saved["fingerprint"], self.codes_tokenizer["fingerprint"],
                              expected_from="the checkpoint", got_from="data.train (the code shards)")
