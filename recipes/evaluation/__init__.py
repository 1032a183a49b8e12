"""Evaluation with a pinned protocol (`armkit eval`) and the loss ablation (`armkit ablate`).

    protocol.py        the settings a number depends on, and each metric's definition
    provenance.py      package versions, git commit, sha256 of data files
    load.py            a checkpoint or an export folder -> tokenizer + loss heads (no lightning)
    metrics.py         codebook usage / perplexity, top-k accuracy, retrieval R@1
    zeroshot.py        the text classifier from class names and templates; zero-shot scores; class names
    probe.py           the linear probe on pooled Z: fit on the train split, score on eval (no loss head)
    reconstruction.py  PSNR, SSIM, LPIPS, rFID through torchmetrics (LPIPS / rFID from local weights only)
    ar_probe.py        AR-friendliness: a fixed small AR probe on the codes, held-out NLL bits, judged samples
    evaluate.py        one pass over the shards -> metrics.json
    ablation.py        the ablation config and its runs (train, evaluate, skip finished ones)
    stats.py           mean / sample std, paired differences with 95% t intervals, verdicts
    table.py           the ablation's table.json and table.md (beside the paper's Table 7, with claims and verdicts)
    plot.py            the PNG of the main metrics per variant, with 95% intervals and paired differences
"""
