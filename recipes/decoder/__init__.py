"""The decoder stage: a pixel decoder trained on a frozen tokenizer export (`module.py`) and its recipes."""
