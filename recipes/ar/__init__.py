"""The AR stage's recipes: code shards, the mixed-task batches, the Lightning module and the AR export.

Here the AR model meets the image tokenizer: backbones/ never imports tokenizer/.
"""
