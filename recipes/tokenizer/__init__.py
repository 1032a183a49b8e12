"""The tokenizer stage: its Lightning module, its checkpoint -> export step, the teacher-feature cache, and its
recipes (`tiny.yaml`, `demo.yaml`, `paper.yaml`, `ablation.yaml`).

    module.py         TokenizerModule: encoder -> FSQ -> losses, one optimizer, the schedule
    export.py         a training checkpoint -> a self-contained export folder (no Lightning needed to load it)
    feature_cache.py  the frozen teacher's features, computed once per shard and reused across runs
"""
