"""The Lightning runtime every stage shares (tokenizer, decoder, AR, GRPO).

    fit.py            LightningCLI with armkit's defaults and the config preflight (`armkit train` runs it)
    config_checks.py  value checks and the one-line `config error:` messages
    checkpoint_io.py  atomic checkpoint writes, never-unpickling reads during training
    checkpoint_read.py  `read_checkpoint`: a finished checkpoint, weights only, without Lightning
    checkpoints.py    step-named checkpoints
    resume.py         `--ckpt_path last`: the newest readable checkpoint; the recipe stands over stored hparams
    schedule.py       warm-up and cosine learning-rate factors
    optim.py          parameter groups (weight decay only on matrices)
    seeding.py        the one per-step seeding scheme
    progress.py       the step progress bar (a true total and ETA)
    compile.py        torch.compile on request
    callbacks.py      reconstruction grids and sample audits
    summary.py        a run's loss curves and grid as one picture
"""
